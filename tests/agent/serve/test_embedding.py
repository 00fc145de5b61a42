"""``create_app`` embedded: mounted inside another Starlette app (its lifespan run by the
host), an inline task with ``vars`` run through the mount, ``/metrics`` counting the tool
call and timing it; and a run over HTTP traced as one trace of GenAI spans whose id is in
``GET /v1/runs/{id}``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from agent.serve import SecurityConfig, create_app
from agent.sim import FunctionPolicy, ScriptPolicy, SimRequest
from tests.agent.serve.conftest import call, config, http_task, served, sse, start_uvicorn


@contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """``app`` (here a host app mounting ours) under uvicorn; its URL."""
    url, server, thread = start_uvicorn(app)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def _greeter(api_url: str, prompts: list[str]) -> FunctionPolicy:
    """Fetches /who from the local API, then greets; keeps every prompt it is sent."""

    def answer(request: SimRequest) -> str:
        prompts.append(request.prompt)
        if request.assistant_turns == 0:
            return call("http_request", url=f"{api_url}/who")
        return "Hello, Ada."

    return FunctionPolicy(answer)


def test_mounted_in_another_app_inline_task_with_vars_and_metrics(
    sim, tmp_path: Path, local_api
) -> None:
    prompts: list[str] = []
    sim.policy = _greeter(local_api.url, prompts)
    vars = {"who": "someone", "town": "Paris"}  # defaults
    task = http_task(tmp_path, "greet", local_api, input="Greet {who} from {town}.", vars=vars)
    cfg = config(tmp_path, sim.url, task, security=SecurityConfig(tokens=["tok"]))
    inner = create_app(cfg)
    host = Starlette(
        routes=[
            Route("/", lambda request: PlainTextResponse("host app")),
            Mount("/agent", app=inner),
        ],
        lifespan=inner.router.lifespan_context,  # the host runs the service's lifespan
    )
    auth = {"Authorization": "Bearer tok"}
    with _uvicorn(host) as url, httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/").text == "host app"
        # Probes need no token, mounted or not.
        assert c.get("/agent/healthz").status_code == 200
        assert c.get("/agent/readyz").json() == {"status": "ready"}
        assert c.get("/agent/v1/tasks").status_code == 401
        body = {
            "task": {"extends": "greet", "system": "You greet people by name."},
            "vars": {"who": "Ada"},
        }
        created = c.post("/agent/v1/runs", json=body, headers=auth)
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        location = created.headers["location"]
        assert location == f"/agent/v1/runs/{run_id}"  # resolvable through the mount
        events = sse(httpx.Client(base_url=f"{url}/agent", headers=auth, timeout=30), run_id)
        assert events[-1][2]["result"]["status"] == "done"
        view = c.get(location, headers=auth).json()
        assert view["status"] == "done" and view["answer"] == "Hello, Ada."
        assert view["task"] == "greet" and view["tool_calls"] == 1
        metrics = c.get("/agent/metrics", headers=auth).text
    # The run's vars filled the task's input template over its defaults; the inline
    # task's system prompt was used.
    assert "Greet Ada from Paris." in prompts[0]
    assert "You greet people by name." in prompts[0]
    assert local_api.hits["/who"] == 1
    assert 'agent_tool_calls_total{status="ok",tool="http_request"} 1' in _sorted_labels(metrics)
    assert _sample(metrics, "agent_tool_seconds_count") == 1
    assert _sample(metrics, 'agent_tool_seconds_bucket{le="+Inf"}') == 1
    assert _sample(metrics, "agent_tool_seconds_sum") > 0
    assert _sample(metrics, "agent_step_seconds_count") == 2
    assert _sample(metrics, "agent_ttft_seconds_count") == 2
    assert _sample(metrics, "agent_run_seconds_count") == 1
    assert _sample(metrics, 'agent_run_seconds_bucket{le="+Inf"}') == 1
    assert "# TYPE agent_tool_seconds histogram" in metrics
    # Buckets are cumulative: each at least the one before.
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("agent_tool_seconds_bucket")
    ]
    assert counts == sorted(counts) and counts[-1] == 1


def test_a_run_over_http_is_one_trace_with_its_id_in_the_run(sim, tmp_path: Path, local_api):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agent.tracing import tracer

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/t"), "Traced."])
    task = http_task(tmp_path, "traced", local_api)
    with served(config(tmp_path, sim.url, task, tracer=tracer(provider))) as s, s.client() as c:
        view = c.post("/v1/runs/wait", json={"task": "traced"}).json()
    assert view["status"] == "done" and view["answer"] == "Traced."
    spans = exporter.get_finished_spans()
    model = "NousResearch/Hermes-3-Llama-3.1-8B"
    assert sorted(s.name for s in spans) == sorted(
        [f"chat {model}", f"chat {model}", "execute_tool http_request", "invoke_agent traced"]
    )
    assert len({s.context.trace_id for s in spans}) == 1  # one trace per run
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "invoke_agent traced"
    assert root.attributes["gen_ai.agent.id"] == view["run_id"]
    assert all(s.parent.span_id == root.context.span_id for s in spans if s is not root)
    tool = next(s for s in spans if s.name.startswith("execute_tool"))
    assert tool.attributes["gen_ai.tool.name"] == "http_request"
    chat = next(s for s in spans if s.name.startswith("chat"))
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert view["trace_id"] == f"{root.context.trace_id:032x}"  # the run says its trace


def _sorted_labels(text: str) -> str:
    """The tool-call counter's lines with labels in name order (the render's is fixed,
    but the test should not depend on it)."""
    out = []
    for line in text.splitlines():
        if line.startswith("agent_tool_calls_total{"):
            labels, _, value = line[len("agent_tool_calls_total{") :].partition("} ")
            pairs = ",".join(sorted(labels.split(",")))
            line = f"agent_tool_calls_total{{{pairs}}} {value}"
        out.append(line)
    return "\n".join(out)


def _sample(text: str, name: str) -> float:
    [value] = [line[len(name) + 1 :] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)
