"""HTTP plumbing for the vLLM backend: replicas, backoff, server-sent events, error mapping.

Pure helpers with no knowledge of prompts or parsers, so the policies below can be read
(and changed) in one place:

- **Replica choice.** A request with a session id goes to the healthy replica with the
  highest rendezvous (highest-random-weight) score for that id, so a session keeps its
  prefix cache on one server and only the sessions of a failed replica move. Requests
  without a session id rotate round-robin. A replica that refuses connections is marked
  down for a cool-down, then tried again (half-open); a success marks it up at once.
  Trade-off: health is learned from real traffic, not probed, so the first request to hit
  a dead replica pays one refused connection (milliseconds on loopback or a LAN).
- **Backoff.** Full jitter: sleep ``uniform(0, min(cap, base * 2**attempt))``, or the
  server's ``Retry-After`` when it gives one (capped the same way).
- **Errors.** vLLM's error bodies are ``{"error": {"message": ...}}`` (older releases:
  ``{"message": ...}``); a context overflow is a 400 whose message names the limit.

>>> _context_numbers("This model's maximum context length is 8192 tokens. However, "
...                  "you requested 9000 tokens (8000 in the messages, 1000 in the completion).")
(8192, 8000)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

DRAIN_S = 0.05
"""How long to wait for the end of a body after ``[DONE]`` to keep its connection."""

__all__ = [
    "RETRY_STATUSES",
    "Replicas",
    "backoff_s",
    "error_message",
    "is_context_overflow",
    "parse_context_error",
    "payload",
    "sse_events",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses worth retrying: overload and transient server or proxy failures."""

_LIMIT_RES = (
    re.compile(r"maximum context length is (\d+)"),
    re.compile(r"context length (?:of |is )?\(?(\d+)\)?"),
    re.compile(r"max_model_len(?: is|=|:)? ?(\d+)"),
)
_PROMPT_RES = (
    re.compile(r"(\d+) in the messages"),
    re.compile(r"has (\d+) input tokens"),
    re.compile(r"prompt contains at least (\d+)"),
    re.compile(r"total length (\d+)"),
    re.compile(r"prompt \(length (\d+)\)"),
)


@dataclass
class _Replica:
    url: str
    down_until: float = 0.0


class Replicas:
    """The servers one backend talks to, with session affinity and cool-down.

    >>> Replicas(["http://a", "http://b"]).order("session-1")[0] in ("http://a", "http://b")
    True
    """

    def __init__(self, urls: Sequence[str], *, cooldown_s: float = 5.0) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self._replicas = {u: _Replica(u) for u in urls}
        self.cooldown_s = cooldown_s
        self._rr = itertools.count()

    @property
    def urls(self) -> list[str]:
        return list(self._replicas)

    def order(self, session_id: str | None) -> list[str]:
        """Replicas to try, best first: healthy ones (by affinity), then those cooling down."""
        now = time.monotonic()
        reps = list(self._replicas.values())
        if len(reps) == 1:
            return [reps[0].url]
        if session_id is None:
            start = next(self._rr) % len(reps)
            ranked = reps[start:] + reps[:start]
        else:
            ranked = sorted(reps, key=lambda r: _score(session_id, r.url), reverse=True)
        healthy = [r.url for r in ranked if r.down_until <= now]
        cooling = sorted((r for r in ranked if r.down_until > now), key=lambda r: r.down_until)
        return healthy + [r.url for r in cooling]

    def mark_down(self, url: str) -> None:
        """Take ``url`` out of rotation for the cool-down (it is still a last resort)."""
        self._replicas[url].down_until = time.monotonic() + self.cooldown_s

    def mark_up(self, url: str) -> None:
        self._replicas[url].down_until = 0.0

    def is_healthy(self, url: str) -> bool:
        return self._replicas[url].down_until <= time.monotonic()


def _score(key: str, url: str) -> int:
    digest = hashlib.blake2b(f"{key}\x00{url}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def backoff_s(attempt: int, *, base: float, cap: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    >>> 0.0 <= backoff_s(3, base=0.1, cap=0.5) <= 0.5
    True
    """
    if retry_after:
        try:
            return min(cap, max(0.0, float(retry_after)))
        except ValueError:
            pass  # an HTTP date: rare from vLLM; fall back to our own schedule
    return random.uniform(0.0, min(cap, base * (2**attempt)))


def error_message(body: str) -> str:
    """The human message inside a vLLM/OpenAI error body, or the body itself.

    >>> error_message('{"error": {"message": "bad"}}')
    'bad'
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
    return body.strip()


def is_context_overflow(message: str) -> bool:
    """Does a 400 message say the prompt is too long for the model?"""
    low = message.lower()
    return "context length" in low or "max_model_len" in low or "too long" in low


def _context_numbers(message: str) -> tuple[int | None, int | None]:
    limit = next((int(m.group(1)) for r in _LIMIT_RES if (m := r.search(message))), None)
    prompt = next((int(m.group(1)) for r in _PROMPT_RES if (m := r.search(message))), None)
    return limit, prompt


def parse_context_error(message: str) -> tuple[int | None, int | None]:
    """``(max_context, prompt_tokens)`` from a context-overflow message (``None`` if absent).

    >>> parse_context_error("The prompt (total length 9000) is too long to fit into the "
    ...                     "model (context length 8192).")
    (8192, 9000)
    """
    return _context_numbers(message)


def payload(data: bytes, url: str) -> dict[str, Any]:
    """One ``data:`` payload: a JSON object, or an ``{"error": ...}`` raised as such."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        chunk = None
    if type(chunk) is dict and "error" not in chunk:  # the hot path: one check per event
        return chunk
    from agent.errors import BackendHTTPError

    if not isinstance(chunk, dict):
        text = data[:500].decode("utf-8", "replace")
        raise BackendHTTPError(
            f"{url} sent a stream chunk that is not a JSON object: {text[:200]!r}",
            url=url,
            status=200,
            body=text,
        )
    error = chunk["error"]
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    raise BackendHTTPError(
        f"{url} reported an error mid-stream: {message}",
        url=url,
        status=code if isinstance(code, int) else 500,
        body=data[:500].decode("utf-8", "replace"),
    )


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any] | None]:
    """Decoded ``data:`` payloads of a server-sent-event stream; ``None`` for ``[DONE]``.

    Comments, ``event:`` lines and blank keep-alives are skipped. After ``[DONE]`` the
    rest of the body (normally just the chunked terminator) is read for at most
    ``DRAIN_S``, so the connection goes back to the pool; a server slower than that
    costs a new connection next time rather than the caller's time.

    Lines are cut from the raw bytes (httpx's content decoders are skipped when the body
    is not compressed, as vLLM's never is) and each payload is decoded from bytes by
    ``orjson``: httpx's text decoding and line splitter plus ``json.loads`` were the
    largest single cost of the agent loop at 256 concurrent runs (``bench/backend.py``
    measures the difference).
    """
    encoded = response.headers.get("content-encoding", "identity") != "identity"
    chunks = response.aiter_bytes() if encoded else response.aiter_raw()
    pending = b""
    async for chunk in chunks:
        lines = (pending + chunk if pending else chunk).split(b"\n")
        pending = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield None
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout(DRAIN_S):
                        async for _ in chunks:
                            pass
                return
            if data:
                yield payload(data, str(response.request.url))
    # A last line without its newline is an event cut short (SSE dispatches an event at
    # its line's end): dropped, so the stream reads as interrupted rather than malformed.
