"""One request suite for both servers, and the *shape* of each answer.

Every endpoint and request kind the project sends to vLLM, plus the error cases it must
recognise, as plain data (:data:`CASES`). :func:`run_case` sends a case over real HTTP and
:func:`shape` reduces the answer to what a client may rely on: status, content type, keys
and value types, enum-like values (``object``, ``finish_reason``, ``stop_reason``, ``role``,
``type``, error ``code``), id prefixes, server-sent-event framing, and Prometheus metric
names with their types. Text, numbers and token counts are never compared: the simulator's
policy decides content, and its tokenizer is an approximation.

>>> shape({"id": "chatcmpl-tool-1f2e", "n": 3, "finish_reason": "stop"})
{'finish_reason': 'stop', 'id': 'chatcmpl-tool-*', 'n': 'int'}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["CASES", "TOOLS", "Case", "run_case", "shape"]

_KEEP_VALUE = {"object", "finish_reason", "role", "type", "code"}
_ID_KEYS = {"id"}
_ID_RE = re.compile(r"^((?:[a-z]+-)+)[0-9a-zA-Z]+$")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "string",
                    "description": "City name, e.g. Paris.",
                    "maxLength": 20,
                },
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]

TOOL_ASKS = {
    "http_request": "Fetch https://api.example.com/items?id=3 for me.",
    "sql_query": "How many rows are in the table orders?",
    "sql_tables": "Which tables are in the database?",
    "list_files": "List the files in the data folder.",
    "read_file": "Show me notes/todo.md.",
    "write_file": "Save the text 'hello' to out/hello.txt.",
    "search_files": "Find TODO comments in the workspace.",
}
"""A request for each built-in tool, to which a call of that tool is the answer."""

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}

_CALL_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": t["function"]["parameters"],
            },
            "required": ["name", "arguments"],
        }
        for t in TOOLS
    ]
}
TRIGGERED_TAGS = {
    "type": "structural_tag",
    "format": {
        "type": "triggered_tags",
        "triggers": ["<tool_call>"],
        "tags": [
            {
                "begin": "<tool_call>\n",
                "content": {"type": "json_schema", "json_schema": _CALL_SCHEMA},
                "end": "\n</tool_call>",
            }
        ],
        "at_least_one": True,
        "stop_after_first": True,
    },
}
"""xgrammar's shape that forces a call (here: exactly one, so the answer ends with it)."""
LEGACY_TAG = {
    "type": "structural_tag",
    "structures": [{"begin": "<tool_call>\n", "schema": _CALL_SCHEMA, "end": "\n</tool_call>"}],
    "triggers": ["<tool_call>"],
}

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nSay hello in five words.<|im_end|>\n<|im_start|>assistant\n"
)
TOOL_PROMPT = (
    "<|im_start|>system\nYou are a function calling AI model. You may call one or more "
    "functions. Here are the available tools: <tools> "
    + " ".join(json.dumps(t) for t in TOOLS)
    + " </tools> For each function call return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags.<|im_end|>\n"
    "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
)
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in five words."},
]
TOOL_MESSAGES = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
RAW = {"stop": ["<|im_end|>"], "skip_special_tokens": False, "add_special_tokens": False}


@dataclass(frozen=True)
class Case:
    """One request: ``body`` is JSON (``raw`` sends bytes as they are)."""

    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    model: bool = True
    """Put the served model's name into ``body["model"]``."""


def _c(name: str, **body: Any) -> Case:
    return Case(
        name,
        "POST",
        "/v1/completions",
        {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, **RAW, **body},
    )


def _chat(name: str, **body: Any) -> Case:
    return Case(
        name,
        "POST",
        "/v1/chat/completions",
        {"messages": MESSAGES, "max_tokens": 6, "temperature": 0, **body},
    )


def _tools(name: str, **body: Any) -> Case:
    return Case(
        name,
        "POST",
        "/v1/chat/completions",
        {"messages": TOOL_MESSAGES, "tools": TOOLS, "max_tokens": 90, "temperature": 0, **body},
    )


_USAGE = {"stream_options": {"include_usage": True}}
_NAMED = {"type": "function", "function": {"name": "get_weather"}}
_RF = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}

