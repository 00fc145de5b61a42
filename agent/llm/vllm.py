"""The vLLM backend over httpx: pooled connections, streaming, retries and replicas.

Two endpoints, one event stream:

- ``mode="completions"`` (default): we render ChatML ourselves (``agent.chatml``), POST it
  raw to ``/v1/completions`` and parse the text with our own streaming parser
  (``agent.hermes``). The prompt already holds ``<|begin_of_text|>``, so the request says
  ``add_special_tokens: false`` (BOS exactly once), ``skip_special_tokens: false`` and
  stops at ``<|im_end|>``.
- ``mode="chat"``: ``/v1/chat/completions`` with OpenAI ``tools``, for a vLLM started with
  ``--tool-call-parser hermes`` or any OpenAI-compatible server.

Failure policy (who sees what):

- Connection refused / DNS failure: the replica is marked down for a cool-down and the
  request moves to the next replica at once; when none is left, ``BackendUnavailable``
  names the URLs and how to start a server. No backoff: a dead server fails fast.
- 429 and 5xx, and connections reset or stalled before the stream finished, are retried
  with full-jitter exponential backoff, at most ``max_retries`` times, on the same replica
  (its prefix cache is there), then raise ``BackendHTTPError`` / ``StreamInterrupted``.
- A stream that stops without a finish reason is retried from scratch **only if no event
  has reached the caller yet**; otherwise ``StreamInterrupted`` is raised. Output is never
  silently truncated, and a caller never sees the same text twice.
- HTTP 400 naming the context length: ``ContextLengthExceeded`` with the limit. Any 400
  while a tool-call constraint was sent: the server cannot do ``structural_tag``; it is
  remembered per server, logged once, and the request is re-sent unconstrained.
- ``timeout_s`` bounds the whole request, retries and backoff included
  (``BackendTimeout``); httpx's own timeouts only bound each connect and each read.
- Cancelling the caller (or closing the stream early) closes the HTTP response, so the
  server sees the disconnect and stops generating.

Connections: ``pool_shards`` independent pools, a session's requests always in the same
one (kept-alive connections; several thousand concurrent streams stay cheap, since
httpcore's cost of placing a request grows with the connections in its pool). One backend
per event loop: the pooled connections belong to the loop that opened them.

>>> VLLMBackend("http://127.0.0.1:8000/v1/").urls
['http://127.0.0.1:8000']
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson

from agent.errors import (
    BackendHTTPError,
    BackendTimeout,
    ConfigError,
)
from agent.llm import _failures as _f
from agent.llm import _http
from agent.llm._admission import Admission, parse_kv_capacity
from agent.llm._decode import (
    ChatDecoder,
    CompletionsDecoder,
    StreamState,
    read_stream,
    structural_tag,
)
from agent.llm._request import build_request
from agent.llm._wire import Wire
from agent.llm.base import Backend, GenerationDone, GenerationRequest

__all__ = ["VLLMBackend", "VLLMConfig", "structural_tag"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VLLMConfig:
    """How the backend talks to its servers. Every field has a working default."""

    urls: tuple[str, ...] = ("http://127.0.0.1:8000",)
    """Server base URLs (a trailing ``/v1`` is accepted); several make replicas."""
    model: str | None = None
    """Served model name; ``None`` asks ``/v1/models`` once and caches the answer."""
    mode: Literal["completions", "chat"] = "completions"
    timeout_s: float = 600.0
    """Total deadline of one request, retries included."""
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    """Longest silence allowed between two chunks (a stalled server)."""
    max_retries: int = 3
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 8.0
    cooldown_s: float = 5.0
    """How long a replica that refused a connection stays out of rotation."""
    max_connections: int = 4096
    pool_shards: int = 16
    """Independent connection pools, a request's chosen by its session. httpcore's pool
    scans every connection to place each request, so one pool of N streaming connections
    costs O(N) per request; shards keep N small (measured: most of the client's CPU at
    256 concurrent sessions went there with one pool)."""
    api_key: str | None = field(default_factory=lambda: os.environ.get("AGENT_VLLM_API_KEY"))
    """Bearer token for a server started with ``--api-key`` (env ``AGENT_VLLM_API_KEY``)."""
    kv_budget: int | Literal["auto"] | None = None
    """KV-aware admission (:mod:`agent.llm._admission`): runs start only while their live
    contexts fit this many tokens per server; ``"auto"``: 90% of each server's KV cache,
    read from its ``/metrics``; ``None``: every run starts at once."""
    reserve_tokens: int = 4096
    """A new run's expected context until some runs have ended (then their median peak)."""

    def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header a server started with ``--api-key`` wants (none
        without a key): sent on every request, whichever client sends it."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass
