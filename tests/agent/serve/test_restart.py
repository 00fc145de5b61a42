"""``agent serve`` as a process: SIGTERM drains and a restart resumes; ``kill -9`` mid-run,
then a restart: the run completes, no completed tool call runs twice, and a client that
reconnects with ``Last-Event-ID`` misses nothing and sees nothing twice."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from agent.runs import RunStore
from tests.agent.serve._procs import ServeProc
from tests.agent.serve.conftest import held_two_fetch_task, sse, wait_status

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def agent_serve(
    tmp_path: Path, task: Path, script: Path, port: int, *extra: str
) -> Iterator[ServeProc]:
    """``agent serve`` on ``port`` (the same one across a restart), killed on the way out."""
    args = [str(task), "--sim", str(script), "--store", str(tmp_path / "store"), *extra]
    env = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # --otel: spans printed at once
    serve = ServeProc([*args, "--drain-s", "0.5"], tmp_path, env, port=port)
    try:
        serve.wait_ready(timeout=60)
        yield serve
    finally:
        serve.close()


def _start_and_hold(port: int, local_api) -> tuple[str, list]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        run_id = c.post("/v1/runs", json={"task": "two"}).json()["run_id"]
        local_api.wait_arrived("/hold/h")
        return run_id, sse(c, run_id, limit=4)


def _finish_after_restart(port: int, run_id: str, seen: list) -> list:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        wait_status(c, run_id, {"done"}, timeout=60)
        rest = sse(c, run_id, after=seen[-1][0])
        whole = sse(c, run_id)
    assert [i for i, _, _ in whole] == list(range(1, len(whole) + 1))
    assert seen + rest == whole[: len(seen) + len(rest)] and rest[-1] == whole[-1]
    assert rest[-1][2]["result"]["status"] == "done"
    assert rest[-1][2]["result"]["answer"] == "Both fetched."
    return whole


def test_kill_9_mid_run_then_restart_completes_without_repeating_calls(
    tmp_path: Path, local_api
) -> None:
    task, script = held_two_fetch_task(tmp_path, local_api)
    port = _free_port()
    with agent_serve(tmp_path, task, script, port) as serve:
        run_id, seen = _start_and_hold(port, local_api)
        os.kill(serve.proc.pid, signal.SIGKILL)
        serve.proc.wait(30)
    local_api.release("/hold/h")
    with agent_serve(tmp_path, task, script, port):
        whole = _finish_after_restart(port, run_id, seen)
    assert sum(1 for _, k, d in whole if k == "run_started" and d["resumed"]) == 1
    assert local_api.hits["/once"] == 1  # completed before the kill: not run again
    assert local_api.hits["/hold/h"] == 2  # in flight at the kill: run again


def test_sigterm_drains_marks_resumable_and_a_restart_resumes(tmp_path: Path, local_api) -> None:
    pytest.importorskip("opentelemetry.sdk")
    task, script = held_two_fetch_task(tmp_path, local_api)
    port = _free_port()
    with agent_serve(tmp_path, task, script, port, "--otel") as first:
        run_id, seen = _start_and_hold(port, local_api)
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    record = RunStore(tmp_path / "store" / "runs.db").get(run_id)
    assert record is not None and record.status == "interrupted" and record.trace_id
    local_api.release("/hold/h")
    with agent_serve(tmp_path, task, script, port, "--otel") as second:
        _finish_after_restart(port, run_id, seen)
        # The resumed run stays in its trace: the restarted server's spans carry its id.
        after = second.spans(record.trace_id, expected=2)
    before = first.spans(record.trace_id, expected=1, timeout=0)
    assert any(s["name"] == "invoke_agent two" for s in before)
    assert {"invoke_agent two", "execute_tool http_request"} <= {s["name"] for s in after}
    assert local_api.hits["/once"] == 1
