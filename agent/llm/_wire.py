"""A lean HTTP/1.1 client for the one request the backend streams: POST JSON, read SSE.

Every token vLLM streams is one server-sent event in one HTTP chunk. Through httpx,
httpcore and h11 — all pure Python, event by event — that cost about 100 µs of client
CPU per token, more than the rest of an agent step together at a few hundred concurrent
runs. This module speaks just enough HTTP/1.1 for that request: a keep-alive connection
pool per server, the request written in one piece, a response head read once, then the
chunked body decoded straight into SSE payloads (``orjson``) by an ``asyncio.Protocol``,
so an event costs a slice, a split and a JSON parse. Everything else the backend sends
(``/v1/models``, ``/tokenize``, ``/metrics``) stays on httpx.

Time limits without a timer per event: one timer per request for its total deadline,
and one stall watchdog that re-arms itself from the time of the last byte; either fails
the response, which the reader sees at its next event. Failures are raised as httpx's
exception types (``ConnectError``, ``ConnectTimeout``, ``ReadError``, ``ReadTimeout``,
``RemoteProtocolError``), the vocabulary `agent.llm._failures` maps.

>>> Wire().idle
{}
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["Response", "Wire"]

_MAX_HEAD = 64 * 1024
_MAX_LINE = 16 * 1024 * 1024
_PAUSE_AT, _RESUME_AT = 4096, 512  # buffered events: stop reading, read again


class _Conn(asyncio.Protocol):
    """One connection; one response at a time (HTTP/1.1 keep-alive, no pipelining)."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._loop = asyncio.get_running_loop()

    # -- one response ---------------------------------------------------------------
    def begin(self, read_timeout: float) -> None:
        self.buf = bytearray()
        self.head: asyncio.Future[tuple[int, dict[str, str]]] = self._loop.create_future()
        self.events: collections.deque[Any] = collections.deque()
        self.body = bytearray()  # non-SSE bodies (errors)
        self.sse = False
        self.chunked = False
        self.remaining = -1  # Content-Length left; -1: until the connection closes
        self.pending = b""  # an SSE line cut by a chunk boundary
        self.done = False
        self.error: BaseException | None = None
        self.keep_alive = True
        self.waiter: asyncio.Future[None] | None = None
        self.read_timeout = read_timeout
        self.last_rx = self._loop.time()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if getattr(self, "head", None) is None:
            return
        if not self.head.done():
            self.head.set_exception(
                httpx.RemoteProtocolError("the server closed the connection before answering")
            )
        elif not self.done:
            if self.remaining == -1 and not self.chunked:
                self.done = True  # a body delimited by the connection's end
            else:
                self._fail(httpx.ReadError(f"the connection broke mid-response ({exc!r})"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._loop.time()
        try:
            if not self.head.done():
                self.buf += data
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > _MAX_HEAD:
                        raise httpx.RemoteProtocolError("response head too large")
                    return
                data = bytes(self.buf[end + 4 :])
                self._head(bytes(self.buf[:end]))
                self.buf = bytearray()
            if data:
                self._body(data)
        except (httpx.HTTPError, ValueError) as exc:
            error = exc if isinstance(exc, httpx.HTTPError) else httpx.RemoteProtocolError(str(exc))
            if not self.head.done():
                self.head.set_exception(error)
            self._fail(error)
            self.transport.close()  # type: ignore[union-attr]
        self._wake()

    def _head(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise httpx.RemoteProtocolError(f"not an HTTP/1.1 response: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if not self.chunked and "content-length" in headers:
            self.remaining = int(headers["content-length"])
        self.keep_alive = "close" not in headers.get("connection", "").lower()
        self.sse = headers.get("content-type", "").startswith("text/event-stream")
        if self.remaining == 0:
            self.done = True
        self.head.set_result((int(parts[1]), headers))

    def _body(self, data: bytes) -> None:
        if not self.chunked:
            if self.remaining >= 0:
                data, self.remaining = data[: self.remaining], self.remaining - len(data)
                self.done = self.remaining <= 0
            self._payload(data)
            return
        self.buf += data
        pos, buf = 0, self.buf
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            if size == 0:  # the last chunk; any trailers end with a blank line
                rest = bytes(buf[eol + 2 :])
                if not (rest.startswith(b"\r\n") or b"\r\n\r\n" in rest):
                    break
                self.done, pos = True, len(buf)
                break
            if len(buf) < eol + 2 + size + 2:
                break
            self._payload(bytes(buf[eol + 2 : eol + 2 + size]))
            pos = eol + 2 + size + 2
        del buf[:pos]

    def _payload(self, data: bytes) -> None:
        if not self.sse:
            self.body += data
            return
        lines = (self.pending + data if self.pending else data).split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > _MAX_LINE:
            raise httpx.RemoteProtocolError("an event line longer than 16 MiB")
        for line in lines:
            if line.startswith(b"data:"):
                value = line[5:].strip()
                if value == b"[DONE]":
                    self.events.append(None)
                elif value:
                    self.events.append(value)
        if len(self.events) > _PAUSE_AT and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    # -- waiting -------------------------------------------------------------------------
    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def expire(self) -> None:
        """The request's total deadline passed."""
        self._fail(TimeoutError())
        self._wake()

    def watch(self) -> asyncio.TimerHandle:
        """Fail the response once no byte has come for ``read_timeout`` (re-arms itself)."""
        idle = self._loop.time() - self.last_rx
        if idle >= self.read_timeout and not self.done:
            self._fail(httpx.ReadTimeout(f"no data for {self.read_timeout:g} s"))
            self._wake()
        self.watchdog = self._loop.call_at(self.last_rx + self.read_timeout, self.watch)
        return self.watchdog


class Response:
    """A streamed response: ``status_code``, ``headers``, then `events` or `aread`."""

    def __init__(
        self,
        wire: Wire,
        conn: _Conn,
        status: int,
        headers: dict[str, str],
        deadline: asyncio.TimerHandle,
    ) -> None:
        self._wire, self._conn = wire, conn
        self.status_code, self.headers = status, headers
        self._deadline = deadline
        conn.watch()

    async def _more(self) -> bool:
        """Wait until the connection has something; False at the end of the body."""
        conn = self._conn
        while not conn.events and not conn.done and conn.error is None:
            conn.waiter = conn._loop.create_future()
            try:
                await conn.waiter
            finally:
                conn.waiter = None
        if conn.error is not None:
            raise conn.error
        return bool(conn.events)

    async def events(self) -> AsyncIterator[bytes | None]:
        """The ``data:`` payloads (bytes; ``None`` for ``[DONE]``) as they arrive."""
        conn = self._conn
        while await self._more():
            yield conn.events.popleft()
            if conn.paused and len(conn.events) < _RESUME_AT:
                conn.paused = False
                conn.transport.resume_reading()  # type: ignore[union-attr]

    async def aread(self) -> bytes:
        """The whole body (error answers)."""
        while not self._conn.done and await self._more():
            pass
        return bytes(self._conn.body)

    async def aclose(self) -> None:
        """Give the connection back for the next request, or close it mid-response."""
        conn = self._conn
        self._deadline.cancel()
        conn.watchdog.cancel()
        self._wire.release(conn, reusable=conn.done and conn.error is None and conn.keep_alive)


class Wire:
    """Pooled keep-alive connections to a few servers (one ``Wire`` per backend)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        tls: ssl.SSLContext | None = None,
        max_idle: int = 4096,
    ) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.tls, self.max_idle = tls, max_idle
        self.idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._count = 0

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], deadline: float
    ) -> Response:
        """POST ``body`` (JSON) to ``url``; the response once its head has arrived."""
        parts = urlsplit(url)
        host, tls = parts.hostname or "", parts.scheme == "https"
        key = (parts.scheme, host, parts.port or (443 if tls else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [
            f"POST {target} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Accept: text/event-stream",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        for attempt in range(2):  # a kept-alive connection the server just closed: once more
            conn = self._take(key) if attempt == 0 else None
            conn = conn or await self._connect(key)
            loop = asyncio.get_running_loop()
            conn.begin(self.read_timeout)
            expire = loop.call_at(deadline, conn.expire)
            conn.transport.write(request)  # type: ignore[union-attr]
            try:
                async with asyncio.timeout_at(deadline):
                    status, hdrs = await conn.head
            except httpx.RemoteProtocolError:
                expire.cancel()
                if conn.reused and attempt == 0:
                    continue
                raise
            except BaseException:
                expire.cancel()
                self.release(conn, reusable=False)
                raise
            return Response(self, conn, status, hdrs, expire)
        raise AssertionError("unreachable")

    def _take(self, key: tuple[str, str, int]) -> _Conn | None:
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            self._count -= 1
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = (self.tls or ssl.create_default_context()) if scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(key),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def release(self, conn: _Conn, *, reusable: bool) -> None:
        if reusable and not conn.closed and self._count < self.max_idle:
            self.idle.setdefault(conn.key, []).append(conn)
            self._count += 1
        elif conn.transport is not None:
            conn.transport.close()

    async def aclose(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()
        self.idle.clear()
        self._count = 0
        await asyncio.sleep(0)
