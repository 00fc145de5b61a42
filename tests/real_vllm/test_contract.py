"""The vLLM backend's contract with a real vLLM 0.32 server, feature by feature.

Each test drives :class:`agent.llm.VLLMBackend` (or, where the backend has no such path,
plain httpx) against the session's real server, and checks the format and validity of what
comes back: events, finish reasons, usage, errors, JSON that fits its schema, calls that fit
their tool. What the tiny model says is never checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import httpx
import jsonschema
import pytest

from agent.chatml import render
from agent.config import Sampling
from agent.errors import ContextLengthExceeded
from agent.hermes import TextDelta, parse
from agent.llm import GenerationDone, GenerationRequest, VLLMBackend
from agent.llm._decode import ChatDecoder, StreamState
from agent.testing import RealVLLM
from agent.types import Message, ToolSpec
from tests.real_vllm.suite import PERSON, TOOL_ASKS, TOOLS
from tools.registry import ToolRegistry

GREEDY = Sampling(temperature=0.0, max_tokens=24)
SYSTEM = ("You are a careful assistant for a travel agency. " * 30).strip()
WEATHER = ToolSpec.from_openai(TOOLS[0])


def _backend(server: RealVLLM, **kw: Any) -> VLLMBackend:
    return VLLMBackend(server.url, timeout_s=240, **kw)


def _req(text: str, **kw: Any) -> GenerationRequest:
    return GenerationRequest([Message("user", text)], sampling=kw.pop("sampling", GREEDY), **kw)


def _metric(server: RealVLLM, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


# -- discovery, streaming, usage -----------------------------------------------------------
async def test_model_is_discovered_from_v1_models(real_vllm: RealVLLM) -> None:
    async with _backend(real_vllm) as backend:
        gen = await backend.generate(_req("Say hi."))
        assert backend.model == real_vllm.model
    assert gen.finish_reason in ("stop", "length") and gen.url == real_vllm.url
    card = httpx.get(real_vllm.url + "/v1/models").json()["data"][0]
    assert (card["id"], card["max_model_len"]) == (real_vllm.model, real_vllm.max_model_len)


async def test_completions_stream_events_then_done_with_usage(
    real_vllm: RealVLLM, measured: dict[str, Any]
) -> None:
    async with _backend(real_vllm) as backend:
        events = [e async for e in backend.stream(_req("Name three colours."))]
    *body, done = events
    assert isinstance(done, GenerationDone)
    gen = done.generation
    assert any(isinstance(e, TextDelta) for e in body)
    assert "".join(e.text for e in body if isinstance(e, TextDelta)) == gen.content
    assert "<|im_end|>" not in gen.text  # the stop string never reaches the caller
    assert gen.finish_reason in ("stop", "length")
    assert gen.usage.prompt_tokens > 0 and 0 < gen.usage.completion_tokens <= 24
    assert gen.usage.cached_tokens is not None  # streamed usage, with prompt details
    assert gen.prompt is not None and gen.prompt.startswith("<|begin_of_text|>")
    assert gen.timings.total_s >= gen.timings.ttft_s > 0
    measured["decode_tokens_per_s"] = round(gen.timings.tokens_per_s, 1)


def test_completions_not_streamed(real_vllm: RealVLLM) -> None:
    body = {
        "model": real_vllm.model,
        "prompt": render([Message("user", "Hi")]),
        "max_tokens": 8,
        "stop": ["<|im_end|>"],
        "skip_special_tokens": False,
        "add_special_tokens": False,
        "temperature": 0,
    }
    data = httpx.post(real_vllm.url + "/v1/completions", json=body, timeout=120).json()
    choice = data["choices"][0]
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    use = data["usage"]
    assert use["total_tokens"] == use["prompt_tokens"] + use["completion_tokens"]


def test_the_im_end_stop_string_cuts_the_text(real_vllm: RealVLLM) -> None:
    # ignore_eos keeps the model going past its end-of-turn token, so only the stop
    # string the backend sends can end the turn at <|im_end|>.
    body = {
        "model": real_vllm.model,
        "prompt": render([Message("user", "Say hi.")]),
        "max_tokens": 200,
        "stop": ["<|im_end|>"],
        "skip_special_tokens": False,
        "add_special_tokens": False,
        "temperature": 0,
        "ignore_eos": True,
    }
    choice = httpx.post(real_vllm.url + "/v1/completions", json=body, timeout=120).json()[
        "choices"
    ][0]
    assert "<|im_end|>" not in choice["text"]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", "<|im_end|>")


async def test_a_shared_prefix_is_reported_as_cached_tokens(
    real_vllm: RealVLLM, measured: dict[str, Any]
) -> None:
    async with _backend(real_vllm) as backend:
        first = await backend.generate(
            GenerationRequest(
                [Message("system", SYSTEM), Message("user", "Where is Oslo?")], sampling=GREEDY
            )
        )
        second = await backend.generate(
            GenerationRequest(
                [Message("system", SYSTEM), Message("user", "Where is Lima?")], sampling=GREEDY
            )
        )
    assert first.usage.cached_tokens is not None and second.usage.cached_tokens is not None
    assert 0 < second.usage.cached_tokens < second.usage.prompt_tokens
    measured["cached_tokens_second_request"] = second.usage.cached_tokens
    measured["prompt_tokens_second_request"] = second.usage.prompt_tokens


# -- tokens ---------------------------------------------------------------------------------
async def test_tokenize_agrees_with_the_servers_prompt_count(real_vllm: RealVLLM) -> None:
    async with _backend(real_vllm) as backend:
        gen = await backend.generate(_req("Count to three."))
        assert gen.prompt is not None
        assert await backend.count_tokens(gen.prompt) == gen.usage.prompt_tokens


async def test_bos_is_plain_text_to_a_tokenizer_without_it(
    real_vllm: RealVLLM, measured: dict[str, Any]
) -> None:
    """Finding: our renderer writes ``<|begin_of_text|>`` (Llama 3's BOS) at the start of
    every Hermes prompt. SmolLM2's tokenizer has no such token, so the server reads it as
    nine ordinary tokens of text; with ``add_special_tokens: false`` it adds no BOS of its
    own (and SmolLM2 defines none to add). Harmless for the tests, but a prompt for a
    non-Llama-3 model should be rendered with ``bos=False``."""
    resp = httpx.post(
        real_vllm.url + "/tokenize",
        json={
            "model": real_vllm.model,
            "prompt": "<|begin_of_text|>",
            "add_special_tokens": False,
            "return_token_strs": True,
        },
        timeout=30,
    ).json()
    assert resp["token_strs"] == ["<", "|", "begin", "_", "of", "_", "text", "|", ">"]
    async with _backend(real_vllm) as backend:
        with_bos = await backend.count_tokens(render([Message("user", "hi")]))
        without = await backend.count_tokens(render([Message("user", "hi")], bos=False))
    assert with_bos - without == 9
    measured["bos_tokens"] = with_bos - without


# -- errors -----------------------------------------------------------------------------------
async def test_context_overflow_is_context_length_exceeded(real_vllm: RealVLLM) -> None:
    async with _backend(real_vllm) as backend:
        with pytest.raises(ContextLengthExceeded) as err:
            await backend.generate(_req("hello " * 9000))
        assert err.value.max_context == real_vllm.max_model_len
        assert err.value.prompt_tokens is not None
        assert err.value.prompt_tokens > real_vllm.max_model_len
        with pytest.raises(ContextLengthExceeded) as err:
            await backend.generate(_req("hi", sampling=Sampling(max_tokens=9000)))
        assert err.value.max_context == real_vllm.max_model_len


# -- cancellation --------------------------------------------------------------------------------
async def test_cancelling_mid_stream_frees_the_request(real_vllm: RealVLLM) -> None:
    finished = _metric(real_vllm, "vllm:request_success_total")
    request = _req(
        "Write a very long story about a dragon who learns to cook.",
        sampling=Sampling(temperature=0.0, max_tokens=2000),
    )
    async with _backend(real_vllm) as backend:
        started = asyncio.Event()

        async def consume() -> None:
            async for event in backend.stream(request):
                if isinstance(event, TextDelta) and event.text.strip():
                    started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 120)
        assert _metric(real_vllm, "vllm:num_requests_running") == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for _ in range(100):
            if _metric(real_vllm, "vllm:num_requests_running") == 0:
                break
            await asyncio.sleep(0.1)
    assert _metric(real_vllm, "vllm:num_requests_running") == 0
    # Freed, not finished: vLLM 0.32 counts no success for it (nor an "abort" one).
    assert _metric(real_vllm, "vllm:request_success_total") == finished


# -- structured outputs ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["completions", "chat"])
async def test_json_mode_output_fits_its_schema(real_vllm: RealVLLM, mode: str) -> None:
    schema = {**PERSON, "title": "Person"}
    async with _backend(real_vllm, mode=mode) as backend:
        gen = await backend.generate(
            _req(
                "Invent a person.",
                json_schema=schema,
                sampling=Sampling(temperature=0.0, max_tokens=60),
            )
        )
    assert gen.finish_reason == "stop"
    jsonschema.validate(json.loads(gen.content), schema)


@pytest.mark.parametrize("choice", ["required", "get_weather"])
@pytest.mark.parametrize("mode", ["completions", "chat"])
async def test_forced_tool_calls_are_valid_calls(
    real_vllm: RealVLLM, mode: str, choice: str
) -> None:
    # Unconstrained, SmolLM2 never writes a Hermes call: every call here is forced (the
    # triggered_tags structural tag in completions mode, the server's tool_choice in chat).
    async with _backend(real_vllm, mode=mode) as backend:
        gen = await backend.generate(
            _req(
                "What is the weather in Paris?",
                tools=[WEATHER],
                tool_choice=choice,
                sampling=Sampling(temperature=0.0, max_tokens=120),
            )
        )
    assert gen.tool_calls and not gen.errors
    for call in gen.tool_calls:
        assert call.name == WEATHER.name
        jsonschema.validate(call.arguments, WEATHER.parameters)


@pytest.mark.parametrize("case", ["completion_triggered_tags", "completion_triggered_tags_stream"])
def test_triggered_tags_shape_forces_valid_calls(
    case: str, real_answers: dict[str, dict[str, Any]]
) -> None:
    """The shape the backend should send (DESIGN.md), sent raw by the request suite: the
    answer holds a call, and every call parses with our parser and fits its tool."""
    answer = real_answers[case]
    if "events" in answer:
        text = "".join(
            e["choices"][0]["text"]
            for e in answer["events"]
            if isinstance(e, dict) and e["choices"]
        )
    else:
        text = answer["json"]["choices"][0]["text"]
    out = parse(text)
    assert out.tool_calls and not out.errors, text
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for call in out.tool_calls:
        jsonschema.validate(call.arguments, schemas[call.name])


# -- chat mode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["tools_required_stream", "tools_named_stream"])
def test_chat_forced_tool_call_decodes_to_a_valid_call(
    case: str, real_answers: dict[str, dict[str, Any]]
) -> None:
    """Server-side Hermes parsing with ``tool_choice`` required / named, streamed: the
    backend's chat decoder assembles vLLM's tool-call deltas into a call that fits the
    (strict) tool's schema."""
    decoder, state = ChatDecoder(), StreamState(0.0)
    for chunk in real_answers[case]["events"]:
        if isinstance(chunk, dict):
            state.take(chunk, decoder)
    decoder.close()
    _text, _content, calls, errors = decoder.result()
    assert not errors and len(calls) >= 1
    assert calls[0].id.startswith("chatcmpl-tool-")
    assert calls[0].name == "get_weather"
    jsonschema.validate(calls[0].arguments, TOOLS[0]["function"]["parameters"])
    assert state.finish in ("tool_calls", "stop") and state.usage is not None


async def test_chat_mode_streams_through_the_backend(real_vllm: RealVLLM) -> None:
    async with _backend(real_vllm, mode="chat") as backend:
        gen = await backend.generate(_req("Say hello.", tools=[WEATHER]))
    assert gen.finish_reason in ("stop", "length", "tool_calls")
    assert gen.usage.prompt_tokens > 0 and gen.usage.cached_tokens is not None
    assert not gen.errors


async def test_a_forced_call_fits_each_builtin_tools_schema(
    real_vllm: RealVLLM, measured: dict[str, Any]
) -> None:
    """Every built-in tool, forced by name through the backend's own structural tag: each
    call that completes parses and its arguments fit that tool's JSON Schema (their values
    are the tiny model's guesses). A call may be cut by ``max_tokens`` while the model
    rambles inside a string: the grammar cannot end a string for it; that is counted, not
    excused silently. The requests run at once: the server batches them."""
    specs = ToolRegistry.default(plugins=False).specs()
    assert {s.name for s in specs} == set(TOOL_ASKS)
    # Greedy, with a presence penalty so the small model's strings end (measured: 10/10
    # calls complete within 200 tokens, where a repetition penalty of 1.3 left 7 of 10
    # rambling inside a string until the limit).
    sampling = Sampling(temperature=0.0, max_tokens=200, presence_penalty=1.5)
    async with _backend(real_vllm) as backend:
        gens = await asyncio.gather(
            *(
                backend.generate(
                    _req(TOOL_ASKS[s.name], tools=[s], tool_choice=s.name, sampling=sampling)
                )
                for s in specs
            )
        )
    cut = [s.name for s, g in zip(specs, gens, strict=True) if g.finish_reason == "length"]
    for spec, gen in zip(specs, gens, strict=True):
        if spec.name in cut:
            assert "<tool_call>" in gen.text, "forced: the call had begun"
            continue
        assert gen.tool_calls and not gen.errors, (spec.name, gen.content, gen.errors)
        for call in gen.tool_calls:
            assert call.name == spec.name
            jsonschema.validate(call.arguments, spec.parameters)
    measured["forced_builtin_calls_valid"] = len(specs) - len(cut)
    measured["forced_builtin_calls_cut_by_max_tokens"] = cut
    assert len(cut) <= 1, cut
