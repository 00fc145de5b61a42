"""RunManager against a real job store, with a scripted agent: a run stopped (cancel,
drain) just before it starts or just as it ends is recorded as what it was told.

The I/O thread is held (``_held``) to put each stop at the exact moment of the race.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent._db import SqliteDatabase
from agent._io import io
from agent.events import Final, ToolResultEvent
from agent.runs import RunStore
from agent.serve._errors import HTTPError
from agent.serve._hub import EventHub
from agent.serve._jobs import Job, JobStore
from agent.serve._metrics import Metrics
from agent.serve._runner import MAX_TAKEOVERS, RunManager
from agent.types import RunResult, ToolResult
from tests.agent._io_thread import hold_io_thread

ME = "tok"


class _Agent:
    """Streams one ``Final`` (``status``) once ``go`` is set."""

    def __init__(self, status: str = "done") -> None:
        self.status, self.started, self.go = status, asyncio.Event(), asyncio.Event()

    async def stream(self, text: Any, *, run_id: str, **kw: Any) -> AsyncIterator[Any]:
        self.started.set()
        await self.go.wait()
        yield Final(RunResult(run_id, self.status))


@contextmanager
def _held() -> Iterator[None]:
    """Calls queued inside this wait until it ends (the I/O thread is busy)."""
    release = hold_io_thread()
    try:
        yield
    finally:
        release.set()


async def _settled() -> None:
    """Let every task go as far as it can without the I/O thread."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def manager(tmp_path: Path) -> RunManager:
    store = RunStore(SqliteDatabase(tmp_path / "serve.db"))
    jobs = JobStore(store.db, "replica-a", lease_s=30)
    hub = EventHub(store)
    return RunManager(None, store, jobs, hub, Metrics(), max_active_per_token=10, drain_s=0)


async def _job(manager: RunManager) -> Job:
    job = Job(
        run_id=f"run_{time.time_ns()}",
        identity=ME,
        task="t",
        spec={"input": "hi", "body": {"task": "t"}},  # as submit stores it: the fields set
        state="active",
        created_at=time.time(),
    )
    await io(manager.jobs.insert, job)
    return job


async def _finals(manager: RunManager, run_id: str) -> list[str]:
    await manager.hub.flush()
    stored = await io(manager.events.events, run_id, 0)
    return [e.data for e in stored if e.kind == "final"]


async def test_a_run_stopped_before_it_starts_is_still_recorded(manager: RunManager) -> None:
    """A continued run (approved, taken over) first reads its last event number; a drain
    that stops it then releases it, instead of leaving it owned here."""
    job, agent = await _job(manager), _Agent()
    with _held():
        manager._launch(job, agent, None, "pause", fresh=False)  # reads its last event first
        await _settled()  # awaiting its last event number
        drain = asyncio.ensure_future(manager.drain())
        await _settled()
    await asyncio.wait_for(drain, 10)
    assert manager.running == 0 and not agent.started.is_set()
    stored = await io(manager.jobs.get, job.run_id)
    assert stored.state == "active" and stored.owner is None  # released: resumable at once


async def test_a_cancel_before_the_run_starts_cancels_it(manager: RunManager) -> None:
    """A cancel read in the same batch as an approval's claim reaches the run before its
    first step: it is still recorded as cancelled."""
    job, agent = await _job(manager), _Agent()
    with _held():
        cancel = asyncio.ensure_future(manager.cancel(job.run_id, ME))
        await _settled()  # its read of the job is queued
        manager._launch(job, agent, None, "pause", fresh=False)  # reads its last event first
        await _settled()
    assert await asyncio.wait_for(cancel, 10) == "cancelled"
    assert (await io(manager.jobs.get, job.run_id)).state == "cancelled"
    assert len(await _finals(manager, job.run_id)) == 1
    assert manager.running == 0 and not agent.started.is_set()


