"""The OpenAI-compatible facade, driven by the official ``openai`` SDK."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from agent.serve import SecurityConfig
from agent.sim import FunctionPolicy, ScriptPolicy
from tests.agent.serve.conftest import call, config, http_task, served


def test_sdk_lists_tasks_as_models_and_completes(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/w"), "Sunny, 21 C."])
    task = http_task(tmp_path, "weather", local_api)
    cfg = config(tmp_path, sim.url, task, security=SecurityConfig(tokens=["sk-test"]))
    with served(cfg) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="sk-test")
        assert [m.id for m in client.models.list()] == ["weather"]
        done = client.chat.completions.create(
            model="weather", messages=[{"role": "user", "content": "Weather?"}]
        )
        assert done.choices[0].message.content == "Sunny, 21 C."
        assert done.choices[0].finish_reason == "stop"
        assert done.usage.total_tokens > 0 and done.model == "weather"
        run_id = done.model_extra["run_id"]
        with s.client() as c:  # the completion is a run like any other
            assert c.get(f"/v1/runs/{run_id}").json()["tool_calls"] == 1
        assert local_api.hits["/w"] == 1  # the tool ran on the server


def test_sdk_stream_carries_answer_and_tool_progress(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/s"), "All good."])
    task = http_task(tmp_path, "weather", local_api)
    with served(config(tmp_path, sim.url, task)) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused")
        stream = client.chat.completions.create(
            model="weather",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    # A plain client: content deltas only; progress chunks have an empty delta.
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "All good."
    progress = [c.model_extra["agent_event"] for c in chunks if "agent_event" in c.model_extra]
    assert [e["kind"] for e in progress] == ["tool_call", "tool_result"]
    assert progress[1]["result"]["status"] == "ok"
    assert chunks[-1].usage.total_tokens > 0 and chunks[-1].choices == []
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert "Be brief." in sim.requests[0]["prompt"]


def test_system_messages_and_sampling_add_to_the_task(sim, tmp_path: Path, local_api) -> None:
    sim.policy = FunctionPolicy(lambda r: "Noted.")
    sampling = {"stop": ["<<task-stop>>"], "max_tokens": 64}
    task = http_task(
        tmp_path, "weather", local_api, system="TASK RULES: cite sources.",
        model={"sampling": sampling},
    )  # fmt: skip
    with served(config(tmp_path, sim.url, task)) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        done = client.chat.completions.create(
            model="weather",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "?"}],
            stop="<<client-stop>>", presence_penalty=0.5, frequency_penalty=-0.25,
        )  # fmt: skip
    assert done.choices[0].message.content == "Noted."
    sent = sim.requests[0]
    # The task's system prompt stays, first; the client's system message follows it.
    assert 0 <= sent["prompt"].index("TASK RULES") < sent["prompt"].index("Be brief.")
    assert {"<<task-stop>>", "<<client-stop>>"} <= set(sent["stop"])  # the task's stays
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, -0.25)


def test_tool_choice_is_about_the_tasks_tools(sim, tmp_path: Path, local_api) -> None:
    sim.policy = FunctionPolicy(lambda r: "Answered.")
    task = http_task(tmp_path, "weather", local_api)
    with served(config(tmp_path, sim.url, task)) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        ask = {"model": "weather", "messages": [{"role": "user", "content": "Weather?"}]}
        plain = client.chat.completions.create(**ask)
        none = client.chat.completions.create(**ask, tool_choice="none")
        named = client.chat.completions.create(
            **ask, tool_choice={"type": "function", "function": {"name": "http_request"}}
        )
        with s.client() as c:
            view = {
                name: c.get(f"/v1/runs/{done.model_extra['run_id']}").json()
                for name, done in (("plain", plain), ("none", none), ("named", named))
            }
    prompts = [r["prompt"] for r in sim.requests]
    assert "http_request" in prompts[0]  # the task's tool is offered by default
    assert "http_request" not in prompts[1]  # tool_choice none: no tools this run
    assert (view["plain"]["tool_calls"], view["none"]["tool_calls"]) == (0, 0)
    assert view["named"]["tool_calls"] == 1  # a call is required before the answer
    assert named.choices[0].message.content == "Answered."


def test_response_format_is_the_runs_output_schema(sim, tmp_path: Path, local_api) -> None:
    answers = ['{"city": "Oslo"}', '{"city": "Oslo", "temp_c": 4}']
    sim.policy = FunctionPolicy(lambda r: answers[min(len(sim.requests), 2) - 1])
    task = http_task(tmp_path, "weather", local_api)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp_c": {"type": "integer"}},
        "required": ["city", "temp_c"],
    }
    with served(config(tmp_path, sim.url, task)) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        ask = {"model": "weather", "messages": [{"role": "user", "content": "Oslo?"}]}
        done = client.chat.completions.create(
            **ask,
            response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
        )
        with pytest.raises(openai.UnprocessableEntityError, match=r"json_schema\.schema"):
            client.chat.completions.create(
                **ask, response_format={"type": "json_schema", "json_schema": {"name": "w"}}
            )
    # The first answer broke the schema, so the run asked again, naming what was missing.
    assert json.loads(done.choices[0].message.content) == {"city": "Oslo", "temp_c": 4}
    assert "temp_c" in sim.requests[1]["prompt"] and len(sim.requests) == 2


def test_client_tools_are_refused_and_models_must_exist(sim, tmp_path: Path, local_api) -> None:
    sim.policy = FunctionPolicy(lambda r: "ok")
    task = http_task(tmp_path, "weather", local_api)
    with served(config(tmp_path, sim.url, task)) as s:
        client = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        with pytest.raises(openai.BadRequestError, match="tools"):
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}], tools=[tool]
            )
        with pytest.raises(openai.BadRequestError, match="tools"):  # the legacy name too
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}],
                functions=[tool["function"]],
            )  # fmt: skip
        with pytest.raises(openai.PermissionDeniedError, match="'read_file' is not one"):
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}],
                tool_choice={"type": "function", "function": {"name": "read_file"}},
            )  # fmt: skip
        with pytest.raises(openai.UnprocessableEntityError, match="stop"):  # not a 500
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}], stop=[""]
            )
        with pytest.raises(openai.UnprocessableEntityError, match="system"):
            client.chat.completions.create(
                model="weather",
                messages=[{"role": "system", "content": "s" * 100_001},
                          {"role": "user", "content": "x"}],
            )  # fmt: skip
        with pytest.raises(openai.BadRequestError, match="logprobs"):
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}], logprobs=True
            )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.PermissionDeniedError, match="max_tokens"):
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}], max_tokens=10**6
            )
        earlier = client.chat.completions.create(
            model="weather",
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
            ],
        )
        assert earlier.choices[0].message.content == "ok"
