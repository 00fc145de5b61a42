"""Runs started over HTTP: each drives :meth:`agent.Agent.stream` — no loop of its own.

:class:`RunManager` turns requests into runs of the task's agent and their events into
stored, numbered events (:class:`~agent.serve._hub.EventHub`). Everything another replica
needs is in the database: the job row (:mod:`agent.serve._jobs`), the run row, the
checkpoints, the events. So any replica can read, stream, approve or cancel any run:

- approve: a paused run has no owner; the replica that gets the approval claims it (one
  conditional update) and continues it with the decisions;
- cancel: the owner stops it at once; another replica sets the job's ``cancel_requested``
  bit, which the owner reads within ``tick_s`` (or, if the run has no live owner, the
  replica that would take it over);
- takeover: each replica renews the leases of the runs it owns; a run whose lease ran
  out, or whose owner died on this host (``kill -9``), is claimed by a live replica and
  resumed from its checkpoint, without repeating completed tool calls (their results
  are in the store under idempotency keys);
- drain (SIGTERM): no new runs; runs stop at their next step boundary (at most
  ``drain_s``), are marked ``interrupted`` and released, so a restart or another replica
  resumes them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from agent._io import io, io_soon
from agent.errors import AgentError, ConfigError, error_kind
from agent.events import Final, RunError, TextDelta, to_dict
from agent.serve._catalog import TaskCatalog, narrow
from agent.serve._errors import HTTPError, scrub
from agent.serve._hub import EventHub
from agent.serve._jobs import Job, JobStore, idempotency_hash
from agent.serve._models import InlineTask, RunBody, RunOptions
from agent.types import RunResult, RunStatus, Usage

__all__ = ["MAX_TAKEOVERS", "RunManager", "merge_text", "public"]

_log = logging.getLogger(__name__)
MAX_TAKEOVERS = 3
"""A run whose process died (or stopped renewing its lease) is resumed at most this many
times in a row without progress (a step or a tool result after a resume clears the
count, so the runs beside one that kills its process are not blamed); the next death
ends it (status ``error``), so a run that kills its process cannot take every replica
down in turn."""


class RunManager:
    """Starts, continues, cancels and takes over runs; see the module docstring."""

    def __init__(
        self,
        catalog: TaskCatalog,
        records: Any,
        jobs: JobStore,
        hub: EventHub,
        metrics: Any,
        *,
        max_active_per_token: int,
        drain_s: float = 10.0,
        tick_s: float = 0.5,
    ) -> None:
        self.catalog, self.jobs, self.hub, self.metrics = catalog, jobs, hub, metrics
        self.records, self.events = records, hub.events
        self.max_active, self.drain_s, self.tick_s = max_active_per_token, drain_s, tick_s
        self.draining = False
        self.text_window_s = 0.02
        """Text deltas of a step arriving within this long of the first are sent as one."""
        self._running: dict[str, _Running] = {}  # run_id -> a run in progress here
        self._active: dict[str, int] = {}  # identity -> runs in progress here

    @property
    def running(self) -> int:
        """How many runs are in progress on this replica."""
        return len(self._running)

    # ---- starting --------------------------------------------------------------------

    async def submit(
        self, body: RunBody, identity: str, key: str | None, request: Any = None
    ) -> tuple[str, bool]:
        """Start a run (or find the one an earlier request with ``key`` started):
        ``(run_id, created)``. ``request``: what the client sent, as JSON (default: the
        body's fields it set); a key reused with another request is a 422."""
        self._refuse_if_draining()
        if key is not None and not 0 < len(key) <= 255:
            raise HTTPError(400, "invalid_request", "Idempotency-Key: 1 to 255 characters")
        inline = body.task if isinstance(body.task, InlineTask) else None
        name = inline.extends if inline else str(body.task)
        task = self.catalog.get(name)
        agent = narrow(await self.catalog.agent(name), task, body.options, inline)
        text = body.input if body.input is not None else (inline.input if inline else None)
        try:
            text = text if text is not None else task.render_input(body.vars)
        except ConfigError as exc:
            raise HTTPError(422, "invalid_request", str(exc)) from None
        # The fields set, not the defaults: a replica of another version reads it too.
        sent = body.model_dump(mode="json", exclude_defaults=True)
        spec = {
            "input": text,
            "body": sent,
            "request": _digest(sent if request is None else request),
        }
        idem = idempotency_hash(identity, key) if key else None
        if idem and (earlier := await io(self.jobs.by_idempotency, idem)):
            return _same_request(earlier, spec), False
        await self._check_thread(body.thread_id, identity, name)
        if self._active.get(identity, 0) >= self.max_active:
            raise HTTPError(
                429, "too_many_runs", "too many runs in progress for this token",
                {"Retry-After": "1"},
            )  # fmt: skip
        job = Job(
            run_id=_new_run_id(),
            identity=identity,
            task=name,
            spec=spec,
            state="active",
            created_at=time.time(),
            thread_id=body.thread_id,
            idem_key=idem,
        )
        self._count(identity, +1)  # held while the row is written: a burst sees it
        try:
            stored = await io(self.jobs.insert, job)
        finally:
            self._count(identity, -1)
        if stored is not job:  # a request with the same key was first
            return _same_request(stored, spec), False
        self._launch(job, agent, text, body.options.approve, fresh=True)
        return job.run_id, True

    def _refuse_if_draining(self) -> None:
        """503 for what would start a run here while this replica shuts down."""
        if self.draining:
            raise HTTPError(503, "draining", "server is shutting down", {"Retry-After": "5"})

    async def _check_thread(self, thread_id: str | None, identity: str, task: str) -> None:
        if thread_id is None:
            return
        thread = await io(self.jobs.thread, thread_id)
        if thread is None or thread["identity"] != identity:
            raise HTTPError(404, "thread_not_found", f"no thread {thread_id!r}")
        if thread["task"] != task:
            raise HTTPError(
                409, "thread_task", f"thread {thread_id!r} belongs to task {thread['task']!r}"
            )

    def _launch(
        self, job: Job, agent: Any, text: str | None, approve: Any, fresh: bool = False
    ) -> None:
        """Run ``job`` here (``fresh``: a new run, with no events yet)."""
        task = asyncio.create_task(self._execute(job, agent, text, approve, fresh))
        self._running[job.run_id] = _Running(job, task)
        self._count(job.identity, +1)
        task.add_done_callback(lambda done: self._done(job, done))

    def _count(self, identity: str, change: int) -> None:
        """Runs in progress here for ``identity`` (the per-token limit) go up or down."""
        count = self._active.get(identity, 0) + change
        if count:
            self._active[identity] = count
        else:
            del self._active[identity]

    def _done(self, job: Job, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            _log.error("run %s: bookkeeping failed", job.run_id, exc_info=task.exception())
        self._running.pop(job.run_id, None)
        self.hub.close_run(job.run_id)
        self._count(job.identity, -1)

    async def _agent_for(self, job: Job) -> Any:
        """The job's agent, rebuilt from its request (on any replica)."""
        body = RunBody.model_validate(job.spec["body"])
        inline = body.task if isinstance(body.task, InlineTask) else None
        base = await self.catalog.agent(job.task)
        return narrow(base, self.catalog.get(job.task), body.options or RunOptions(), inline)

    # ---- running ---------------------------------------------------------------------

    async def _execute(
        self, job: Job, agent: Any, text: str | None, approve: Any, fresh: bool
    ) -> None:
        run_id, final, here = job.run_id, None, self._running[job.run_id]
        # taken from a process that died: progress clears that (it was not this run's fault)
        suspect = not fresh and (job.owner is not None or job.takeovers > 0)
        seq = 0 if fresh else await self.hub.last_seq(run_id)
        self.hub.open_run(run_id, seq + 1)
        started = time.monotonic()
        try:
            if here.stop_reason is None:  # else stopped before it started: settled as such
                here.phase = "running"
                stream = agent.stream(
                    text, thread_id=job.thread_id, run_id=run_id, approve=_approver(approve)
                )
                async with contextlib.aclosing(merge_text(stream, self.text_window_s)) as events:
                    async for event in events:
                        seq += 1
                        self.hub.emit(run_id, seq, public(event))
                        self.metrics.observe(event)
                        if suspect and event.kind in ("step", "tool_result"):
                            suspect = False
                            io_soon(self.jobs.clear_takeovers, run_id)
                        if isinstance(event, Final):
                            final = event.result
                        elif self.draining and event.kind in ("step", "tool_result"):
                            here.stop_reason = "drain"
                            break
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # refused before it started (a thread's unfinished run…)
            if not isinstance(exc, AgentError):
                _log.exception("run %s failed to start", run_id)
            final = self._failed(run_id, seq, exc)
        here.phase = "settling"
        await self._settle(job, final, seq, time.monotonic() - started)

    def _failed(self, run_id: str, seq: int, exc: Exception) -> RunResult:
        message = scrub(str(exc) or type(exc).__name__)
        kind = error_kind(exc)
        self.hub.emit(run_id, seq + 1, to_dict(RunError(run_id, kind, type(exc).__name__, message)))
        result = RunResult(run_id, "error", error=message, error_kind=kind)
        self.hub.emit(run_id, seq + 2, public(Final(result)))
        self.metrics.observe(Final(result))
        return result

    async def _settle(self, job: Job, final: RunResult | None, seq: int, seconds: float) -> None:
        """Record how the run left this replica: ended, paused, cancelled or released."""
        reason = self._running[job.run_id].stop_reason
        if final is not None:
            state = "paused" if final.status == "awaiting_approval" else "ended"
            self.metrics.run_seconds.observe(seconds)
            await io(self.jobs.set_state, job.run_id, state, final.error)
        elif reason == "cancel":
            await self._mark_cancelled(job.run_id, seq)
        else:  # draining or shutting down: resumable at once, here after a restart or elsewhere
            await io(self.jobs.release, job.run_id)

    async def _mark_cancelled(self, run_id: str, seq: int) -> None:
        await self._mark_stopped(run_id, seq, "cancelled")
        await io(self.jobs.set_state, run_id, "cancelled")

    async def _mark_stopped(
        self, run_id: str, seq: int, status: RunStatus, error: str | None = None
    ) -> None:
        """End a run no agent runs: its record, and a ``final`` event after number ``seq``."""
        record = await io(self.records.get, run_id)
        if record is not None:
            fields = {"error": error} if error else {}
            await io(self.records.update, run_id, status=status, finished_at=time.time(), **fields)
        result = RunResult(
            run_id,
            status,
            thread_id=record.thread_id if record else None,
            steps=record.steps if record else 0,
            tool_calls=record.tool_calls if record else 0,
            usage=record.usage if record else Usage(),
            error=error,
            error_kind="internal" if error else None,
        )
        self.hub.emit(run_id, seq + 1, public(Final(result)))
        self.metrics.observe(Final(result))

    # ---- control ---------------------------------------------------------------------

    async def job(self, run_id: str, identity: str) -> Job:
        """The stored job of ``identity``'s run ``run_id``; 404 for anyone else's."""
        return _owned(await io(self.jobs.get, run_id), run_id, identity)

    async def check_access(self, run_id: str, identity: str) -> None:
        """404 unless ``run_id`` is a run of ``identity``: as :meth:`job`, without a read
        of the store for a run running here (a job's identity never changes)."""
        here = self._running.get(run_id)
        _owned(here.job if here else await io(self.jobs.get, run_id), run_id, identity)

    async def approve(self, run_id: str, identity: str, decision: Any) -> None:
        """Continue a paused run with ``decision`` (a bool, or ``{call_id: bool}``)."""
        self._refuse_if_draining()
        job = await self.job(run_id, identity)
        if job.state != "paused" or not await io(self.jobs.claim, job, "paused"):
            raise HTTPError(409, "not_awaiting_approval", f"run {run_id!r} is not waiting")
        agent = await self._agent_for(job)
        self._launch(job, agent, None, lambda request: _decide(decision, request))

    async def cancel(self, run_id: str, identity: str) -> str:
        """Stop a run wherever it runs; ``cancelled`` or ``cancelling`` (another replica)."""
        job = await self.job(run_id, identity)
        if (here := self._running.get(run_id)) is not None:
            self._stop(run_id, "cancel")
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(here.task), 10)
            # As it left: cancelled; or it ended, paused or was released before the stop.
            job = await self.job(run_id, identity)
            if job.state == "cancelled":
                return "cancelled"
        if job.state in ("ended", "cancelled"):
            raise HTTPError(409, "run_ended", f"run {run_id!r} has already ended")
        orphaned = job.state == "active" and (job.lease_until < time.time() or job.owner_dead())
        states = ("paused", "active") if orphaned else ("paused",)
        if await self._cancel_unowned(run_id, states):
            return "cancelled"
        await io(self.jobs.request_cancel, run_id)
        return "cancelling"

    async def _cancel_unowned(self, run_id: str, states: tuple[str, ...]) -> bool:
        """Cancel a run that no replica runs, if its job is in one of ``states``."""
        if not await io(self.jobs.cancel_if, run_id, states):
            return False
        await self._mark_cancelled(run_id, await self.hub.last_seq(run_id))
        return True

    def _stop(self, run_id: str, reason: str) -> None:
        """Stop a run running here: cancel its agent, or keep it from starting. Nothing
        once it records how it ended (cancelling that would lose it), nor once something
        else stops it (a drain after a cancel must not release the cancelled run)."""
        here = self._running.get(run_id)
        if here is None or here.stop_reason is not None or here.phase == "settling":
            return
        here.stop_reason = reason
        if here.phase == "running":
            here.task.cancel()

    # ---- housekeeping ----------------------------------------------------------------

    async def maintain(self) -> None:
        """Until cancelled: renew leases, act on cancel requests, take over orphans."""
        beat = 0.0
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                if time.monotonic() - beat > self.jobs.lease_s / 3:
                    beat = time.monotonic()
                    await io(self.jobs.heartbeat)
                for run_id in await io(self.jobs.cancel_requests):
                    self._stop(run_id, "cancel")
                if not self.draining:
                    await self.adopt_orphans()
            except Exception:
                _log.exception("housekeeping failed; trying again")

    async def adopt_orphans(self) -> None:
        """Resume runs that no live replica runs (a crash, an expired lease, a drain), or
        cancel them if a client asked to while nobody ran them."""
        for job in await io(self.jobs.orphans):
            if job.cancel_requested:  # asked while no replica ran it (released, owner died)
                await self._cancel_unowned(job.run_id, ("active",))
            elif job.owner is not None and job.takeovers >= MAX_TAKEOVERS:
                error = (
                    f"the process running this run died (or stopped renewing its lease) "
                    f"{job.takeovers + 1} times in a row, each time before the run made "
                    f"progress; it is not resumed again"
                )
                if await io(self.jobs.fail_if, job, error):
                    _log.error("run %s: %s", job.run_id, error)
                    await self._mark_stopped(
                        job.run_id, await self.hub.last_seq(job.run_id), "error", error
                    )
            elif await io(self.jobs.claim, job, "active"):
                _log.info("resuming run %s", job.run_id)
                try:
                    agent = await self._agent_for(job)
                except HTTPError as exc:  # its task is no longer served here
                    await io(self.jobs.set_state, job.run_id, "ended", exc.message)
                    continue
                approve = RunBody.model_validate(job.spec["body"]).options.approve
                self._launch(job, agent, job.spec["input"], approve)

    async def drain(self) -> None:
        """Stop taking runs; let running ones reach a step boundary, then release them."""
        self.draining = True
        if self._running:
            await asyncio.wait([r.task for r in self._running.values()], timeout=self.drain_s)
        for run_id in list(self._running):
            self._stop(run_id, "drain")
        if self._running:
            await asyncio.wait([r.task for r in self._running.values()], timeout=5)


@dataclasses.dataclass(slots=True)
class _Running:
    """A run in progress here: its job, the task driving it, why it is being stopped
    (``"cancel"``, ``"drain"``; None while nothing stops it), and how far it is:
    ``"starting"`` (a stop keeps its agent from starting), ``"running"`` (a stop cancels
    it), ``"settling"`` (its outcome is being recorded: a stop changes nothing)."""

    job: Job
    task: asyncio.Task[None]
    stop_reason: str | None = None
    phase: Literal["starting", "running", "settling"] = "starting"


async def merge_text(events: Any, window_s: float) -> AsyncIterator[Any]:
    """``events`` with consecutive text deltas of one step merged into one ``TextDelta``
    while they arrive within ``window_s`` of the first: a token-by-token stream costs one
    stored row and one SSE event per window, not per token. Other events pass at once
    (pending text first), so order is kept. Closing this closes ``events``."""
    pending, since = None, 0.0
    try:
        async for event in events:
            if not isinstance(event, TextDelta):
                if pending is not None:
                    yield pending
                    pending = None
                yield event
                continue
            now = time.monotonic()
            if pending is not None and pending.step == event.step:
                pending = TextDelta(event.step, pending.text + event.text)
            else:
                if pending is not None:
                    yield pending
                pending, since = event, now
            if now - since >= window_s:
                yield pending
                pending = None
        if pending is not None:
            yield pending
    finally:
        await events.aclose()


def public(event: Any) -> dict[str, Any]:
    """An event's JSON form for clients: no host paths (trace files), secrets scrubbed."""
    data = to_dict(event)
    result = data.get("result")
    if isinstance(result, dict):
        result.pop("trace_path", None)
        if result.get("error"):
            result["error"] = scrub(result["error"])
    for key in ("message", "model_url"):
        if isinstance(data.get(key), str):
            data[key] = scrub(data[key])
    generation = data.get("generation")
    if isinstance(generation, dict):
        generation.pop("prompt", None)  # the whole prompt each step: in the trace, not here
        if isinstance(generation.get("url"), str):
            generation["url"] = scrub(generation["url"])
    return data


def _digest(request: Any) -> str:
    """What identifies a client's request: the same JSON, however its keys are ordered."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _same_request(earlier: Job, spec: dict[str, Any]) -> str:
    """The run an idempotency key started, when this request is the one that started it
    (a job of an earlier version, which kept no digest, is taken to be); else the 422 of a
    key reused for another request."""
    if earlier.spec.get("request", spec["request"]) == spec["request"]:
        return earlier.run_id
    raise HTTPError(
        422, "idempotency_key_reused",
        "Idempotency-Key: already used for a different request (use a new key per request; "
        "the same request again gets its run)",
    )  # fmt: skip


def _owned(job: Job | None, run_id: str, identity: str) -> Job:
    """``job`` if it is ``identity``'s; else the 404 that does not tell it exists."""
    if job is None or job.identity != identity:
        raise HTTPError(404, "run_not_found", f"no run {run_id!r}")
    return job


def _approver(mode: Any) -> Any:
    return None if mode == "pause" else mode


def _decide(decision: Any, request: Any) -> Any:
    if isinstance(decision, bool):
        return decision
    return {call.id: bool(decision.get(call.id, False)) for call in request.calls}


def _new_run_id() -> str:
    from agent.api import _new_run_id as new_id

    return new_id()