class _Attempt:
    """Mutable facts about one request, shared across its attempts."""

    request: GenerationRequest
    path: str
    body: dict[str, Any]
    prompt: str | None
    tag: str | None
    deadline: float
    yielded: bool = False
    tried: set[str] = field(default_factory=set)
    refused_by: str | None = None
    """A server that answered 400 to the tool-call constraint, pending the retry's outcome."""


class VLLMBackend(Backend):
    """A :class:`~agent.llm.base.Backend` over vLLM's OpenAI-compatible HTTP API.

    >>> backend = VLLMBackend(["http://gpu-a:8000", "http://gpu-b:8000"], mode="chat")
    """

    def __init__(
        self,
        urls: str | Sequence[str] = "http://127.0.0.1:8000",
        *,
        model: str | None = None,
        mode: Literal["completions", "chat"] | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
        config: VLLMConfig | None = None,
    ) -> None:
        cfg = config or VLLMConfig()
        given = {
            "model": model,
            "mode": mode,
            "timeout_s": timeout_s,
            "max_retries": max_retries,
            "api_key": api_key,
        }
        cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
        url_list = [urls] if isinstance(urls, str) else list(urls)
        if url_list != ["http://127.0.0.1:8000"] or config is None:
            cfg = replace(cfg, urls=tuple(_normalize(u) for u in url_list))
        self.config = cfg
        self._replicas = _http.Replicas(cfg.urls, cooldown_s=cfg.cooldown_s)
        self._client = client  # given by the caller: used for everything, never closed
        self._pools: dict[int, httpx.AsyncClient] = {}
        self._wire: Wire | None = None
        self._tls: ssl.SSLContext | None = None
        self._next_pool = itertools.count()
        self._model = cfg.model
        self._model_lock = asyncio.Lock()
        self._no_tag: set[str] = set()
        self._gate: Admission | None = None
        self._gate_lock = asyncio.Lock()
        self._pins: dict[str, str] = {}  # session -> the replica it was admitted to

    @property
    def urls(self) -> list[str]:
        return self._replicas.urls

    @property
    def model(self) -> str | None:
        """The served model name, once known."""
        return self._model

    def supports_constraint(self, url: str) -> bool:
        """False once ``url`` has refused a ``structural_tag`` tool-call constraint."""
        return url not in self._no_tag

    # -- public API ---------------------------------------------------------------

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Any]:
        """Yield ``agent.hermes`` events as they arrive, then one ``GenerationDone``.

        Close the iterator (``contextlib.aclosing``) if you stop early: that closes the
        HTTP request too.
        """
        att = self._prepare(request)
        retries = 0
        while True:
            url = self._pick(att)
            try:
                async with contextlib.aclosing(self._attempt(url, att)) as events:
                    async for event in events:
                        if isinstance(event, GenerationDone):
                            # Before the last yield: a caller may stop iterating right here.
                            self._replicas.mark_up(url)
                            if self._gate is not None and request.session_id is not None:
                                use = event.generation.usage
                                self._gate.observe(request.session_id, use.total_tokens)
                            if att.refused_by == url:  # the unconstrained retry worked
                                self._refuse_tag(url)
                        att.yielded = True
                        yield event
                return
            except _f.Unconstrain:
                # One retry of this request without the constraint. Only if that works is
                # the server marked as unable to take it: the 400 may have had another cause.
                att.tag, att.refused_by = None, url
            except httpx.ConnectError as exc:  # refused or DNS: the server is not there
                self._replicas.mark_down(url)
                att.tried.add(url)
                log.warning("vLLM replica %s unreachable (%s)", url, exc)
            except _f.Retry as exc:
                if att.yielded:
                    raise _f.interrupted(url, exc.error) from exc.error
                if retries >= self.config.max_retries:
                    raise exc.error from exc
                retries += 1
                if exc.failover and self._untried(att, url):
                    self._replicas.mark_down(url)
                    att.tried.add(url)
                    continue  # another replica is up: no reason to wait
                await self._sleep(att, retries - 1, exc)

    @contextlib.asynccontextmanager
    async def admitted(self, session_id: str) -> AsyncIterator[None]:
        """Hold a run's place (``config.kv_budget``): wait until its context fits a server's
        KV cache, then keep its requests on that server until the block ends."""
        if self.config.kv_budget is None:
            yield
            return
        gate = await self._admission()
        async with gate.admitted(session_id, self._replicas.order(session_id)) as url:
            self._pins[session_id] = url
            try:
                yield
            finally:
                self._pins.pop(session_id, None)

    async def _admission(self) -> Admission:
        async with self._gate_lock:
            if self._gate is None:
                budget = self.config.kv_budget
                budgets = {
                    url: budget if isinstance(budget, int) else await self._kv_budget(url)
                    for url in self._replicas.urls
                }
                self._gate = Admission(budgets, reserve_tokens=self.config.reserve_tokens)
            return self._gate

    async def _kv_budget(self, url: str) -> int:
        """90% of the server's KV cache in tokens, from its ``/metrics``."""
        resp = await self._http().get(f"{url}/metrics", headers=self.config.auth_headers())
        capacity = parse_kv_capacity(resp.text) if resp.status_code == 200 else None
        if capacity is None:
            raise ConfigError(
                f"kv_budget='auto': {url}/metrics does not report vllm:cache_config_info; "
                "give kv_budget as a number of tokens instead"
            )
        return int(capacity * 0.9)

    async def count_tokens(self, text: str) -> int:
        """Exact token count of ``text`` from the server's ``/tokenize`` (no BOS added).

        >>> n = await backend.count_tokens("<|im_start|>user\\nhi<|im_end|>\\n")  # doctest: +SKIP
        """
        url = self._replicas.order(None)[0]
        deadline = asyncio.get_running_loop().time() + self.config.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                model = await self._model_name(url)
                resp = await self._http().post(
                    f"{url}/tokenize",
                    json={"model": model, "prompt": text, "add_special_tokens": False},
                    headers=self.config.auth_headers(),
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _f.unavailable([url], exc) from exc
        except TimeoutError as exc:
            raise BackendTimeout(f"/tokenize at {url} timed out", url=url) from exc
        if resp.status_code != 200:
            raise _f.status_error(url, resp.status_code, resp.text)
        return int(resp.json()["count"])

    async def aclose(self) -> None:
        wire, self._wire = self._wire, None
        if wire is not None:
            await wire.aclose()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()

    async def __aenter__(self) -> VLLMBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one request ------------------------------------------------------------------

    def _prepare(self, request: GenerationRequest) -> _Attempt:
        path, body, prompt, tag = build_request(request, self.config.mode)
        deadline = asyncio.get_running_loop().time() + self.config.timeout_s
        return _Attempt(request, path, body, prompt, tag, deadline)

    def _untried(self, att: _Attempt, url: str) -> bool:
        return any(u != url and u not in att.tried for u in self._replicas.urls)

    def _pick(self, att: _Attempt) -> str:
        pinned = self._pins.get(att.request.session_id or "")
        if pinned is not None and pinned not in att.tried:
            return pinned
        for url in self._replicas.order(att.request.session_id):
            if url not in att.tried:
                return url
        raise _f.unavailable(sorted(att.tried), None)

    async def _attempt(self, url: str, att: _Attempt) -> AsyncIterator[Any]:
        """One HTTP request; raises ``_f.Retry``/``_f.Unconstrain`` for the loop to handle."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(att.deadline):
                body = {**att.body, "model": att.request.model or await self._model_name(url)}
                tagged = att.tag is not None and url not in self._no_tag
                if tagged:
                    body["structured_outputs"] = {"structural_tag": att.tag}
                response = await self._post(url + att.path, body, att)
        except TimeoutError as exc:
            raise _f.timeout(url) from exc
        except _f.RESETS as exc:
            raise _f.Retry(_f.reset(url, exc)) from exc
        except httpx.ConnectTimeout as exc:  # there but swamped: wait, or try another
            error = _f.unavailable([url], exc)
            raise _f.Retry(error, failover=True) from exc
        try:
            if response.status_code != 200:
                await self._raise_status(url, response, att, tagged)
            await _require_event_stream(url, response, att)
            decoder = (
                ChatDecoder()
                if self.config.mode == "chat"
                else CompletionsDecoder(calls=att.request.tool_choice != "none")
            )
            state = StreamState(started)
            async for event in read_stream(url, response, att.deadline, decoder, state):
                yield event
        finally:
            await response.aclose()
        for event in decoder.close():
            yield event
        yield GenerationDone(state.generation(decoder, att.prompt, url))

    async def _post(self, url: str, body: dict[str, Any], att: _Attempt) -> Any:
        """Send the streamed request: our own lean HTTP client, unless the caller gave an
        httpx client (then that, for everything)."""
        if self._client is not None:
            req = self._client.build_request(
                "POST", url, json=body, headers=self.config.auth_headers()
            )
            return await self._client.send(req, stream=True)
        if self._wire is None:
            cfg = self.config
            if self._tls is None and any(u.startswith("https:") for u in self.urls):
                self._tls = ssl.create_default_context()
            self._wire = Wire(
                connect_timeout=cfg.connect_timeout_s,
                read_timeout=cfg.read_timeout_s,
                tls=self._tls,
                max_idle=cfg.max_connections,
            )
        return await self._wire.post(url, _dumps(body), self.config.auth_headers(), att.deadline)

    async def _raise_status(
        self, url: str, response: httpx.Response, att: _Attempt, constrained: bool
    ) -> None:
        try:
            async with asyncio.timeout_at(att.deadline):
                body = (await response.aread()).decode("utf-8", "replace")
        except TimeoutError as exc:
            raise _f.timeout(url) from exc
        error = _f.status_error(url, response.status_code, body)
        if isinstance(error, BackendHTTPError) and error.status == 400 and constrained:
            raise _f.Unconstrain(str(error))
        _f.raise_for(error, response)

    # -- helpers --------------------------------------------------------------------

    def _http(self, session: str | None = None) -> httpx.AsyncClient:
        """The caller's client, else the pool of ``session`` (round-robin without one)."""
        if self._client is not None:
            return self._client
        shards = max(1, self.config.pool_shards)
        key = zlib.crc32(session.encode()) if session else next(self._next_pool)
        index = key % shards
        if index not in self._pools:
            self._pools[index] = self._new_pool(shards)
        return self._pools[index]

    def _new_pool(self, shards: int) -> httpx.AsyncClient:
        cfg = self.config
        per_pool = max(1, cfg.max_connections // shards)
        if self._tls is None:  # loading CA certificates costs ~25 ms: once, for all pools
            self._tls = ssl.create_default_context()
        return httpx.AsyncClient(
            verify=self._tls,
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout_s,
                read=cfg.read_timeout_s,
                write=cfg.read_timeout_s,
                pool=None,
            ),
            limits=httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool),
        )

    async def _model_name(self, url: str) -> str:
        if self._model is not None:
            return self._model
        async with self._model_lock:  # one /v1/models call, however many sessions start
            if self._model is None:
                resp = await self._http().get(
                    f"{url}/v1/models", headers=self.config.auth_headers()
                )
                if resp.status_code != 200:
                    _f.raise_for(_f.status_error(url, resp.status_code, resp.text), resp)
                self._model = str(resp.json()["data"][0]["id"])
        return self._model

    def _refuse_tag(self, url: str) -> None:
        if url not in self._no_tag:
            self._no_tag.add(url)
            log.warning(
                "%s refused the structural_tag tool-call constraint; "
                "sending unconstrained requests to it from now on",
                url,
            )

    async def _sleep(self, att: _Attempt, retries: int, exc: _f.Retry) -> None:
        cfg = self.config
        delay = _http.backoff_s(
            retries, base=cfg.backoff_base_s, cap=cfg.backoff_cap_s, retry_after=exc.retry_after
        )
        remaining = att.deadline - asyncio.get_running_loop().time()
        if delay >= remaining:  # the wait would outlast the deadline: say so now
            raise BackendTimeout(
                f"deadline of {cfg.timeout_s:g} s passed while retrying: {exc.error}",
                url=getattr(exc.error, "url", None),
            ) from exc.error
        await asyncio.sleep(delay)


async def _require_event_stream(url: str, response: httpx.Response, att: _Attempt) -> None:
    """A 200 that is not an event stream (a proxy's login page, a plain JSON body) is an
    error worth reading, not a stream that ends early: raise it with the body's start."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        return
    try:
        async with asyncio.timeout_at(att.deadline):
            body = (await response.aread())[:500].decode("utf-8", "replace")
    except (TimeoutError, httpx.HTTPError):
        body = ""
    raise BackendHTTPError(
        f"{url} answered 200 with {kind or 'no content type'} instead of an event stream: "
        f"{body!r} — is this a vLLM server?",
        url=url,
        status=200,
        body=body,
    )


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # what orjson refuses (an int past 64 bits, say) json still writes
        return json.dumps(body, ensure_ascii=False).encode()


def _normalize(url: str) -> str:
    """``http(s)://host[:port]`` without a trailing ``/`` or ``/v1``; ConfigError otherwise."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"model URL {url!r} is not an http:// or https:// URL with a host "
            "(e.g. http://127.0.0.1:8000)"
        )
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url
