"""Benchmark of the vLLM backend against the simulated server.

    python bench/backend.py [--quick] [--json]

(a) **Client overhead** on the ``instant`` profile (no modeled GPU time): the same
    streamed requests through ``VLLMBackend.generate`` and through a bare httpx loop
    (POST, read SSE lines, ``json.loads`` each, join the text). The difference per request
    (1-token answers) and per streamed token (long answers) is what the backend adds:
    rendering, parsing, events, retry bookkeeping.
(a') **SSE parsing**, client CPU per streamed event: the backend's parser (lines cut from
    raw bytes, payloads decoded from bytes) against httpx's text line iterator plus
    ``json.loads`` (what the backend used before), over the same vLLM-shaped chunks, one
    event per network read as a streaming server sends them.
(a'') **SSE over a socket**: whole streamed responses from a server in a child process on
    loopback, client CPU per event through httpx's line iterator + ``json.loads``, httpx +
    the backend's parser, and the backend's own HTTP client (``agent.llm._wire``, an
    asyncio protocol that cuts ``data:`` payloads as bytes arrive) + ``orjson``. The server
    writes each response as fast as the socket takes it (many events per read).
(b) **Concurrent multi-step sessions** on the ``h200`` profile: N sessions of 10 steps,
    each sending what an agent run sends (the seven built-in tool definitions and a system
    prompt, shared by all sessions, then its own conversation); each step appends the
    model's output (a tool call) and a tool result, so consecutive prompts share a prefix.
    Wall time is compared with the simulator's ideal for the same work (its modeled busy
    GPU time divided by ``speed``), and the prefix-cache hit rate is the one the simulator
    saw. At 1,024 sessions of 10 steps the sessions' contexts outgrow the modeled H200's
    prefix cache (~815k tokens), so LRU eviction lowers the hit rate: that is the GPU's
    limit, modeled, not the client's.

The simulator runs in a child process so client and server do not share a CPU core or
the GIL. Its token counts approximate Llama 3's (see ``agent.sim.tokens``); the workload
shape (tool-result size, output length) sets the achievable hit rate, so both are printed.
``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import chatml
from agent.config import Sampling
from agent.llm import GenerationRequest, VLLMBackend, VLLMConfig
from agent.sim.policy import SimRequest, count_assistant_turns
from agent.types import Message, ToolCall, ToolSpec
from bench._common import SimChild, backend_conversation

STEPS = 10


def _builtin_specs() -> list[ToolSpec]:
    from tools.registry import ToolRegistry

    return ToolRegistry.default(plugins=False).specs()


# The sessions send what an agent run sends: the project's seven built-in tool definitions
# and a system prompt, shared by every session (so the simulator's prefix cache holds that
# prefix once), then a conversation of their own.
TOOLS = _builtin_specs()
SYSTEM = (
    "You are a research assistant for the finance team. Use the tools to find facts in the "
    "workspace files, the DuckDB tables and the approved web sources; never guess numbers. "
    "Quote the figures you rely on, say where each comes from, and keep answers short."
)
LONG = " ".join(["stream"] * 400)
RESULT = "Passage: the quarterly report lists revenue growth in three regions and flat costs."


def _step_output(turn: int) -> str:
    """The scripted model: a short thought and one call per step, then an answer."""
    if turn >= STEPS - 1:
        return "Based on the passages, revenue grew in all three regions."
    call = ToolCall("search_files", {"pattern": f"revenue detail {turn}"}, id="x")
    return f"Looking up part {turn}.\n" + chatml.render_call(call)


def policy(request: SimRequest) -> str:
    """The simulated model (runs in the simulator's child process)."""
    if "[overhead-long]" in request.prompt:
        return LONG
    if "[overhead-short]" in request.prompt:
        return "ok"
    return _step_output(count_assistant_turns(request.prompt))


# -- the simulator in a child process ---------------------------------------------------


# -- (a) client overhead ------------------------------------------------------------------


async def _raw(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> str:
    """The floor: stream one completion and join its text, stopping at ``[DONE]`` as the
    backend does."""
    parts = []
    async with client.stream("POST", url + "/v1/completions", json=body) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            if line[5:].strip() == "[DONE]":
                break
            choices = json.loads(line[5:])["choices"]
            if choices:
                parts.append(choices[0]["text"])
    return "".join(parts)


async def overhead(n: int) -> dict[str, float]:
    child = SimChild("bench.backend:policy", "instant", 1.0)
    try:
        backend = VLLMBackend(child.url, model="NousResearch/Hermes-3-Llama-3.1-8B")
        client = httpx.AsyncClient(timeout=60)
        out: dict[str, float] = {}
        for kind in ("short", "long"):
            request = GenerationRequest(
                [Message("user", f"[overhead-{kind}] go")], sampling=Sampling(max_tokens=1000)
            )
            body = backend._prepare(request).body | {"model": backend.model}
            raw_t, ours_t, tokens = [], [], 0
            for i in range(n + 5):  # interleaved, first 5 are warm-up
                t0 = time.perf_counter()
                await _raw(client, child.url, body)
                t1 = time.perf_counter()
                tokens = (await backend.generate(request)).usage.completion_tokens
                t2 = time.perf_counter()
                if i >= 5:
                    raw_t.append(t1 - t0)
                    ours_t.append(t2 - t1)
            out[f"{kind}_tokens"] = tokens
            out[f"{kind}_raw_ms"] = statistics.median(raw_t) * 1e3
            out[f"{kind}_backend_ms"] = statistics.median(ours_t) * 1e3
        await client.aclose()
        await backend.aclose()
    finally:
        child.close()
    per_req = out["short_backend_ms"] - out["short_raw_ms"]
    extra_tokens = out["long_tokens"] - out["short_tokens"]
    per_tok = (out["long_backend_ms"] - out["long_raw_ms"] - per_req) / max(extra_tokens, 1)
    out["overhead_per_request_ms"] = per_req
    out["overhead_per_token_us"] = per_tok * 1e3
    return out


# -- (a') SSE parsing ------------------------------------------------------------------------


class _Replay(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self):  # type: ignore[override]
        for chunk in self.chunks:
            yield chunk


def _sse_body(n: int) -> list[bytes]:
    event = {
        "id": "cmpl-3f2a9c",
        "object": "text_completion",
        "created": 1796000000,
        "model": "NousResearch/Hermes-3-Llama-3.1-8B",
        "choices": [
            {
                "index": 0,
                "text": " token",
                "logprobs": None,
                "finish_reason": None,
                "stop_reason": None,
            }
        ],
    }
    line = b"data: " + json.dumps(event).encode() + b"\n\n"
    return [line] * n + [b"data: [DONE]\n\n"]


async def _parse_lines(response: httpx.Response) -> int:
    """The previous parser: httpx's text line iterator, then ``json.loads`` per line."""
    n = 0
    async for line in response.aiter_lines():
        if line.startswith("data:") and (data := line[5:].strip()) and data != "[DONE]":
            json.loads(data)
            n += 1
    return n


async def _parse_ours(response: httpx.Response) -> int:
    from agent.llm._http import sse_events

    return sum([1 async for event in sse_events(response) if event is not None])


async def sse_parsing(n_events: int, rounds: int) -> dict[str, float]:
    chunks = _sse_body(n_events)
    request = httpx.Request("POST", "http://sim/v1/completions")
    cpu: dict[str, list[float]] = {"lines": [], "ours": []}
    for _ in range(rounds):  # interleaved, so both see the same machine
        for name, parse in (("lines", _parse_lines), ("ours", _parse_ours)):
            response = httpx.Response(200, stream=_Replay(chunks), request=request)
            t0 = time.process_time()
            assert await parse(response) == n_events
            cpu[name].append(time.process_time() - t0)
    lines, ours = (statistics.median(cpu[k]) / n_events * 1e6 for k in ("lines", "ours"))
    return {
        "events": n_events,
        "lines_us_per_event": lines,
        "ours_us_per_event": ours,
        "cpu_ratio": ours / lines,
    }


# -- (a'') SSE over a socket: the backend's own HTTP client against httpx ---------------------

_SSE_SERVER = r"""
import socket, sys, threading
n = int(sys.argv[1])
event = sys.stdin.buffer.read()
body = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for _ in range(n))
body += b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

def serve(conn):
    data = b""
    with conn:
        while True:  # requests one after another on a kept-alive connection
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return
                data += more
            end = data.index(b"\r\n\r\n") + 4
            length = int(data[:end].lower().split(b"content-length:")[1].split(b"\r")[0])
            while len(data) < end + length:
                data += conn.recv(65536)
            data = data[end + length:]
            conn.sendall(head + body)

srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


async def sse_socket(n_events: int, rounds: int) -> dict[str, float]:
    """Client CPU per event, whole requests over loopback from a server in a child process:
    httpx's line iterator + ``json.loads``, httpx + the backend's byte parser, and the
    backend's own HTTP client (``agent.llm._wire``, what ``VLLMBackend`` uses) + ``orjson``."""
    import subprocess

    import orjson

    from agent.llm._wire import Wire

    event = _sse_body(1)[0]
    child = subprocess.Popen(
        [sys.executable, "-c", _SSE_SERVER, str(n_events)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(event)
    child.stdin.close()
    url = f"http://127.0.0.1:{int(child.stdout.readline())}/v1/completions"
    body = b'{"prompt": "x"}'
    cpu: dict[str, list[float]] = {"lines": [], "httpx": [], "wire": []}
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            wire = Wire()

            async def lines() -> int:
                async with client.stream("POST", url, content=body) as response:
                    return await _parse_lines(response)

            async def ours() -> int:
                async with client.stream("POST", url, content=body) as response:
                    return await _parse_ours(response)

            async def wired() -> int:
                response = await wire.post(url, body, {}, time.monotonic() + 60)
                n = 0
                async for data in response.events():
                    if data is not None:
                        orjson.loads(data)
                        n += 1
                await response.aclose()
                return n

            for _ in range(rounds):  # interleaved, so all see the same machine
                for name, run in (("lines", lines), ("httpx", ours), ("wire", wired)):
                    t0 = time.process_time()
                    assert await run() == n_events
                    cpu[name].append(time.process_time() - t0)
            await wire.aclose()
    finally:
        child.kill()
        child.wait()
    us = {k: statistics.median(v) / n_events * 1e6 for k, v in cpu.items()}
    return {
        "events": n_events,
        "lines_us_per_event": us["lines"],
        "httpx_ours_us_per_event": us["httpx"],
        "wire_us_per_event": us["wire"],
        "wire_cpu_ratio": us["wire"] / us["lines"],
    }


# -- (b) concurrent sessions ----------------------------------------------------------------


async def _session(backend: VLLMBackend, i: int) -> None:
    await backend_conversation(
        backend,
        SYSTEM,
        f"Session {i}: summarise revenue growth from the quarterly report.",
        TOOLS,
        steps=STEPS,
        result=RESULT,
        sampling=Sampling(temperature=0.0, max_tokens=256),
        session_id=str(i),
    )


async def sessions(n: int, speed: float) -> dict[str, float]:
    child = SimChild("bench.backend:policy", "h200", speed)
    try:
        config = VLLMConfig(urls=(child.url,), model="NousResearch/Hermes-3-Llama-3.1-8B")
        async with VLLMBackend(child.url, config=config) as backend:
            await backend.generate(GenerationRequest([Message("user", "warm up")]))
            before = child.stats()
            cpu0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(_session(backend, i) for i in range(n)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = child.stats()
    finally:
        child.close()
    ideal = after["ideal_wall_s"] - before["ideal_wall_s"]
    queries = after["prefix_cache_queries"] - before["prefix_cache_queries"]
    hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
    return {
        "sessions": n,
        "speed": speed,
        "wall_s": wall,
        "ideal_s": ideal,
        "ratio_to_ideal": wall / ideal if ideal else float("nan"),
        "prefix_hit_rate": hits / queries if queries else 0.0,
        "client_cpu_s": cpu,
        "server_cpu_s": after["cpu_s"] - before["cpu_s"],
        "requests": after["requests"] - before["requests"],
        "prompt_tokens": after["prompt_tokens"] - before["prompt_tokens"],
        "generation_tokens": after["generation_tokens"] - before["generation_tokens"],
    }


async def main(quick: bool) -> dict[str, Any]:
    global STEPS
    # --quick keeps 1,024 sessions but shortens them: cost grows with steps squared.
    STEPS = 3 if quick else 10
    result: dict[str, Any] = {"quick": quick, "steps": STEPS}
    result["overhead"] = await overhead(40 if quick else 200)
    result["sse"] = await sse_parsing(20_000, 5 if quick else 15)
    result["sse_cpu_ratio"] = result["sse"]["cpu_ratio"]
    result["sse_socket"] = await sse_socket(20_000, 3 if quick else 9)
    result["sse_wire_cpu_ratio"] = result["sse_socket"]["wire_cpu_ratio"]
    speed = 1.0
    for n in (256, 1024):
        result[f"sessions_{n}"] = await sessions(n, speed)
    result["ratio_to_ideal_256"] = result["sessions_256"]["ratio_to_ideal"]
    result["ratio_to_ideal_1024"] = result["sessions_1024"]["ratio_to_ideal"]
    result["prefix_hit_rate"] = result["sessions_1024"]["prefix_hit_rate"]
    return result


def _print_table(r: dict[str, Any]) -> None:
    o = r["overhead"]
    print("(a) client overhead, instant profile (median of interleaved runs)")
    for kind in ("short", "long"):
        raw, ours = o[kind + "_raw_ms"], o[kind + "_backend_ms"]
        tokens = int(o[kind + "_tokens"])
        print(f"  {kind:5} {tokens:4d} tokens: raw httpx {raw:7.2f} ms   backend {ours:7.2f} ms")
    print(
        f"  overhead: {o['overhead_per_request_ms']:.2f} ms per request, "
        f"{o['overhead_per_token_us']:.1f} us per streamed token"
    )
    s = r["sse"]
    print(
        f"(a') SSE parsing, client CPU per event: httpx lines + json {s['lines_us_per_event']:.2f}"
        f" us, ours {s['ours_us_per_event']:.2f} us (ratio {s['cpu_ratio']:.2f})"
    )
    w = r["sse_socket"]
    print(
        f"(a'') SSE over loopback, client CPU per event: httpx lines + json"
        f" {w['lines_us_per_event']:.2f} us, httpx + ours {w['httpx_ours_us_per_event']:.2f} us,"
        f" the backend's client {w['wire_us_per_event']:.2f} us (ratio {w['wire_cpu_ratio']:.2f})"
    )
    print(f"(b) {STEPS}-step sessions, h200 profile")
    print("  sessions   wall s  ideal s  ratio  prefix-hit  client-cpu s  server-cpu s")
    for n in (256, 1024):
        s = r[f"sessions_{n}"]
        print(
            f"  {n:8d} {s['wall_s']:8.2f} {s['ideal_s']:8.2f} {s['ratio_to_ideal']:6.3f}"
            f" {s['prefix_hit_rate']:11.3f} {s['client_cpu_s']:13.2f} {s['server_cpu_s']:13.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3-step sessions, fewer samples")
    parser.add_argument("--json", action="store_true", help="print a JSON object last")
    args = parser.parse_args()
    res = asyncio.run(main(args.quick))
    _print_table(res)
    if args.json:
        print(json.dumps(res))
