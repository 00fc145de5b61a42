"""The Python API on uvloop (as README suggests, and as ``agent serve`` runs): a run whose
tools run in the sandbox pool (DuckDB in worker processes) completes as on asyncio's loop."""

from __future__ import annotations

import shutil
from pathlib import Path

import uvloop

from agent import Agent
from agent.events import ToolResultEvent
from agent.sim import ScriptPolicy
from agent.task import load_task
from agent.testing import run_sim

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sales_duckdb"


def test_a_sandboxed_sql_run_completes_on_uvloop(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "example")
    task = load_task(tmp_path / "example" / "task.yaml")
    task = task.model_copy(update={"store": str(tmp_path / "store")})
    policy = ScriptPolicy.from_file(tmp_path / "example" / "script.yaml")

    async def main(url: str) -> list:
        async with Agent.from_task(task, model_url=url) as agent:
            return [event async for event in agent.stream()]

    with run_sim(policy) as sim:
        events = uvloop.run(main(sim.url))
    results = [e.result for e in events if isinstance(e, ToolResultEvent)]
    assert [r.name for r in results] == ["sql_tables", "sql_query"]
    assert all(r.status == "ok" for r in results), results
    assert "North" in results[1].content  # DuckDB's real answer, from a worker process
    assert events[-1].result.status == "done"
