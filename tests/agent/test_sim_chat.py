"""Chat completions (server-side Hermes rendering and parsing) and the official openai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from agent.sim import FunctionPolicy, ScriptPolicy, SimRequest, SimServer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    "</tool_call>"
)
USER = [{"role": "user", "content": "Weather in Paris?"}]


def chat(sim: SimServer, **body: Any) -> httpx.Response:
    body = {"model": sim.config.model, "messages": USER, **body}
    return httpx.post(f"{sim.url}/v1/chat/completions", json=body, timeout=10)


def sse_events(resp: httpx.Response) -> list[Any]:
    out = []
    for block in resp.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_chat_renders_chatml_with_tools_for_the_policy(sim: SimServer) -> None:
    seen: list[SimRequest] = []
    sim.policy = FunctionPolicy(lambda r: seen.append(r) or "Sunny.")
    data = chat(sim, tools=[WEATHER]).json()
    assert data["choices"][0]["message"]["content"] == "Sunny."
    assert data["choices"][0]["finish_reason"] == "stop"
    prompt = seen[0].prompt
    assert prompt.startswith("<|begin_of_text|><|im_start|>system\n")
    assert "<tools>" in prompt and "get_weather" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert seen[0].endpoint == "/v1/chat/completions" and seen[0].assistant_turns == 0
    assert data["usage"]["prompt_tokens"] > 50


def test_chat_returns_parsed_tool_calls(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL])
    data = chat(sim, tools=[WEATHER]).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_chat_without_tools_returns_raw_text(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL])
    choice = chat(sim).json()["choices"][0]
    assert choice["message"]["content"] == CALL and "tool_calls" not in choice["message"]


def test_chat_second_turn_gets_second_entry(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL, "It is sunny in Paris."])
    first = chat(sim, tools=[WEATHER]).json()["choices"][0]["message"]
    messages = [
        *USER,
        {"role": "assistant", "content": first["content"], "tool_calls": first["tool_calls"]},
        {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "sunny, 21 C"},
    ]
    data = chat(sim, messages=messages, tools=[WEATHER]).json()
    assert data["choices"][0]["message"]["content"] == "It is sunny in Paris."
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] > 0  # shared prefix


def test_chat_bad_messages_are_a_400(sim: SimServer) -> None:
    resp = chat(sim, messages=[{"content": "no role"}])
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"


def test_chat_stream_sends_content_then_tool_call_deltas(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL])
    events = sse_events(
        chat(sim, tools=[WEATHER], stream=True, stream_options={"include_usage": True})
    )
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    chunks = [e["choices"][0] for e in events[:-2]]
    assert chunks[0]["delta"]["role"] == "assistant"
    content = "".join(c["delta"].get("content") or "" for c in chunks)
    assert content.strip() == "Let me check." and "<tool_c" not in content
    calls = [c["delta"]["tool_calls"][0] for c in chunks if c["delta"].get("tool_calls")]
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["id"].startswith("chatcmpl-tool-")  # vLLM's id shape
    arguments = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert chunks[-1]["finish_reason"] == "tool_calls"


# -- the official openai SDK as a client --------------------------------------------------------
@pytest.fixture
def client(sim: SimServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="none", max_retries=0)


def test_openai_sdk_completions(sim: SimServer, client: openai.OpenAI) -> None:
    sim.policy = ScriptPolicy(["Bonjour!"])
    prompt = "<|begin_of_text|><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    out = client.completions.create(
        model=sim.config.model,
        prompt=prompt,
        max_tokens=50,
        stop=["<|im_end|>"],
        extra_body={"add_special_tokens": False},
    )
    assert out.choices[0].text == "Bonjour!" and out.choices[0].finish_reason == "stop"
    assert out.usage is not None and out.usage.completion_tokens > 0
    assert sim.requests[-1]["add_special_tokens"] is False


def test_openai_sdk_chat_with_tools(sim: SimServer, client: openai.OpenAI) -> None:
    sim.policy = ScriptPolicy([CALL])
    out = client.chat.completions.create(model=sim.config.model, messages=USER, tools=[WEATHER])  # type: ignore[list-item]
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_openai_sdk_streaming(sim: SimServer, client: openai.OpenAI) -> None:
    sim.policy = ScriptPolicy([CALL])
    stream = client.chat.completions.create(
        model=sim.config.model,
        messages=USER,
        tools=[WEATHER],
        stream=True,  # type: ignore[list-item]
        stream_options={"include_usage": True},
    )
    names, args, usage, finish = [], "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                args += (tc.function.arguments or "") if tc.function else ""
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls" and usage is not None and usage.prompt_tokens > 0


def test_openai_sdk_sees_context_error(client: openai.OpenAI, sim: SimServer) -> None:
    with pytest.raises(openai.BadRequestError, match="max_model_len=131072"):
        client.completions.create(model=sim.config.model, prompt="x", max_tokens=200_000)
