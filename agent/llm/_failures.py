"""How the vLLM backend names its failures: mapping HTTP outcomes to ``agent.errors``.

Kept apart from the request loop so the mapping reads as one table. ``Retry`` and
``Unconstrain`` are internal signals between one attempt and the loop that decides what
to do next; every other value here is a public ``agent.errors`` exception.

>>> type(status_error("http://x", 400, '{"error": {"message": "maximum context length is 8"}}'))
<class 'agent.errors.ContextLengthExceeded'>
"""

from __future__ import annotations

import httpx

from agent.errors import (
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    ContextLengthExceeded,
    StreamInterrupted,
)
from agent.llm._http import (
    RETRY_STATUSES,
    error_message,
    is_context_overflow,
    parse_context_error,
)

__all__ = [
    "HOW_TO_START",
    "RESETS",
    "Retry",
    "Unconstrain",
    "interrupted",
    "raise_for",
    "reset",
    "status_error",
    "timeout",
    "unavailable",
]

HOW_TO_START = (
    "start vLLM with `vllm serve NousResearch/Hermes-3-Llama-3.1-8B` "
    "or the simulator with `agent sim`"
)


class Retry(Exception):
    """Internal: this attempt failed in a way another attempt may fix.

    ``failover``: the replica says it is out (503), so prefer another one.
    """

    def __init__(
        self, error: Exception, retry_after: str | None = None, *, failover: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.failover = failover


class Unconstrain(Exception):
    """Internal: the server refused the tool-call constraint."""


def unavailable(urls: list[str], exc: Exception | None) -> BackendUnavailable:
    where = ", ".join(urls)
    why = f" ({exc})" if exc else ""
    return BackendUnavailable(
        f"cannot reach the model server at {where}{why}: {HOW_TO_START}",
        url=urls[0] if urls else None,
    )


def status_error(url: str, status: int, body: str) -> Exception:
    message = error_message(body)
    if status == 400 and is_context_overflow(message):
        limit, prompt = parse_context_error(message)
        return ContextLengthExceeded(
            f"prompt too long for the model at {url}: {message}",
            url=url,
            max_context=limit,
            prompt_tokens=prompt,
        )
    if status == 401:
        message += (
            " (the server was started with --api-key: give the same key in AGENT_VLLM_API_KEY,"
            " or VLLMConfig(api_key=...))"
        )
    return BackendHTTPError(
        f"{url} answered HTTP {status}: {message}", url=url, status=status, body=body
    )


def raise_for(error: Exception, response: httpx.Response) -> None:
    """Raise ``error``, wrapped in ``_Retry`` when its status is worth retrying."""
    status = getattr(error, "status", 0)
    if status in RETRY_STATUSES:
        retry_after = response.headers.get("retry-after")
        raise Retry(error, retry_after, failover=status == 503)
    raise error


RESETS = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
)


def reset(url: str, exc: Exception) -> StreamInterrupted:
    return StreamInterrupted(f"connection to {url} broke or stalled: {exc!r}", url=url)


def timeout(url: str) -> BackendTimeout:
    return BackendTimeout(f"request to {url} passed its total deadline", url=url)


def interrupted(url: str, error: Exception) -> StreamInterrupted:
    if isinstance(error, StreamInterrupted):
        return error
    return StreamInterrupted(
        f"stream from {url} failed after output reached the caller: {error}", url=url
    )
