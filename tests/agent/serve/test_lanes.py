"""``agent serve``'s own rows go on a lane of their own (``agent._io.SERVICE``): accepting a
run does not wait behind the runs' checkpoint and record writes, which with hundreds of
runs in flight queue for up to a second."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from agent._io import io_soon
from agent.sim import ScriptPolicy
from tests.agent.serve.conftest import config, served, sse, write_task


def test_a_run_is_accepted_while_the_runs_lane_is_busy(sim, tmp_path: Path) -> None:
    sim.policy = ScriptPolicy(["Hello there."])
    task = write_task(tmp_path, "greet")
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        c.post("/v1/runs/wait", json={"task": "greet"})  # the task's databases are open
        release, busy = threading.Event(), threading.Event()
        io_soon(lambda: busy.set() or release.wait(30))  # the runs' lane, blocked
        try:
            assert busy.wait(5)
            created = c.post("/v1/runs", json={"task": "greet"}, timeout=5)
            assert created.status_code == 202, created.text
        except httpx.TimeoutException as exc:
            raise AssertionError("POST /v1/runs waited for the runs' lane") from exc
        finally:
            release.set()
        events = sse(c, created.json()["run_id"])
        assert events[-1][2]["result"]["status"] == "done"
