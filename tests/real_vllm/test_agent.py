"""The agent end to end on real weights: ``examples/sales_duckdb`` against SmolLM2.

The example's first step is forced to call a tool (``tool_choice: required``, enforced by
the server's structured outputs). The 135M model's SQL is likely nonsense: whatever DuckDB
says goes back to it, and the run must end with a status, never a crash. Its second
model call re-sends the first prompt plus the call and its result, so vLLM's prefix cache
must serve most of it: ``cached_tokens > 0`` on a real tokenizer proves that our prompts
are byte-stable and append-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent import Agent
from agent.config import Limits, Sampling
from agent.events import Final, StepFinished, ToolCallEvent, ToolResultEvent
from agent.task import load_task
from agent.testing import RealVLLM

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sales_duckdb" / "task.yaml"


async def test_sales_duckdb_runs_on_real_weights(
    real_vllm: RealVLLM, measured: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the run store (.agent) goes here
    task = load_task(EXAMPLE)
    assert task.model.tool_choice == "required"
    # Bounded for two CPU cores: short turns, three model calls at most.
    model = task.model.model_copy(
        update={"sampling": Sampling(temperature=0.0, max_tokens=96, repetition_penalty=1.3)}
    )
    task = task.model_copy(
        update={"model": model, "limits": Limits(max_steps=3, max_tool_calls=3, deadline_s=240)}
    )
    agent = Agent.from_task(task, model_url=real_vllm.url)
    try:
        events = [event async for event in agent.stream()]
    finally:
        await agent.aclose()

    calls = [e for e in events if isinstance(e, ToolCallEvent)]
    results = [e for e in events if isinstance(e, ToolResultEvent)]
    steps = [e for e in events if isinstance(e, StepFinished)]
    final = events[-1]
    assert isinstance(final, Final)
    assert final.result.status in ("done", "limit", "loop"), final.result
    # The forced first step called a tool of the task, and its result (rows or DuckDB's
    # error) was reported back, whatever the arguments were.
    assert calls and calls[0].call.name in ("sql_query", "sql_tables")
    assert calls[0].step == steps[0].step
    assert {r.result.call_id for r in results} >= {calls[0].call.id}
    assert all(r.result.status in ("ok", "error") for r in results)
    # Step 2 re-sent step 1's prompt: the server's prefix cache served it.
    assert len(steps) >= 2
    second = steps[1].generation.usage
    assert second.cached_tokens and second.cached_tokens > 0
    measured["agent_step2_cached_tokens"] = second.cached_tokens
    measured["agent_step2_prompt_tokens"] = second.prompt_tokens
    measured["agent_status"] = final.result.status
