"""The backend's lean HTTP/1.1 client against raw servers on loopback: any byte split,
chunked and length bodies, keep-alive reuse, a server that closed an idle connection,
stalls, deadlines, and a broken response."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from agent.llm._wire import Wire

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


@contextlib.asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/completions"
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


def _chunked(events: list[dict[str, Any] | str]) -> bytes:
    body = b""
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event)
        piece = f"data: {data}\n\n".encode()
        body += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    return body + b"0\r\n\r\n"


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
EVENTS = [{"choices": [{"text": "Caf\u00e9 "}]}, {"choices": [{"text": "\u20ac"}]}, "[DONE]"]


async def _collect(wire: Wire, url: str, deadline_s: float = 10) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + deadline_s
    response = await wire.post(url, b"{}", {}, deadline)
    try:
        return [e if e is None else json.loads(e) async for e in response.events()]
    finally:
        await response.aclose()


@pytest.mark.parametrize("step", [1, 2, 7, 10_000])
async def test_any_split_of_a_chunked_sse_body(step: int) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        data = SSE_HEAD + _chunked(EVENTS)
        for i in range(0, len(data), step):  # head, sizes, UTF-8 characters all cut
            writer.write(data[i : i + step])
            await writer.drain()
        await reader.read()

    async with _server(handler) as url:
        wire = Wire()
        events = await _collect(wire, url)
        await wire.aclose()
    assert events == [EVENTS[0], EVENTS[1], None]


async def test_a_kept_alive_connection_is_reused_and_a_closed_one_replaced() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        for _ in range(2):  # two requests per connection, then the server closes it
            await _read_request(reader)
            writer.write(SSE_HEAD + _chunked(EVENTS))
            await writer.drain()
        writer.close()

    async with _server(handler) as url:
        wire = Wire()
        for _ in range(4):
            assert (await _collect(wire, url))[-1] is None
            await asyncio.sleep(0.05)
        await wire.aclose()
    assert len(connections) == 2, "two requests per connection, the closed one replaced"


async def test_an_error_answer_with_a_length_is_read_whole() -> None:
    body = json.dumps({"error": {"message": "maximum context length is 8"}}).encode()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"retry-after: 3\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        await writer.drain()
        await reader.read()

    async with _server(handler) as url:
        wire = Wire()
        response = await wire.post(url, b"{}", {}, asyncio.get_running_loop().time() + 5)
        assert response.status_code == 400 and response.headers["retry-after"] == "3"
        assert await response.aread() == body
        await response.aclose()
        await wire.aclose()


async def test_a_stall_is_a_read_timeout_and_the_deadline_holds() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(SSE_HEAD + _chunked(EVENTS[:1])[:-5])  # one event, then silence
        await writer.drain()
        await asyncio.sleep(30)

    async with _server(handler) as url:
        wire = Wire(read_timeout=0.3)
        with pytest.raises(httpx.ReadTimeout):
            await _collect(wire, url)
        slow = Wire(read_timeout=30)
        with pytest.raises(TimeoutError):
            await _collect(slow, url, deadline_s=0.5)
        await wire.aclose()
        await slow.aclose()


async def test_a_cut_response_and_a_refused_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(SSE_HEAD + _chunked(EVENTS[:1])[:-5])
        await writer.drain()
        writer.close()  # mid-body

    async with _server(handler) as url:
        wire = Wire()
        with pytest.raises(httpx.ReadError):
            await _collect(wire, url)
        await wire.aclose()
    with pytest.raises(httpx.ConnectError):
        await Wire().post(url, b"{}", {}, asyncio.get_running_loop().time() + 5)


async def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with _server(handler) as url:
        with pytest.raises(httpx.RemoteProtocolError, match=r"not an HTTP/1\.1 response"):
            await Wire().post(url, b"{}", {}, asyncio.get_running_loop().time() + 5)
