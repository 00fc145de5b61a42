"""Second security review of the worker template (`tools._pool._Template`, adec8ac).

Each test states a lifecycle property of the pool that a plain-process group (whose
workers are forked from a template) breaks in the final state; each fails on adec8ac.
The worker tools are `tests.tools.test_pool`'s (importable by reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agent.types import ToolCall
from tests.tools._procs import running
from tests.tools.test_pool import die, recall, remember
from tools import _pool
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.sandbox import close_pool

ROOT = Path(__file__).resolve().parents[2]


TOOLS = [remember, recall, die]


@pytest.fixture(autouse=True)
async def _fresh_pool() -> Any:
    yield
    await close_pool()


@pytest.fixture
def no_killpg_0(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Guard the test process: ``os.killpg(0, …)`` would kill pytest's own process group
    (see `test_a_template_that_fails_to_spawn_does_not_kill_the_parent`)."""
    real, refused = os.killpg, []

    def killpg(pgid: int, sig: int) -> None:
        if pgid == 0:
            refused.append(sig)
            return
        real(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    return refused


def _dispatcher(ws: Path, run: str, **sandbox: Any) -> Dispatcher:
    policies = ToolPolicies(workspace=ws, sandbox={"use_bwrap": False, "pool_size": 2, **sandbox})
    return Dispatcher(TOOLS, policies, run_id=run, artifacts_dir=ws.parent / "art" / run)


async def _call(d: Dispatcher, name: str, **args: Any) -> Any:
    return await d.call(ToolCall(name, args))


async def _fail_a_first_call(ws: Path) -> None:
    """A group's first call made once its workspace is gone: the worker (or its template)
    cannot start there, so the call fails with an execution error."""
    ws.mkdir()
    async with _dispatcher(ws, "run-a") as a:
        shutil.rmtree(ws)
        failed = await _call(a, "recall")
        assert failed.error == "execution", failed.content  # precondition


# --- a template that cannot be spawned ---------------------------------------------------

_SCENARIO = """
import asyncio, shutil, sys, tempfile
from pathlib import Path
from agent.types import ToolCall
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.sandbox import close_pool
from tests.tools.test_review_template2 import TOOLS

async def main():
    tmp = Path(tempfile.mkdtemp())
    ws = tmp / "ws"
    ws.mkdir()
    policies = ToolPolicies(workspace=ws, sandbox={"use_bwrap": False, "pool_size": 2})
    async with Dispatcher(TOOLS, policies, run_id="r", artifacts_dir=tmp / "art") as d:
        shutil.rmtree(ws)  # the workspace is gone (moved, remounted, cleaned up)
        result = await d.call(ToolCall("recall", {}))
        print("call failed:", result.error, flush=True)
    await asyncio.sleep(1)
    print("parent alive", flush=True)
    await close_pool()
    shutil.rmtree(tmp, ignore_errors=True)

asyncio.run(main())
"""


def test_a_template_that_fails_to_spawn_does_not_kill_the_parent() -> None:
    """When ``Popen`` fails for a template (its workspace, the cwd, is missing; EAGAIN at
    the process limit, which a compromised worker can reach by forking), ``pid`` stays 0
    but ``_Template._popen`` has registered the control socket's reader anyway. The peer
    end is closed, so the socket reads EOF at once; ``_on_control`` calls ``_kill_now``,
    which runs ``os.killpg(0, SIGKILL)``: SIGKILL to the parent's own process group.

    Run in a session of its own, so only the scenario's process group is at stake."""
    proc = subprocess.run(
        [sys.executable, "-c", _SCENARIO],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert "call failed: execution" in proc.stdout, (proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0 and "parent alive" in proc.stdout, (
        f"the agent process was killed (returncode {proc.returncode}) after one sandboxed "
        f"call in a missing workspace: {proc.stdout!r}"
    )


async def test_a_group_recovers_after_its_template_failed_to_spawn(
    tmp_path: Path, no_killpg_0: list[int]
) -> None:
    """A template whose ``Popen`` failed never gets an exit status, so its ``alive`` stays
    True and ``retired`` False: ``_Group._template`` keeps returning it, and every later
    first call of the group fails with "the sandbox worker template is gone", even once
    the cause is gone (the workspace is back). A worker started on its own (before
    91d939a, and under bubblewrap) recovers on the next run."""
    ws = tmp_path / "ws"
    await _fail_a_first_call(ws)
    ws.mkdir()  # the workspace is back
    await asyncio.sleep(0.2)
    async with _dispatcher(ws, "run-b") as b:
        result = await _call(b, "recall")
    assert result.ok, f"the group stays broken after a failed template start: {result.content}"


async def test_a_failed_template_start_leaves_no_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_killpg_0: list[int]
) -> None:
    """``_Group.assign`` makes the worker's Command (``mkdtemp``: its home folder) before
    ``_template()``; when the template fails to start, the worker is never spawned and
    nothing removes its home (the template's own home is removed)."""
    homes = tmp_path / "homes"
    homes.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(homes))  # the parent's mkdtemp
    ws = tmp_path / "ws"
    await _fail_a_first_call(ws)
    await close_pool()
    for _ in range(40):
        if not list(homes.glob("agent-worker-home-*")):
            return
        await asyncio.sleep(0.05)
    left = sorted(p.name for p in homes.glob("agent-worker-home-*"))
    pytest.fail(f"home folders left behind after a failed template start: {left}")


# --- a template retired while a fork is in flight ----------------------------------------


async def test_a_crash_in_one_run_does_not_fail_another_runs_first_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A's worker crashes (a malicious query, or killed at a call's timeout) while run
    B's first call is forking its worker from the same template. ``worker_exited`` retires
    the template and, seeing no worker of it (B's is added to ``workers`` only once the
    fork is answered), kills it: B's fork in flight fails with "the sandbox worker template
    died", although B has nothing to do with A. Before 91d939a B got a worker regardless.

    The wrapper pins the race: A's worker dies just before B's fork request is sent and the
    loop is busy for 0.5 s meanwhile (a loaded service), so the template reports A's exit
    before it answers B's fork."""
    ws = tmp_path / "ws"
    ws.mkdir()
    async with _dispatcher(ws, "run-a") as a:
        assert (await _call(a, "remember", value="alpha")).ok
        crashed = a.worker._worker
        real_fork = _pool._Template.fork

        async def fork(self: Any, worker: Any) -> Any:
            if crashed.alive:
                os.kill(crashed.pid, signal.SIGKILL)
                time.sleep(0.5)
            return await real_fork(self, worker)

        monkeypatch.setattr(_pool._Template, "fork", fork)
        async with _dispatcher(ws, "run-b") as b:
            result = await asyncio.wait_for(_call(b, "recall"), 30)
    assert result.ok, f"run B's first call failed because run A's worker crashed: {result.content}"