async def test_a_run_recording_its_end_is_not_cut_short_by_a_drain(manager: RunManager) -> None:
    job, agent = await _job(manager), _Agent("done")
    manager._launch(job, agent, None, "pause", fresh=True)
    await asyncio.wait_for(agent.started.wait(), 10)
    with _held():
        agent.go.set()
        await _settled()  # its final is in; its state write waits for the I/O thread
        drain = asyncio.ensure_future(manager.drain())
        await _settled()
    await asyncio.wait_for(drain, 10)
    stored = await io(manager.jobs.get, job.run_id)
    assert stored.state == "ended"  # not left active (and later resumed elsewhere)


async def test_a_cancel_as_the_run_pauses_is_not_reported_for_a_paused_run(
    manager: RunManager,
) -> None:
    """The run pauses while the cancel is on its way: the reply and the job agree."""
    job, agent = await _job(manager), _Agent("awaiting_approval")
    manager._launch(job, agent, None, "pause", fresh=True)
    await asyncio.wait_for(agent.started.wait(), 10)
    with _held():
        cancel = asyncio.ensure_future(manager.cancel(job.run_id, ME))
        await _settled()  # its read of the job is queued before the run's state write
        agent.go.set()
        await _settled()
    status = await asyncio.wait_for(cancel, 10)
    assert status == "cancelled"
    assert (await io(manager.jobs.get, job.run_id)).state == "cancelled"


async def test_a_cancel_as_the_run_ends_is_refused(manager: RunManager) -> None:
    job, agent = await _job(manager), _Agent("done")
    manager._launch(job, agent, None, "pause", fresh=True)
    await asyncio.wait_for(agent.started.wait(), 10)
    with _held():
        cancel = asyncio.ensure_future(manager.cancel(job.run_id, ME))
        await _settled()
        agent.go.set()
        await _settled()
    with pytest.raises(HTTPError) as refused:
        await asyncio.wait_for(cancel, 10)
    assert refused.value.status == 409
    assert (await io(manager.jobs.get, job.run_id)).state == "ended"


async def test_a_drain_after_a_cancel_does_not_release_the_cancelled_run(
    manager: RunManager,
) -> None:
    job, agent = await _job(manager), _Agent()
    manager._launch(job, agent, None, "pause", fresh=True)
    await asyncio.wait_for(agent.started.wait(), 10)
    with _held():
        manager._stop(job.run_id, "cancel")  # as maintain does for a cancel asked elsewhere
        await _settled()  # cancelled; recording it waits for the I/O thread
        drain = asyncio.ensure_future(manager.drain())
        await _settled()
    await asyncio.wait_for(drain, 10)
    assert (await io(manager.jobs.get, job.run_id)).state == "cancelled"
    assert len(await _finals(manager, job.run_id)) == 1


async def test_a_cancel_asked_of_a_run_nobody_runs_is_carried_out(manager: RunManager) -> None:
    """The cancel bit was set for its owner, which released the run (a drain) before it
    read it: the replica that would take the run over cancels it instead."""
    job = await _job(manager)
    await io(manager.jobs.request_cancel, job.run_id)
    await io(manager.jobs.release, job.run_id)
    await manager.adopt_orphans()
    assert manager.running == 0  # not resumed
    assert (await io(manager.jobs.get, job.run_id)).state == "cancelled"
    assert [json.loads(f)["result"]["status"] for f in await _finals(manager, job.run_id)] == [
        "cancelled"
    ]


async def test_an_approval_is_refused_while_draining(manager: RunManager) -> None:
    job = await _job(manager)
    await io(manager.jobs.set_state, job.run_id, "paused")
    await manager.drain()
    with pytest.raises(HTTPError) as refused:
        await manager.approve(job.run_id, ME, True)
    assert refused.value.status == 503 and refused.value.headers["Retry-After"]
    assert (await io(manager.jobs.get, job.run_id)).state == "paused"  # for another replica


def _orphan(manager: RunManager, job: Job, takeovers: int) -> None:
    """Make ``job`` a run whose owner died after ``takeovers`` earlier takeovers."""
    exited = subprocess.Popen(["true"])
    exited.wait()  # a pid that is gone
    with manager.jobs.db.tx() as tx:
        tx.execute(
            "UPDATE serve_jobs SET owner = 'replica-x', owner_pid = ?, takeovers = ? "
            "WHERE run_id = ?",
            (exited.pid, takeovers, job.run_id),
        )


