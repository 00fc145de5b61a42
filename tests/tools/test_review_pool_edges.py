"""Review of two edges of the sandbox pool's worker lifecycle (`tools._pool`).

1. A process group is signalled only while its leader is known not to have been reaped:
   once a worker's exit status has been collected its pid, and so its group id, may
   belong to an unrelated process group, which ``os.killpg`` would kill.
2. A run cancelled while the pool starts its group's first worker leaves no worker
   behind: the worker is either registered in its group or killed and reaped.

The worker tools are `tests.tools.test_pool`'s (importable by reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ToolExecutionError
from tests.tools._procs import running
from tests.tools.test_pool import die, recall, remember
from tools import _pool
from tools.base import tool
from tools.policy import ToolPolicies
from tools.sandbox import RunSandbox, close_pool


@tool(sandbox="process")
def sleeper() -> dict:
    """Start a process in the worker's process group; its pid."""
    return {"pid": subprocess.Popen(["sleep", "60"]).pid}


TOOLS = {"remember": remember, "recall": recall, "die": die, "sleeper": sleeper}
KINDS = pytest.mark.parametrize("shared", [True, False], ids=["forked", "spawned"])


@pytest.fixture(autouse=True)
async def _fresh_pool() -> Any:
    yield
    await close_pool()


@pytest.fixture
def killpg_log(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every group id ``os.killpg`` is asked to signal; only live groups are signalled
    for real (a stale one could be anybody's), and never pytest's own (``0``)."""
    real, log = os.killpg, []

    def killpg(pgid: int, sig: int) -> None:
        log.append(pgid)
        if pgid > 0 and running(pgid):
            real(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    return log


def _sandbox(ws: Path, run: str, *, shared: bool) -> RunSandbox:
    ws.mkdir(exist_ok=True)
    sandbox = {"use_bwrap": False, "pool_size": 2, "shared": shared}
    return RunSandbox(TOOLS, ToolPolicies(workspace=ws, sandbox=sandbox), run_id=run)


def _reaped(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def _until(check: Any, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def _first_call_awaiting_ready(sb: RunSandbox) -> tuple[asyncio.Task[str], Any]:
    """A call that starts the group's first worker, caught once that worker's pipes are
    connected (``init`` on its way) and before it has answered ``ready``: the call's task
    and the worker."""
    before = set(_pool._LIVE)
    task = asyncio.create_task(sb.call("remember", {"value": "x"}))

    def starting() -> list[Any]:
        return [w for w in _pool._LIVE - before if not isinstance(w, _pool._Template)]

    deadline = time.monotonic() + 30
    while not task.done() and time.monotonic() < deadline:
        if [w for w in starting() if w._writer is not None]:
            break
        await asyncio.sleep(0)
    [worker] = starting()
    assert not task.done() and len(worker._tasks) < 2, "it was ready before the test acted"
    return task, worker


# --- 1. no signal to a group whose leader was reaped ---------------------------------------


@KINDS
async def test_a_dead_worker_s_group_is_not_signalled_after_its_exit_was_collected(
    tmp_path: Path, killpg_log: list[int], shared: bool
) -> None:
    """A worker killed from outside is reaped (by the pool, or by its template, which
    reports the status); its stdout's end of stream and the pool's closing then kill it
    again: ``kill_now`` must not ``killpg`` a pid that may have been handed out anew."""
    sb = _sandbox(tmp_path / "ws", "run-a", shared=shared)
    await sb.call("remember", {"value": "x"})
    worker = sb._worker
    assert (worker.template is not None) is shared
    os.kill(worker.pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.shield(worker.exited), 5)  # its status is collected
    assert worker.exited.result() == -signal.SIGKILL
    killpg_log.clear()
    await asyncio.sleep(0.2)  # its stdout's end of stream is read (`_Worker._read`)
    await close_pool()  # the group still holds the dead worker, and kills it
    assert worker.pid not in killpg_log


async def test_a_spawned_worker_is_reaped_by_the_pool_alone(
    tmp_path: Path, killpg_log: list[int]
) -> None:
    """A spawned worker's exit is collected by its pidfd watcher only: not by `subprocess`,
    which reaps the children of dropped ``Popen`` objects whenever it starts another
    process. Reaped behind the pool's back, the worker's pid is free while ``kill_now``
    still takes it for the worker's (and its exit status is lost)."""
    sb = _sandbox(tmp_path / "ws", "run-a", shared=False)
    await sb.call("remember", {"value": "x"})
    worker = sb._worker
    gc.collect()  # the pool dropped its Popen object (in a reference cycle under pytest)
    os.kill(worker.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    peek = os.WEXITED | os.WNOHANG | os.WNOWAIT  # its threads all gone, not reaped
    while os.waitid(os.P_PID, worker.pid, peek) is None and time.monotonic() < deadline:
        time.sleep(0.01)  # blocking: the loop must not reap it before the next line
    subprocess.run(["true"], check=True)  # any process started meanwhile
    reaped_behind = _reaped(worker.pid)
    worker.kill_now()  # e.g. its call timed out just now
    assert not (reaped_behind and worker.pid in killpg_log), "a reaped worker's group was signalled"
    await asyncio.wait_for(asyncio.shield(worker.exited), 5)
    assert worker.exited.result() == -signal.SIGKILL, "its exit status was lost"


@KINDS
@pytest.mark.parametrize("how", ["stopped", "died"])
async def test_a_worker_s_group_dies_with_it(tmp_path: Path, shared: bool, how: str) -> None:
    """Pins the other side: a worker stopped by the pool, or dying on its own, takes its
    process group with it (a process a tool started there)."""
    sb = _sandbox(tmp_path / "ws", "run-a", shared=shared)
    child = json.loads(await sb.call("sleeper", {}))["pid"]
    worker = sb._worker
    assert os.getpgid(child) == worker.pid
    if how == "stopped":
        await worker.kill("")
    else:
        with contextlib.suppress(ToolExecutionError):
            await sb.call("die", {})
        await asyncio.wait_for(asyncio.shield(worker.exited), 5)
    assert await _until(lambda: not running(child)), "the group outlived its worker"


# --- 2. a run cancelled during its group's first worker start --------------------------------


@KINDS
async def test_a_run_cancelled_while_its_first_worker_starts_leaks_no_worker(
    tmp_path: Path, shared: bool
) -> None:
    """The run's call is cancelled while the worker process exists but has not answered
    ``ready``: that worker is then registered in its group or killed, never left running
    outside it (never reused, never stopped when idle, not killed when the pool closes;
    a forked one also keeps its template from stopping)."""
    sb = _sandbox(tmp_path / "ws", "run-a", shared=shared)
    task, worker = await _first_call_awaiting_ready(sb)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    group = sb._group
    assert await _until(lambda: worker in group.workers or not running(worker.pid), 5), (
        "the worker runs outside its group"
    )
    await close_pool()
    assert await _until(lambda: not running(worker.pid), 5), "the worker outlived the pool"


@KINDS
async def test_a_run_cancelled_after_its_worker_started_keeps_the_worker_in_the_group(
    tmp_path: Path, shared: bool
) -> None:
    """Pins the other side: a run cancelled during its call (its worker started and
    registered) leaves the worker in its group, killed when the pool closes."""
    sb = _sandbox(tmp_path / "ws", "run-a", shared=shared)
    await sb.call("remember", {"value": "x"})
    worker = sb._worker
    task = asyncio.create_task(sb.call("recall", {}))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert worker in sb._group.workers
    await close_pool()
    assert await _until(lambda: not running(worker.pid), 5)


@KINDS
async def test_a_pool_closed_while_its_first_worker_starts_leaks_no_worker(
    tmp_path: Path, shared: bool
) -> None:
    """The pool closes (a service shutting down) while a group's first worker is starting:
    the group waits for that start and stops the worker with the rest, instead of the
    worker joining a group the pool no longer holds. A call after the close is refused."""
    sb = _sandbox(tmp_path / "ws", "run-a", shared=shared)
    task, worker = await _first_call_awaiting_ready(sb)
    group = sb._group
    await close_pool()
    with contextlib.suppress(ToolExecutionError):
        await task
    assert await _until(lambda: not running(worker.pid), 5), "the worker outlived the pool"
    with pytest.raises(ToolExecutionError, match="closed"):
        await group.assign("run-b")