# --- a fork whose worker dies before its pid is read ------------------------------------


async def test_a_retired_template_stops_even_after_a_failed_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_Template.fork`` adds the worker to ``workers`` before ``_Worker._spawn`` reads its
    pid; when that fails (the worker died and was reaped at once: a crash, the OOM killer),
    the worker never gets an exit watcher, so ``worker_exited`` is never called for it. Its
    template keeps a ghost worker: once retired (here: its other worker crashes), it never
    stops, and lives on with no worker until the pool closes (one pre-warmed process per
    occurrence, for the service's life)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    real_pidfd_pid = _pool.pidfd_pid

    def late_pidfd_pid(pidfd: int) -> int:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)  # the new worker dies at once
        for _ in range(100):  # ... and is reaped by its template before its pid is read
            with contextlib.suppress(_pool.ToolExecutionError):
                real_pidfd_pid(pidfd)
                time.sleep(0.05)
                continue
            break
        return real_pidfd_pid(pidfd)

    async with _dispatcher(ws, "run-a") as a:
        assert (await _call(a, "remember", value="alpha")).ok
        template = a.worker._group.template
        monkeypatch.setattr(_pool, "pidfd_pid", late_pidfd_pid)
        async with _dispatcher(ws, "run-b") as b:  # a second worker of the same template
            failed = await _call(b, "recall")
            assert failed.error == "execution", failed.content  # precondition
        monkeypatch.setattr(_pool, "pidfd_pid", real_pidfd_pid)
        assert (await _call(a, "die")).error == "execution"  # the template retires
        assert template.retired  # precondition
    for _ in range(60):
        if not template.alive and not running(template.pid):
            return
        await asyncio.sleep(0.05)
    pytest.fail(
        f"the retired template (pid {template.pid}) outlives every worker of it; it still "
        f"counts {len(template.workers)} worker(s)"
    )