async def test_a_run_whose_process_keeps_dying_is_ended_not_resumed_again(
    manager: RunManager, monkeypatch: Any
) -> None:
    """Resumed after each death up to MAX_TAKEOVERS times; the next death ends it with an
    error, so a run that kills its process cannot take every replica down in turn."""
    agent = _Agent()
    monkeypatch.setattr(manager, "_agent_for", lambda job: asyncio.sleep(0, agent))
    job = await _job(manager)
    _orphan(manager, job, MAX_TAKEOVERS - 1)
    await manager.adopt_orphans()
    assert manager.running == 1  # resumed: its last chance
    taken = await io(manager.jobs.get, job.run_id)
    assert (taken.owner, taken.takeovers) == ("replica-a", MAX_TAKEOVERS)
    manager._running[job.run_id].task.cancel()  # this replica dies too
    await asyncio.sleep(0.05)
    manager._running.clear()
    _orphan(manager, job, MAX_TAKEOVERS)
    await manager.adopt_orphans()
    assert manager.running == 0
    ended = await io(manager.jobs.get, job.run_id)
    assert ended.state == "ended" and "4 times in a row" in ended.error
    (final,) = [json.loads(f)["result"] for f in await _finals(manager, job.run_id)]
    assert (final["status"], final["error_kind"]) == ("error", "internal")


async def test_a_run_released_by_a_drain_is_not_counted_as_taken_over(
    manager: RunManager, monkeypatch: Any
) -> None:
    agent = _Agent()
    monkeypatch.setattr(manager, "_agent_for", lambda job: asyncio.sleep(0, agent))
    job = await _job(manager)
    await io(manager.jobs.release, job.run_id)
    await manager.adopt_orphans()
    assert manager.running == 1
    assert (await io(manager.jobs.get, job.run_id)).takeovers == 0
    agent.go.set()


async def test_orphans_checks_each_owner_once_however_many_runs_it_has(
    manager: RunManager, monkeypatch: Any
) -> None:
    """Another worker of this host runs 50 runs: one liveness check a tick, not 50."""
    from agent._owner import Owner

    jobs = [await _job(manager) for _ in range(50)]
    with manager.jobs.db.tx() as tx:  # all owned by a live process: a sibling worker
        tx.execute(
            "UPDATE serve_jobs SET owner = 'replica-b', lease_until = ?", (time.time() + 60,)
        )
    checks: list[Owner] = []
    real = Owner.alive
    monkeypatch.setattr(Owner, "alive", lambda self: checks.append(self) or real(self))
    assert await io(manager.jobs.orphans) == []
    assert len(checks) == 1
    _orphan(manager, jobs[7], 0)  # one of them: its owner died (another pid)
    assert [j.run_id for j in await io(manager.jobs.orphans)] == [jobs[7].run_id]


async def test_progress_after_a_takeover_clears_the_count(
    manager: RunManager, monkeypatch: Any
) -> None:
    """The runs beside one that kills its process are taken over with it each time; the
    first step or tool result they make after a resume shows they are not the cause."""

    class _Progressing(_Agent):
        async def stream(self, text: Any, *, run_id: str, **kw: Any) -> AsyncIterator[Any]:
            yield ToolResultEvent(1, ToolResult("c1", "add", "ok", "3"))
            await self.go.wait()
            yield Final(RunResult(run_id, self.status))

    agent = _Progressing()
    monkeypatch.setattr(manager, "_agent_for", lambda job: asyncio.sleep(0, agent))
    job = await _job(manager)
    _orphan(manager, job, MAX_TAKEOVERS - 1)
    await manager.adopt_orphans()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if (await io(manager.jobs.get, job.run_id)).takeovers == 0:
            break
    assert (await io(manager.jobs.get, job.run_id)).takeovers == 0
    agent.go.set()