CASES: list[Case] = [
    Case("health", "GET", "/health", model=False),
    Case("version", "GET", "/version", model=False),
    Case("models", "GET", "/v1/models", model=False),
    Case("tokenize", "POST", "/tokenize", {"prompt": PROMPT, "add_special_tokens": False}),
    Case(
        "tokenize_strs",
        "POST",
        "/tokenize",
        {"prompt": "hello world", "add_special_tokens": True, "return_token_strs": True},
    ),
    Case("tokenize_chat", "POST", "/tokenize", {"messages": MESSAGES}),
    Case("detokenize", "POST", "/detokenize", {"tokens": [1, 2, 3]}),
    _c("completion"),
    _c("completion_stream", stream=True, **_USAGE),
    _c("completion_stream_no_usage", stream=True),
    _c("completion_length", max_tokens=1),
    _c("completion_stop_string", stop=[" ", "\n"], max_tokens=10),
    _c("completion_logprobs", logprobs=2),
    _c("completion_logprobs_stream", logprobs=2, stream=True, **_USAGE),
    _c("completion_n2", n=2, temperature=1.0, seed=1),
    _c("completion_n2_stream", n=2, temperature=1.0, seed=1, stream=True, **_USAGE),
    _c("completion_json", structured_outputs={"json": PERSON}, max_tokens=40),
    _c(
        "completion_json_stream",
        structured_outputs={"json": PERSON},
        max_tokens=40,
        stream=True,
        **_USAGE,
    ),
    _c(
        "completion_triggered_tags",
        prompt=TOOL_PROMPT,
        max_tokens=80,
        structured_outputs={"structural_tag": json.dumps(TRIGGERED_TAGS)},
    ),
    _c(
        "completion_triggered_tags_stream",
        prompt=TOOL_PROMPT,
        max_tokens=80,
        stream=True,
        structured_outputs={"structural_tag": json.dumps(TRIGGERED_TAGS)},
        **_USAGE,
    ),
    _c(
        "completion_legacy_tag",
        prompt=TOOL_PROMPT,
        max_tokens=10,
        structured_outputs={"structural_tag": json.dumps(LEGACY_TAG)},
    ),
    _chat("chat"),
    _chat("chat_stream", stream=True, **_USAGE),
    _chat("chat_logprobs", logprobs=True, top_logprobs=2),
    _chat("chat_logprobs_stream", logprobs=True, top_logprobs=2, stream=True),
    _chat("chat_n2", n=2, temperature=1.0, seed=1),
    _chat("chat_n2_stream", n=2, temperature=1.0, seed=1, stream=True, **_USAGE),
    _chat("chat_json", response_format=_RF, max_tokens=40),
    _chat("chat_json_stream", response_format=_RF, max_tokens=40, stream=True, **_USAGE),
    _chat("chat_structured_json", structured_outputs={"json": PERSON}, max_tokens=40),
    _tools("tools_auto", tool_choice="auto", max_tokens=6),
    _tools("tools_auto_stream", tool_choice="auto", max_tokens=6, stream=True),
    _tools("tools_required", tool_choice="required"),
    _tools("tools_required_stream", tool_choice="required", stream=True, **_USAGE),
    _tools("tools_named", tool_choice=_NAMED),
    _tools("tools_named_stream", tool_choice=_NAMED, stream=True, **_USAGE),
    _tools("tools_none", tool_choice="none", max_tokens=6),
    _tools("tools_auto_tagged", structured_outputs={"structural_tag": json.dumps(TRIGGERED_TAGS)}),
    _tools(
        "tools_auto_tagged_stream",
        stream=True,
        **_USAGE,
        structured_outputs={"structural_tag": json.dumps(TRIGGERED_TAGS)},
    ),
    Case("metrics", "GET", "/metrics", model=False),
    # Errors.
    _c("error_context_overflow", prompt="hello " * 9000),
    _c("error_max_tokens_too_large", max_tokens=100_000),
    _c("error_context_overflow_stream", prompt="hello " * 9000, stream=True),
    _chat("error_chat_context_overflow", messages=[{"role": "user", "content": "hello " * 9000}]),
    Case(
        "error_bad_model",
        "POST",
        "/v1/completions",
        {"model": "no-such-model", "prompt": "hi", "max_tokens": 2},
        model=False,
    ),
    Case(
        "error_bad_model_chat",
        "POST",
        "/v1/chat/completions",
        {"model": "no-such-model", "messages": MESSAGES, "max_tokens": 2},
        model=False,
    ),
    Case("error_malformed_json", "POST", "/v1/completions", raw=b'{"prompt": "hi",', model=False),
    _c("error_bad_max_tokens", max_tokens=0),
    _chat("error_bad_messages", messages="not a list"),
    _c(
        "error_structured_outputs_without_kind", structured_outputs={"disable_any_whitespace": True}
    ),
]


def run_case(client: httpx.Client, base: str, case: Case, model: str) -> dict[str, Any]:
    """Send ``case`` and return what came back: status, content type and decoded body."""
    url = base + case.path
    if case.method == "GET":
        resp = client.get(url)
    elif case.raw is not None:
        resp = client.post(url, content=case.raw, headers={"content-type": "application/json"})
    else:
        body = dict(case.body or {})
        if case.model:
            body.setdefault("model", model)
        resp = client.post(url, json=body)
    kind = resp.headers.get("content-type", "").split(";")[0].strip()
    out: dict[str, Any] = {"status": resp.status_code, "content_type": kind, "text": resp.text}
    if kind == "text/event-stream":
        out["events"] = sse_events(resp.text)
    elif kind == "application/json":
        out["json"] = resp.json()
    return out


