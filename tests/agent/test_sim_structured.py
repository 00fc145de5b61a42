"""The simulator's structured outputs, tool_choice, logprobs, n > 1 and vLLM 0.32 details.

Each behaviour here was first seen on a real vLLM 0.32 (``tests/real_vllm``); these tests
keep the simulator to it without a real server.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from agent.sim import FunctionPolicy, ScriptPolicy, SimServer
from agent.sim.constrain import instance
from agent.sim.tokens import pieces

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 18},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
USER = [{"role": "user", "content": "hi"}]
PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def post(sim: SimServer, path: str, **body: Any) -> httpx.Response:
    return httpx.post(sim.url + path, json={"model": sim.config.model, **body}, timeout=10)


def chat(sim: SimServer, **body: Any) -> dict[str, Any]:
    resp = post(sim, "/v1/chat/completions", messages=USER, **body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def events(resp: httpx.Response) -> list[Any]:
    out = []
    for block in resp.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _args(call: dict[str, Any]) -> dict[str, Any]:
    return json.loads(call["function"]["arguments"])


# -- tool_choice ----------------------------------------------------------------------------
def test_required_tool_choice_always_yields_a_valid_call(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "I will not call anything.")
    choice = chat(sim, tools=[WEATHER, ADD], tool_choice="required")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == ""  # as vLLM 0.32 says beside forced calls
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("chatcmpl-tool-")
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(_args(call), WEATHER["function"]["parameters"])


def test_a_fitting_call_from_the_policy_is_kept(sim: SimServer) -> None:
    text = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    sim.policy = FunctionPolicy(lambda r: text)
    [call] = chat(sim, tools=[WEATHER, ADD], tool_choice="required")["choices"][0]["message"][
        "tool_calls"
    ]
    assert (call["function"]["name"], _args(call)) == ("add", {"a": 2, "b": 3})


def test_named_tool_choice_calls_that_tool_and_finishes_with_stop(sim: SimServer) -> None:
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "x", "unit": "c"}}\n'
    sim.policy = FunctionPolicy(lambda r: text + "</tool_call>")
    named = {"type": "function", "function": {"name": "add"}}
    choice = chat(sim, tools=[WEATHER, ADD], tool_choice=named)["choices"][0]
    assert choice["finish_reason"] == "stop"  # vLLM and OpenAI: a named call "stops"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "add"
    jsonschema.validate(_args(call), ADD["function"]["parameters"])


def test_tool_choice_none_parses_nothing_but_still_shows_the_tools(sim: SimServer) -> None:
    seen: list[str] = []
    text = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    sim.policy = FunctionPolicy(lambda r: seen.append(r.prompt) or text)
    message = chat(sim, tools=[WEATHER], tool_choice="none")["choices"][0]["message"]
    assert message["content"] == text and "tool_calls" not in message
    assert "get_weather" in seen[0]  # vLLM renders the tools even with tool_choice none


def test_auto_without_a_call_has_no_tool_calls_key(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "Sunny.")
    message = chat(sim, tools=[WEATHER])["choices"][0]["message"]
    assert message["content"] == "Sunny." and "tool_calls" not in message
    assert message["reasoning"] is None


def test_required_tool_choice_streams_the_forced_call(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "nothing")
    resp = post(
        sim,
        "/v1/chat/completions",
        messages=USER,
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
    )
    chunks = [e for e in events(resp) if e != "[DONE]"]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    first_call = next(d for d in deltas if d.get("tool_calls"))
    assert first_call["content"] is None
    assert first_call["tool_calls"][0]["function"] == {"name": "get_weather"}
    args = "".join(
        d["tool_calls"][0]["function"].get("arguments", "") for d in deltas if d.get("tool_calls")
    )
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["system_fingerprint"]


# -- JSON and structural tags -------------------------------------------------------------
@pytest.mark.parametrize("field", ["structured_outputs", "response_format"])
def test_json_mode_answers_fit_the_schema(sim: SimServer, field: str) -> None:
    sim.policy = FunctionPolicy(lambda r: "Sure! Here is a person.")
    value = (
        {"json": PERSON}
        if field == "structured_outputs"
        else {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    )
    resp = post(sim, "/v1/completions", prompt=PROMPT, **{field: value})
    jsonschema.validate(json.loads(resp.json()["choices"][0]["text"]), PERSON)


def test_json_object_and_a_fitting_answer_kept(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: '{"name": "Ada", "age": 36}')
    data = chat(
        sim, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    )
    assert json.loads(data["choices"][0]["message"]["content"]) == {"name": "Ada", "age": 36}
    sim.policy = FunctionPolicy(lambda r: "no")
    data = chat(sim, response_format={"type": "json_object"})
    assert isinstance(json.loads(data["choices"][0]["message"]["content"]), dict)


def test_a_script_is_sent_verbatim_even_under_a_constraint(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["not json"])
    resp = post(sim, "/v1/completions", prompt=PROMPT, structured_outputs={"json": PERSON})
    assert resp.json()["choices"][0]["text"] == "not json"


def _tag(at_least_one: bool) -> str:
    schema = {
        "type": "object",
        "properties": {"name": {"const": "add"}, "arguments": ADD["function"]["parameters"]},
        "required": ["name", "arguments"],
    }
    return json.dumps(
        {
            "type": "structural_tag",
            "format": {
                "type": "triggered_tags",
                "triggers": ["<tool_call>"],
                "tags": [
                    {
                        "begin": "<tool_call>\n",
                        "content": {"type": "json_schema", "json_schema": schema},
                        "end": "\n</tool_call>",
                    }
                ],
                "at_least_one": at_least_one,
                "stop_after_first": False,
            },
        }
    )


def test_triggered_tags_force_a_call_before_the_text(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "The answer is 4.")
    resp = post(
        sim, "/v1/completions", prompt=PROMPT, structured_outputs={"structural_tag": _tag(True)}
    )
    text = resp.json()["choices"][0]["text"]
    head, tail = text.split("\n</tool_call>")
    body = json.loads(head.removeprefix("<tool_call>\n"))
    assert body["name"] == "add"
    jsonschema.validate(body["arguments"], ADD["function"]["parameters"])
    assert tail == "\nThe answer is 4."


def test_triggered_tags_fix_a_bad_body_and_leave_text_alone(sim: SimServer) -> None:
    bad = 'Calling.\n<tool_call>\n{"name": "add", "arguments": {"a": "one"}}\n</tool_call>'
    sim.policy = FunctionPolicy(lambda r: bad)
    resp = post(
        sim, "/v1/completions", prompt=PROMPT, structured_outputs={"structural_tag": _tag(False)}
    )
    text = resp.json()["choices"][0]["text"]
    assert text.startswith("Calling.\n<tool_call>\n") and '"one"' not in text
    sim.policy = FunctionPolicy(lambda r: "No call needed.")
    resp = post(
        sim, "/v1/completions", prompt=PROMPT, structured_outputs={"structural_tag": _tag(False)}
    )
    assert resp.json()["choices"][0]["text"] == "No call needed."


def test_structured_outputs_need_exactly_one_kind(sim: SimServer) -> None:
    resp = post(
        sim, "/v1/completions", prompt=PROMPT, structured_outputs={"disable_any_whitespace": True}
    )
    assert resp.status_code == 400 and "none are specified" in resp.json()["error"]["message"]
    resp = post(
        sim, "/v1/completions", prompt=PROMPT, structured_outputs={"json": PERSON, "regex": "a+"}
    )
    assert resp.status_code == 400 and "multiple" in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "schema",
    [
        PERSON,
        {"type": "array", "items": {"type": "number", "exclusiveMinimum": 1}, "minItems": 2},
        {
            "$defs": {"p": {"type": "string", "const": "x"}},
            "type": "object",
            "properties": {"p": {"$ref": "#/$defs/p"}},
            "required": ["p"],
        },
        {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": ["string", "null"]}}, "required": ["b"]},
            ]
        },
    ],
)
def test_instances_fit_their_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(instance(schema), schema)


def test_instances_fit_the_builtin_tools() -> None:
    from tools.registry import ToolRegistry

    for spec in ToolRegistry.default(plugins=False).specs():
        jsonschema.validate(instance(spec.parameters), spec.parameters)


# -- logprobs, n > 1 ----------------------------------------------------------------------
def test_completion_logprobs_shape(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "Hello world")
    choice = post(sim, "/v1/completions", prompt=PROMPT, logprobs=2).json()["choices"][0]
    lp = choice["logprobs"]
    assert lp["tokens"] == pieces("Hello world")
    assert lp["text_offset"][0] == 0 and len(lp["token_logprobs"]) == len(lp["tokens"])
    assert [list(d) for d in lp["top_logprobs"]] == [[t] for t in lp["tokens"]]


def test_chat_logprobs_streamed(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "Hello world")
    resp = post(
        sim, "/v1/chat/completions", messages=USER, logprobs=True, top_logprobs=2, stream=True
    )
    entries = [
        entry
        for e in events(resp)[1:-1]
        if e["choices"][0]["logprobs"]
        for entry in e["choices"][0]["logprobs"]["content"]
    ]
    assert "".join(e["token"] for e in entries) == "Hello world"
    assert all(bytes(e["bytes"]).decode() == e["token"] and e["top_logprobs"] for e in entries)


def test_n_choices_whole_and_streamed(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "Hi there")
    data = post(sim, "/v1/completions", prompt=PROMPT, n=3).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert data["usage"]["completion_tokens"] == 3 * (len(pieces("Hi there")) + 1)
    resp = post(
        sim,
        "/v1/chat/completions",
        messages=USER,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [e for e in events(resp) if e != "[DONE]" and e["choices"]]
    text: dict[int, str] = {0: "", 1: ""}
    for c in chunks:
        text[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("content") or ""
    assert text == {0: "Hi there", 1: "Hi there"}
    finishes = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [0, 1]


def test_request_success_counts_by_finished_reason(sim: SimServer) -> None:
    sim.policy = FunctionPolicy(lambda r: "one two three four")
    post(sim, "/v1/completions", prompt=PROMPT)
    post(sim, "/v1/completions", prompt=PROMPT, max_tokens=2)
    metrics = httpx.get(sim.url + "/metrics").text
    assert "# TYPE vllm:request_success_total counter" in metrics
    for reason, count in (("stop", 1), ("length", 1), ("abort", 0)):
        assert (
            f'vllm:request_success_total{{engine="0",finished_reason="{reason}",'
            f'model_name="{sim.config.model}"}} {float(count)}'
        ) in metrics
