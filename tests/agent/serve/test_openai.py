"""The OpenAI-compatible facade, driven by the official ``openai`` SDK."""

from __future__ import annotations

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
    # The task's system prompt stays; the client's system message is added to it.
    assert "Be brief." in sim.requests[0]["prompt"]


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
        with pytest.raises(openai.BadRequestError, match="tool_choice"):  # not a 422
            client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "x"}],
                tool_choice="required",
            )  # fmt: skip
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