def sse_events(text: str) -> list[Any]:
    """``data:`` payloads; ``"[DONE]"`` as the string; framing errors as ``("bad", block)``."""
    events: list[Any] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        if not block.startswith("data: ") or "\n" in block:
            events.append(("bad", block[:80]))
            continue
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def shape(value: Any, key: str | None = None) -> Any:
    """The comparable skeleton of a JSON value (see the module docstring)."""
    if isinstance(value, dict):
        if key == "top_logprobs":  # completions: {token: logprob}, the tokens are content
            return {"<token>": sorted({_type(v) for v in value.values()})}
        return {k: shape(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        shapes: list[Any] = []
        for item in value:
            s = shape(item, key)
            if s not in shapes:
                shapes.append(s)
        return shapes
    if key in _KEEP_VALUE and (isinstance(value, str | int) or value is None):
        return value
    if key in _ID_KEYS and isinstance(value, str):
        m = _ID_RE.match(value)
        return f"{m.group(1)}*" if m else "str"
    if key == "stop_reason":
        return None if value is None else type(value).__name__
    return _type(value)


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    return type(value).__name__


USED_METRICS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
)
"""Metric families the project reads or documents (names as ``# TYPE`` gives them)."""

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$")


def metric_types(text: str) -> dict[str, Any]:
    """``{family: [type, label names]}`` from a Prometheus text body."""
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            types[name] = kind
        elif (m := _SAMPLE.match(line)) and m.group(2) is not None:
            names = {pair.split("=", 1)[0] for pair in re.findall(r'(\w+="[^"]*")', m.group(2))}
            labels.setdefault(m.group(1), set()).update(names - {"le"})
    out: dict[str, Any] = {}
    for name, kind in types.items():
        sample = name if kind != "histogram" else f"{name}_count"
        out[name] = [kind, sorted(labels.get(sample, ()))]
    return out


def observed_shape(obs: dict[str, Any]) -> dict[str, Any]:
    """The comparable shape of one :func:`run_case` result."""
    out: dict[str, Any] = {"status": obs["status"], "content_type": obs["content_type"]}
    if "events" in obs:
        # One sequence per choice (with n > 1 the choices interleave as timing has it),
        # one for chunks without a choice (usage, [DONE]).
        streams: dict[str, list[Any]] = {}
        for event in obs["events"]:
            s = event if isinstance(event, str | tuple) else shape(event)
            choices = event.get("choices") if isinstance(event, dict) else None
            key = f"choice {choices[0].get('index')}" if choices else "end"
            seq = streams.setdefault(key, [])
            if not seq or seq[-1] != s:  # runs of equal chunks collapse to one
                seq.append(s)
        out["events"] = streams
    elif "json" in obs:
        out["body"] = shape(obs["json"])
    elif obs["content_type"] == "text/plain" and "# TYPE" in obs["text"]:
        families = metric_types(obs["text"])
        out["metrics"] = {name: families.get(name) for name in USED_METRICS}
    else:
        out["body"] = "text" if obs["text"] else "empty"
    return out


def differences(real: Any, sim: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(path, real, sim)`` for every place two shapes differ (``<missing>`` when absent)."""
    if isinstance(real, dict) and isinstance(sim, dict):
        out = []
        for key in sorted(set(real) | set(sim), key=str):
            out += differences(
                real.get(key, "<missing>"), sim.get(key, "<missing>"), f"{path}.{key}"
            )
        return out
    if isinstance(real, list) and isinstance(sim, list) and len(real) == len(sim):
        out = []
        for i, (r, s) in enumerate(zip(real, sim, strict=True)):
            out += differences(r, s, f"{path}[{i}]")
        return out
    return [] if real == sim else [(path, real, sim)]


LONG = "Hello there, this is a simulated answer that goes on and on. " * 40
SHORT = "Hello there!"


class MimicPolicy:
    """A simulator policy whose answers end the way the real server's did: a long text
    where the real answer ran out of ``max_tokens``, a short one where it stopped, so the
    two servers' answers can have the same shape. Set ``finishes`` before each request."""

    def __init__(self) -> None:
        self.finishes: list[str] = []

    def __call__(self, request: Any) -> str:
        finish = self.finishes.pop(0) if self.finishes else "stop"
        return {"length": LONG, "tool_calls": ""}.get(finish, SHORT)


def finish_reasons(obs: dict[str, Any]) -> list[str]:
    """The finish reason of each choice of an answer, by choice index."""
    found: dict[int, str] = {}
    payloads = obs.get("events") or [obs.get("json") or {}]
    for payload in payloads:
        for choice in (payload.get("choices") or []) if isinstance(payload, dict) else []:
            if choice.get("finish_reason"):
                found[choice.get("index", 0)] = choice["finish_reason"]
    return [found[i] for i in sorted(found)]
