"""OpenTelemetry GenAI spans of runs, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from agent import Agent
from agent.runs import RunStore
from agent.sim import ScriptPolicy
from agent.tracing import CAPTURE_CONTENT_ENV, tracer
from tests.fakes import add, call


@pytest.fixture
def spans() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


async def test_a_run_is_one_trace_of_genai_spans(sim, tmp_path: Path, spans, monkeypatch) -> None:
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    exporter, provider = spans
    sim.policy = ScriptPolicy([call("add", a=2, b=40), "The sum is 42."])
    async with Agent(sim.url, tools=(add,), store=tmp_path / "s") as agent:
        agent.tracer = tracer(provider)
        result = await agent.run("2 + 40?", thread_id="conv-1")
    finished = exporter.get_finished_spans()
    names = [s.name for s in finished]
    model = "NousResearch/Hermes-3-Llama-3.1-8B"
    # A call dispatched early can end before its step's chat span: compare as a multiset.
    assert sorted(names) == sorted(
        [f"chat {model}", f"chat {model}", "execute_tool add", "invoke_agent agent"]
    )
    assert names[-1] == "invoke_agent agent"
    assert len({s.context.trace_id for s in finished}) == 1
    root = finished[-1]
    assert all(s.parent.span_id == root.context.span_id for s in finished[:-1])
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.conversation.id"] == "conv-1"
    chat = next(s for s in finished if s.name.startswith("chat"))
    tool = next(s for s in finished if s.name.startswith("execute_tool"))
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == model
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "add"
    assert tool.attributes["gen_ai.tool.call.id"].startswith("call_")
    assert chat.end_time > chat.start_time and tool.end_time >= tool.start_time
    # No message content unless opted in.
    assert not any(k.endswith(("messages", "arguments", "result")) for s in finished
                   for k in s.attributes)  # fmt: skip
    record = RunStore(tmp_path / "s" / "runs.db").get(result.run_id)
    assert record.trace_id == f"{root.context.trace_id:032x}"


async def test_content_only_when_opted_in(sim, tmp_path: Path, spans, monkeypatch) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    exporter, provider = spans
    sim.policy = ScriptPolicy([call("add", a=1, b=2), "3."])
    async with Agent(sim.url, tools=(add,), store=None) as agent:
        agent.tracer = tracer(provider)
        await agent.run("1 + 2?")
    tool = next(s for s in exporter.get_finished_spans() if s.name == "execute_tool add")
    assert tool.attributes["gen_ai.tool.call.arguments"] == '{"a": 1, "b": 2}'
    assert tool.attributes["gen_ai.tool.call.result"] == "3"
    root = exporter.get_finished_spans()[-1]
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "3."}],
               "finish_reason": "stop"}]  # fmt: skip
    assert json.loads(root.attributes["gen_ai.output.messages"]) == answer
    chat = next(s for s in exporter.get_finished_spans() if s.name.startswith("chat "))
    sent = json.loads(chat.attributes["gen_ai.input.messages"])  # structured, not ChatML
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[1]["parts"] == [{"type": "text", "content": "1 + 2?"}]
    assert "<|im_start|>" not in chat.attributes["gen_ai.input.messages"]
    said = json.loads(chat.attributes["gen_ai.output.messages"])[0]
    assert said["role"] == "assistant" and '"add"' in said["parts"][0]["content"]
    port = int(sim.url.rsplit(":", 1)[1])
    assert (chat.attributes["server.address"], chat.attributes["server.port"]) == (
        "127.0.0.1", port
    )  # fmt: skip


async def test_a_resumed_run_stays_in_its_trace(sim, tmp_path: Path, spans) -> None:
    exporter, provider = spans
    sim.policy = ScriptPolicy([call("write_file", path="a.txt", content="x"), "ok"])
    (tmp_path / "ws").mkdir()
    from agent import ToolPolicies

    policies = ToolPolicies(workspace=tmp_path / "ws", files={"allow_write": True})
    async with Agent(sim.url, tools=["write_file"], policies=policies, store=tmp_path / "s") as a:
        a.tracer = tracer(provider)
        paused = await a.run("write")
        assert paused.status == "awaiting_approval"
        done = await a.run(run_id=paused.run_id, approve="all")
        assert done.status == "done"
    roots = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    assert len(roots) == 2 and roots[0].context.trace_id == roots[1].context.trace_id


def test_agent_run_otel_prints_spans(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "sales_duckdb"
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", str(example / "task.yaml"), "--sim",
         str(example / "script.yaml"), "--otel", "--json", "--store", str(tmp_path / "s")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"name": "invoke_agent sales-by-region"' in result.stderr
    assert '"name": "execute_tool sql_query"' in result.stderr
    assert '"gen_ai.operation.name": "chat"' in result.stderr
