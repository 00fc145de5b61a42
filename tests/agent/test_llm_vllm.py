"""VLLMBackend against the simulated vLLM server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from agent.config import Sampling
from agent.errors import (
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    StreamInterrupted,
)
from agent.hermes import TextDelta, ToolCallMalformed, ToolCallParsed, ToolCallStarted
from agent.llm import GenerationDone, GenerationRequest, VLLMBackend, VLLMConfig
from agent.testing import Faults, FunctionPolicy, ScriptPolicy, SimConfig, SimServer, run_sim
from agent.types import Message, ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
FAST = VLLMConfig(backoff_base_s=0.001, backoff_cap_s=0.01, timeout_s=20.0)


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with run_sim(FunctionPolicy()) as server:
        yield server


def _req(text: str = "weather in Paris?", **kw: object) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], **kw)  # type: ignore[arg-type]


def _backend(url: str | list[str], **kw: object) -> VLLMBackend:
    return VLLMBackend(url, config=FAST, **kw)  # type: ignore[arg-type]


async def _events(backend: VLLMBackend, request: GenerationRequest) -> list[object]:
    return [ev async for ev in backend.stream(request)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- streaming, both modes ---------------------------------------------------------------


async def test_completions_streams_events_and_sends_vllm_fields(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["Let me check. " + CALL])
    backend = _backend(sim.url)
    request = _req(tools=[WEATHER], sampling=Sampling(temperature=0.0, top_k=5, seed=7))
    events = await _events(backend, request)
    await backend.aclose()

    kinds = [type(e) for e in events]
    assert kinds[0] is TextDelta and kinds[-1] is GenerationDone
    assert kinds.index(ToolCallStarted) < kinds.index(ToolCallParsed)
    gen = events[-1].generation
    assert gen.content == "Let me check."
    assert [(c.name, c.arguments) for c in gen.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert gen.tool_calls[0].id == next(e for e in events if isinstance(e, ToolCallParsed)).call.id
    assert gen.finish_reason == "stop" and gen.url == sim.url
    assert gen.usage.prompt_tokens > 0 and gen.usage.completion_tokens > 0
    assert gen.prompt is not None and gen.prompt.count("<|begin_of_text|>") == 1

    body = sim.requests[-1]
    assert body["prompt"] == gen.prompt
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["stop"] == ["<|im_end|>"]
    assert body["skip_special_tokens"] is False and body["add_special_tokens"] is False
    assert (body["temperature"], body["top_k"], body["seed"]) == (0.0, 5, 7)
    assert body["model"] == "NousResearch/Hermes-3-Llama-3.1-8B"  # discovered via /v1/models


async def test_cached_tokens_reported_on_shared_prefix(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["Hello there, a fairly long answer to fill a block or two."])
    long_user = "context " * 200
    async with _backend(sim.url) as backend:
        first = await backend.generate(_req(long_user))
        second = await backend.generate(_req(long_user))
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens is not None and second.usage.cached_tokens > 100


async def test_chat_mode_assembles_tool_calls(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["Checking. " + CALL])
    async with _backend(sim.url, mode="chat") as backend:
        events = await _events(backend, _req(tools=[WEATHER]))
    gen = events[-1].generation
    assert any(isinstance(e, TextDelta) for e in events)
    assert [type(e) for e in events if not isinstance(e, TextDelta)] == [
        ToolCallStarted,
        ToolCallParsed,
        GenerationDone,
    ]
    assert gen.tool_calls[0].arguments == {"city": "Paris"}
    assert gen.finish_reason == "tool_calls"
    body = sim.requests[-1]
    assert body["tools"] == [WEATHER.to_openai()]
    assert body["messages"] == [{"role": "user", "content": "weather in Paris?"}]
    assert "prompt" not in body


async def test_malformed_call_is_reported_with_reason(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(['<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>'])
    async with _backend(sim.url) as backend:
        events = await _events(backend, _req(tools=[WEATHER]))
    bad = [e for e in events if isinstance(e, ToolCallMalformed)]
    assert len(bad) == 1 and "name" in bad[0].reason
    assert events[-1].generation.errors[0].reason == bad[0].reason


# -- errors ------------------------------------------------------------------------------


async def test_unreachable_port_fails_fast_naming_url_and_fix() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    # A long backoff and a short deadline: a retry would surface as BackendTimeout.
    cfg = VLLMConfig(backoff_base_s=30.0, backoff_cap_s=30.0, timeout_s=5.0)
    async with VLLMBackend(url, config=cfg, model="m") as backend:
        with pytest.raises(BackendUnavailable) as err:
            await backend.generate(_req())
    assert url in str(err.value) and err.value.url == url
    assert "vllm serve NousResearch/Hermes-3-Llama-3.1-8B" in str(err.value)
    assert "agent sim" in str(err.value)


async def test_context_overflow_carries_limit() -> None:
    with run_sim(ScriptPolicy(["hi"]), SimConfig(max_model_len=2048)) as sim:
        async with _backend(sim.url) as backend:
            with pytest.raises(ContextLengthExceeded) as err:
                await backend.generate(_req("word " * 5000, sampling=Sampling(max_tokens=16)))
    assert err.value.max_context == 2048
    assert err.value.prompt_tokens is not None and err.value.prompt_tokens > 2048
    assert len(sim.requests) == 1  # not retried


async def test_5xx_is_retried_then_succeeds(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["fine"])
    sim.faults.fail_next = 2
    async with _backend(sim.url) as backend:
        gen = await backend.generate(_req())
    assert gen.content == "fine"
    assert len(sim.requests) == 3


async def test_persistent_5xx_gives_up_after_max_retries(sim: SimServer) -> None:
    sim.faults.error_rate, sim.faults.error_status = 1.0, 502
    async with VLLMBackend(sim.url, config=FAST, max_retries=2) as backend:
        with pytest.raises(BackendHTTPError) as err:
            await backend.generate(_req())
    assert err.value.status == 502 and "simulated fault" in str(err.value)
    assert len(sim.requests) == 3


def _cut_first(sim: SimServer, after: int, text: str) -> FunctionPolicy:
    """A policy whose first answer is cut after ``after`` tokens, later ones whole."""
    calls = []

    def answer(request: object) -> str:
        calls.append(request)
        sim.faults.disconnect_after_tokens = after if len(calls) == 1 else None
        return text

    return FunctionPolicy(answer)


async def test_stream_cut_before_output_is_retried(sim: SimServer) -> None:
    sim.policy = _cut_first(sim, 0, "complete answer")
    async with _backend(sim.url) as backend:
        gen = await backend.generate(_req())
    assert gen.content == "complete answer"
    assert len(sim.requests) == 2


async def test_stream_cut_after_output_raises_interrupted(sim: SimServer) -> None:
    sim.policy = _cut_first(sim, 3, "one two three four five six seven eight nine ten")
    seen: list[object] = []
    async with _backend(sim.url) as backend:
        with pytest.raises(StreamInterrupted) as err:
            async for ev in backend.stream(_req()):
                seen.append(ev)
    assert seen and all(isinstance(e, TextDelta) for e in seen)  # no GenerationDone
    assert err.value.url == sim.url
    assert len(sim.requests) == 1  # never retried once the caller saw output


async def test_deadline_raises_backend_timeout(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["slow"])
    sim.faults.stall_s = 3.0
    async with VLLMBackend(sim.url, config=FAST, timeout_s=0.3) as backend:
        with pytest.raises(BackendTimeout):
            await backend.generate(_req())


async def test_cancelling_the_caller_closes_the_request() -> None:
    config = SimConfig(profile="h200", speed=0.05)  # ~0.1 s per token: a long generation
    with run_sim(ScriptPolicy(["tok " * 400]), config) as sim:
        async with _backend(sim.url) as backend:
            started = asyncio.Event()

            async def consume() -> None:
                async for ev in backend.stream(_req()):
                    if isinstance(ev, TextDelta):
                        started.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(started.wait(), 20)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(200):  # the server drops the sequence at its next step
                if not sim.engine.running and not sim.engine.waiting:
                    break
                await asyncio.sleep(0.02)
            assert not sim.engine.running and not sim.engine.waiting
            assert sim.counters["request_success"] == 0


# -- replicas ------------------------------------------------------------------------------


async def test_sessions_stick_to_one_replica_and_fail_over() -> None:
    with run_sim(ScriptPolicy(["a"])) as one, run_sim(ScriptPolicy(["a"])) as two:
        async with _backend([one.url, two.url]) as backend:
            homes = {}
            for i in range(12):
                urls = {(await backend.generate(_req(session_id=f"s{i}"))).url for _ in range(3)}
                assert len(urls) == 1  # affinity
                homes[f"s{i}"] = urls.pop()
            assert set(homes.values()) == {one.url, two.url}  # sessions spread

            one.close()
            for session in homes:
                assert (await backend.generate(_req(session_id=session))).url == two.url
            assert backend._replicas.order("s0") == [two.url, one.url]  # one cools down


async def test_replica_answering_503_is_avoided() -> None:
    with run_sim(ScriptPolicy(["a"])) as one, run_sim(ScriptPolicy(["a"])) as two:
        one.faults.down = True
        async with _backend([one.url, two.url]) as backend:
            urls = {(await backend.generate(_req(session_id=f"s{i}"))).url for i in range(8)}
        assert urls == {two.url}
        assert len(one.requests) <= 1  # cooled down after its first 503


# -- structured outputs ------------------------------------------------------------------

SCHEMA = {
    "title": "Answer",
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def _no_guided(body: dict[str, object]) -> bool:
    return not any(k.startswith("guided_") for k in body)


async def test_json_mode_completions_and_chat(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(['{"city": "Paris"}'])
    async with _backend(sim.url) as backend:
        gen = await backend.generate(_req(json_schema=SCHEMA))
    body = sim.requests[-1]
    assert body["structured_outputs"] == {"json": SCHEMA}
    assert "<schema>" in body["prompt"] and json.loads(gen.content) == {"city": "Paris"}
    async with _backend(sim.url, mode="chat") as backend:
        await backend.generate(_req(json_schema=SCHEMA))
    body = sim.requests[-1]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": SCHEMA},
    }
    assert all(_no_guided(b) for b in sim.requests)


def _tag(body: dict) -> dict:
    tag = json.loads(body["structured_outputs"]["structural_tag"])
    assert tag["type"] == "structural_tag"
    fmt = tag["format"]
    assert (fmt["type"], fmt["triggers"]) == ("triggered_tags", ["<tool_call>"])
    (one,) = fmt["tags"]
    assert one["begin"] == "<tool_call>\n" and one["end"] == "\n</tool_call>"
    assert one["content"]["type"] == "json_schema"
    return {
        "at_least_one": fmt["at_least_one"],
        "stop_after_first": fmt["stop_after_first"],
        "schema": one["content"]["json_schema"],
    }


async def test_constrained_tool_calls_send_triggered_tags(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL])
    async with _backend(sim.url) as backend:
        await backend.generate(_req(tools=[WEATHER], constrain_tool_calls=True))
    tag = _tag(sim.requests[-1])
    assert tag["at_least_one"] is False, "auto: constrained when opened, never forced"
    assert tag["stop_after_first"] is False, "auto: any number of calls"
    (option,) = tag["schema"]["anyOf"]
    assert list(option["properties"]) == ["name", "arguments"]
    assert option["properties"]["name"] == {"const": "get_weather"}
    assert option["properties"]["arguments"] == WEATHER.parameters
    assert all(_no_guided(b) for b in sim.requests)


async def test_tool_choice_required_and_named_force_a_call(sim: SimServer) -> None:
    other = ToolSpec("get_time", "Time.", {"type": "object", "properties": {}})
    sim.policy = ScriptPolicy([CALL])
    async with _backend(sim.url) as backend:
        await backend.generate(_req(tools=[WEATHER, other], tool_choice="required"))
        forced = _tag(sim.requests[-1])
        await backend.generate(_req(tools=[WEATHER, other], tool_choice="get_weather"))
        named = _tag(sim.requests[-1])
        with pytest.raises(ConfigError, match="tool_choice 'nope' names no tool"):
            await backend.generate(_req(tools=[WEATHER], tool_choice="nope"))
    assert forced["at_least_one"] and len(forced["schema"]["anyOf"]) == 2
    assert forced["stop_after_first"] is False, "required: one call or several"
    assert named["at_least_one"] and named["stop_after_first"], "a named tool: that one call"
    assert [o["properties"]["name"] for o in named["schema"]["anyOf"]] == [{"const": "get_weather"}]
    assert "get_time" in sim.requests[-1]["prompt"], "every tool is still listed"


async def test_tool_choice_none_shows_no_tools_and_reads_no_calls(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL])
    async with _backend(sim.url) as backend:
        gen = await backend.generate(_req(tools=[WEATHER], tool_choice="none"))
    body = sim.requests[-1]
    assert "<tools>" not in body["prompt"] and "structured_outputs" not in body
    assert gen.tool_calls == [] and gen.content == gen.text == CALL


async def test_tool_choice_in_chat_mode_goes_to_the_server(sim: SimServer) -> None:
    async with _backend(sim.url, mode="chat") as backend:
        for choice in ("auto", "required", "get_weather"):
            await backend.generate(_req(tools=[WEATHER], tool_choice=choice))
        await backend.generate(_req(tools=[WEATHER], tool_choice="none"))
    sent = [b.get("tool_choice") for b in sim.requests]
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert sent == ["auto", "required", named, None]
    assert "tools" not in sim.requests[-1]
    assert not any("structured_outputs" in b for b in sim.requests), "the server forces it"


async def test_refused_constraint_falls_back_and_is_remembered() -> None:
    config = SimConfig(refuse_structured=frozenset({"structural_tag"}))
    with run_sim(ScriptPolicy([CALL]), config) as sim:
        async with _backend(sim.url) as backend:
            request = _req(tools=[WEATHER], constrain_tool_calls=True)
            first = await backend.generate(request)
            second = await backend.generate(request)
            assert not backend.supports_constraint(sim.url)
    assert first.tool_calls and second.tool_calls
    has_tag = ["structured_outputs" in b for b in sim.requests]
    assert has_tag == [True, False, False]  # refused once, retried bare, remembered


# -- token counts ----------------------------------------------------------------------------


async def test_count_tokens_uses_tokenize(sim: SimServer) -> None:
    async with _backend(sim.url) as backend:
        short = await backend.count_tokens("hello")
        long = await backend.count_tokens("hello " * 50)
    assert 0 < short < long


def test_faults_object_is_shared() -> None:
    # Guards the fixture assumption the cut-stream tests rely on.
    faults = Faults()
    with run_sim(faults=faults) as sim:
        assert sim.faults is faults


async def test_a_refused_json_schema_is_one_request_and_a_clear_error() -> None:
    config = SimConfig(refuse_structured=frozenset({"json"}))
    with run_sim(ScriptPolicy(["{}"]), config) as sim:
        async with _backend(sim.url) as backend:
            with pytest.raises(BackendHTTPError) as info:
                await backend.generate(_req(json_schema={"type": "object"}))
    assert info.value.status == 400 and len(sim.requests) == 1


async def test_a_400_for_another_reason_keeps_the_constraint() -> None:
    server = _OddServer("application/json", b'{"error": {"message": "bad top_k"}}', status=400)
    try:
        async with _backend(server.url, model="m") as backend:
            with pytest.raises(BackendHTTPError, match="bad top_k"):
                await backend.generate(_req(tools=[WEATHER], constrain_tool_calls=True))
            assert backend.supports_constraint(server.url), "the 400 was not the constraint's"
    finally:
        server.close()
    assert server.tagged == [True, False], "retried once without it, then the error stands"


class _OddServer:
    """A loopback HTTP server answering every POST with one fixed response."""

    def __init__(self, content_type: str, body: bytes, status: int = 200) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits, self.tagged = 0, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.hits += 1
                sent = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                outer.tagged.append("structured_outputs" in sent)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.mark.parametrize(
    ("content_type", "body", "needle"),
    [
        ("text/html", b"<html>Please log in</html>", "instead of an event stream"),
        (
            "text/event-stream",
            b'data: {"error": {"message": "GPU fell over", "code": 400}}\n\n',
            "GPU fell over",
        ),
        ("text/event-stream", b"data: [1, 2]\n\n", "not a JSON object"),
    ],
)
async def test_odd_200_answers_are_clear_errors_not_retries(
    content_type: str, body: bytes, needle: str
) -> None:
    server = _OddServer(content_type, body)
    try:
        async with _backend(server.url, model="m") as backend:
            with pytest.raises(BackendHTTPError, match=needle):
                await backend.generate(_req())
    finally:
        server.close()
    assert server.hits == 1, "not retried: the server's answer is the error"


def test_chat_decoder_waits_for_interleaved_argument_fragments() -> None:
    from agent.llm._decode import ChatDecoder

    def frag(i: int, **fn: str) -> dict[str, object]:
        return {"delta": {"tool_calls": [{"index": i, "function": fn}]}}

    decoder = ChatDecoder()
    events = [
        e
        for chunk in (
            frag(0, name="f"),
            frag(1, name="g"),
            frag(0, arguments='{"x": 1}'),
            frag(1, arguments='{"y": 2}'),
        )
        for e in decoder.feed(chunk)
    ]
    events += decoder.close()
    parsed = [(e.call.name, e.call.arguments) for e in events if isinstance(e, ToolCallParsed)]
    assert parsed == [("f", {"x": 1}), ("g", {"y": 2})]


def test_chat_decoder_reports_fragments_for_a_finished_call() -> None:
    from agent.llm._decode import ChatDecoder

    decoder = ChatDecoder()
    decoder.feed(
        {"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}}
    )
    decoder.feed({"delta": {"tool_calls": [{"index": 1, "function": {"name": "g"}}]}})
    late = decoder.feed({"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "x"}}]}})
    assert [type(e).__name__ for e in late] == ["ToolCallMalformed"]
    assert "after this tool call was complete" in late[0].reason


# -- server-sent events ----------------------------------------------------------------------


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self):  # type: ignore[override]
        for chunk in self.chunks:
            yield chunk


def _sse(body: bytes, cuts: list[int]) -> list[object]:
    from agent.llm._http import sse_events

    points = sorted({0, *cuts, len(body)})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)]
    request = httpx.Request("POST", "http://sim/v1/completions")
    response = httpx.Response(200, stream=_Chunks(chunks), request=request)

    async def collect() -> list[object]:
        return [e async for e in sse_events(response)]

    return asyncio.run(collect())


SSE = (
    b": keep-alive\r\n\r\n"
    b'event: message\ndata: {"choices": [{"text": "Caf\xc3\xa9 "}]}\n\n'
    b'data:{"choices": [{"text": "\xe2\x82\xac"}]}\r\n\r\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("cuts", [[], [1], [25, 26, 60], list(range(1, len(SSE)))])
def test_sse_events_survive_any_chunking(cuts: list[int]) -> None:
    # Chunk boundaries anywhere (inside "data:", inside a UTF-8 character, inside the
    # JSON), CRLF or LF endings, comments and event lines: the same payloads.
    events = _sse(SSE, cuts)
    assert events == [{"choices": [{"text": "Café "}]}, {"choices": [{"text": "€"}]}, None]


def test_sse_a_cut_last_line_is_no_event_and_junk_is_an_error() -> None:
    assert _sse(b'data: {"choices": []}\n\ndata: {"choi', [7]) == [{"choices": []}]
    with pytest.raises(BackendHTTPError, match="not a JSON object"):
        _sse(b"data: not json\n\n", [])


@pytest.mark.parametrize("mode", ["completions", "chat"])
async def test_a_server_with_an_api_key_takes_it_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A vLLM started with ``--api-key`` (the simulator guards ``/v1`` as vLLM does): the
    key comes from ``AGENT_VLLM_API_KEY`` for every backend, so for ``Agent``, task files,
    the web UI, ``agent serve`` and ``agent eval`` alike; without it the 401 says how."""
    monkeypatch.delenv("AGENT_VLLM_API_KEY", raising=False)
    with run_sim(ScriptPolicy(["hello"] * 3), config=SimConfig(api_key="s3cret")) as sim:
        async with VLLMBackend(sim.url, mode=mode) as bare:
            with pytest.raises(BackendHTTPError, match="AGENT_VLLM_API_KEY") as refused:
                await bare.generate(GenerationRequest([Message("user", "hi")]))
        assert refused.value.status == 401
        monkeypatch.setenv("AGENT_VLLM_API_KEY", "s3cret")
        async with VLLMBackend(sim.url, mode=mode) as keyed:
            gen = await keyed.generate(GenerationRequest([Message("user", "hi")]))
        assert gen.text == "hello" and keyed.model == sim.config.model
        # A caller's own httpx client gets the header on every request.
        async with (
            httpx.AsyncClient() as own,
            VLLMBackend(sim.url, mode=mode, client=own) as theirs,
        ):
            gen = await theirs.generate(GenerationRequest([Message("user", "hi")]))
        assert gen.text == "hello"
        assert httpx.get(sim.url + "/health").status_code == 200, "/health stays open"
