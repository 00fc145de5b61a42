"""``agent serve`` as a process: ``--tasks DIR`` (``*.yaml`` and ``*/task.yaml``, invalid
files skipped), ``AGENT_MODEL_URL`` overriding the tasks' model URL, and ``--otel``
printing one trace of GenAI spans per run whose id ``GET /v1/runs/{id}`` shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agent.sim import FunctionPolicy, SimRequest
from tests.agent.serve._procs import agent_serve_procs
from tests.agent.serve.conftest import call, http_task

pytestmark = pytest.mark.slow


def test_tasks_dir_agent_model_url_and_otel_spans(sim, tmp_path: Path, local_api) -> None:
    pytest.importorskip("opentelemetry.sdk")
    prompts: list[str] = []

    def answer(request: SimRequest) -> str:
        prompts.append(request.prompt)
        if request.assistant_turns == 0:
            return call("http_request", url=f"{local_api.url}/g")
        return "Hi Ada."

    sim.policy = FunctionPolicy(answer)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    dead = {"url": "http://127.0.0.1:9"}  # nothing listens: AGENT_MODEL_URL must win
    http_task(tasks, "greet", local_api, model=dead, input="Greet {who}.", vars={"who": "x"})
    (tasks / "shop").mkdir()
    (tasks / "shop" / "ws").mkdir()
    (tasks / "shop" / "task.yaml").write_text(yaml.safe_dump({"input": "Hi", "workspace": "ws"}))
    (tasks / "broken.yaml").write_text("input: [unclosed\n")  # skipped, with a warning
    (tasks / "notes.txt").write_text("not a task")
    env = {"AGENT_MODEL_URL": sim.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    env["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "false"
    args = ["--tasks", str(tasks), "--store", str(tmp_path / "store"), "--otel"]
    with agent_serve_procs(tmp_path, args, env=env) as (p,), p.client() as c:
        names = [t["name"] for t in c.get("/v1/tasks").json()["tasks"]]
        assert names == ["greet", "shop"]  # shop: named after its folder
        assert c.post("/v1/runs", json={"task": "broken"}).status_code == 404
        view = c.post("/v1/runs/wait", json={"task": "greet", "vars": {"who": "Ada"}}).json()
        assert view["status"] == "done" and view["answer"] == "Hi Ada.", view
        assert re.fullmatch(r"[0-9a-f]{32}", view["trace_id"] or "")
        spans = p.spans(view["trace_id"], expected=4)
    assert "Greet Ada." in prompts[0] and local_api.hits["/g"] == 1
    model = "NousResearch/Hermes-3-Llama-3.1-8B"
    assert sorted(s["name"] for s in spans) == sorted(
        [f"chat {model}", f"chat {model}", "execute_tool http_request", "invoke_agent greet"]
    )
    [root] = [s for s in spans if s["parent_id"] is None]
    assert root["name"] == "invoke_agent greet"
    assert root["attributes"]["gen_ai.agent.id"] == view["run_id"]
    assert all(s["parent_id"] == root["context"]["span_id"] for s in spans if s is not root)
    tool = next(s for s in spans if s["name"].startswith("execute_tool"))
    assert tool["attributes"]["gen_ai.tool.name"] == "http_request"
    assert not any("gen_ai.input.messages" in s["attributes"] for s in spans)  # not opted in
    assert "skipping" in p.text() and "broken.yaml" in p.text()


def test_security_flags_and_tokens_from_the_environment(sim, tmp_path: Path, local_api) -> None:
    sim.policy = FunctionPolicy(lambda r: call("http_request", url=f"{local_api.url}/hold/r"))
    task = http_task(tmp_path, "slow", local_api)
    flags = ["--cors-origin", "https://app.example", "--max-body-bytes", "500"]
    flags += ["--rate", "1", "--burst", "4", "--max-runs", "1", "--model-url", sim.url]
    env = {"AGENT_SERVE_TOKENS": "env-one, env-two"}  # comma-separated, spaces trimmed
    with agent_serve_procs(tmp_path, [str(task), *flags], env=env) as (p,), p.client() as c:
        one, two = {"Authorization": "Bearer env-one"}, {"Authorization": "Bearer env-two"}
        assert c.get("/v1/tasks").status_code == 401
        assert c.get("/v1/tasks", headers=one).status_code == 200  # 1 of env-one's 4
        big = c.post("/v1/runs", headers=one, json={"task": "slow", "input": "x" * 600})
        assert big.status_code == 413  # --max-body-bytes
        assert c.post("/v1/runs", headers=one, json={"task": "slow"}).status_code == 202
        second = c.post("/v1/runs", headers=one, json={"task": "slow"})
        assert second.status_code == 429 and second.json()["error"]["type"] == "too_many_runs"
        codes = [c.get("/v1/tasks", headers=two).status_code for _ in range(6)]
        assert codes[:4] == [200] * 4 and 429 in codes[4:]  # --burst 4 at --rate 1
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        allowed = c.options("/v1/runs", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        local_api.release("/hold/r")
    args = [str(task), "--token", "flag-token", "--model-url", sim.url]
    with agent_serve_procs(tmp_path, args, env=env) as (p,), p.client() as c:
        assert c.get("/v1/tasks", headers={"Authorization": "Bearer flag-token"}).status_code == 200
        assert c.get("/v1/tasks", headers=one).status_code == 401  # --token wins over the env
