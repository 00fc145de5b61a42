"""One sample: run the case through :class:`agent.Agent`, retry infrastructure failures,
run the checks, and shape the record that ``samples.jsonl`` keeps.

The run is the engine's own: ``Agent.stream`` and its typed events, nothing else. A
sample's events are kept as :func:`agent.events.to_dict` writes them (text deltas are in
each step's raw output, and prompts are left out: they are the transcript rendered,
which ``config.json``'s prompt-template hash pins).

Infrastructure errors — the server unreachable, 5xx after the backend's own retries, a
stream cut off — are the server's fault, not the model's (as tau-bench treats API
errors): the sample is run again from scratch, up to ``retries`` times, and if it still
fails it is recorded as ``infra_error``, outside every pass rate. A context overflow is
a model/configuration failure and is scored.

>>> is_infra(RunResult("r", "error", error_kind="backend_unavailable"))
True
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.events import Final, TextDelta, to_dict
from agent.types import RunResult, Usage
from evals.checks import CheckRegistry, SampleView
from evals.suite import Case

__all__ = ["Sample", "SampleRun", "is_infra", "run_sample"]

_INFRA_KINDS = ("backend_unavailable", "backend")
_NOT_INFRA_TYPES = ("ContextLengthExceeded",)


@dataclass
class Sample:
    """One case × trial, planned: its rendered turns, seed, and where it runs."""

    case: Case
    trial: int
    index: int
    key: str
    token: str
    turns: list[str]
    seed: int
    category: str
    agent_key: str
    isolate: bool
    setup_sql: list[str] = field(default_factory=list)
    database: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    """The variables its input and script were rendered with."""


@dataclass
class SampleRun:
    """What one attempt produced."""

    result: RunResult
    events: list[Any]
    latency_s: float
    workspace: Path | None = None


def is_infra(result: RunResult) -> bool:
    """Whether a run ended because of the server, not the model."""
    return result.error_kind in _INFRA_KINDS and result.error_type not in _NOT_INFRA_TYPES


async def run_sample(ctx: Any, s: Sample) -> dict[str, Any]:
    """Run ``s`` (retrying infrastructure errors), check it, return its record."""
    infra: list[dict[str, Any]] = []
    started = time.time()
    while True:
        run = await _attempt(ctx, s, len(infra))
        if not is_infra(run.result) or len(infra) >= ctx.retries:
            break
        infra.append(_infra_entry(run.result, len(infra)))
        _cleanup(run.workspace)
        ctx.recorder_take(s.token)
        await asyncio.sleep(ctx.retry_backoff_s * 2 ** (len(infra) - 1))
    try:
        http = ctx.recorder_take(s.token)
        if is_infra(run.result):
            infra.append(_infra_entry(run.result, len(infra)))
            checks: list[dict[str, Any]] = []
        else:
            checks = await _check(ctx, s, run, http)
    finally:
        _cleanup(run.workspace)
    return _record(s, run, checks, infra, http, started)


async def _attempt(ctx: Any, s: Sample, attempt: int) -> SampleRun:
    workspace = await _prepare_workspace(ctx, s) if s.isolate else None
    agent = ctx.agent_for(s, workspace)
    events: list[Any] = []
    results: list[RunResult] = []
    t0 = time.perf_counter()
    thread = None
    try:
        async with asyncio.timeout(ctx.timeout_s):
            for turn, text in enumerate(s.turns):
                run_id = f"{ctx.eval_id}_{s.case.id}_{s.trial}_{attempt}_{turn}"
                thread = thread or run_id
                async for event in agent.stream(
                    text, run_id=run_id, thread_id=thread, approve=ctx.approve
                ):
                    if not isinstance(event, TextDelta):
                        events.append(event)
                    if isinstance(event, Final):
                        results.append(event.result)
                if results[-1].status != "done":
                    break
    except TimeoutError:
        results.append(
            RunResult(
                thread or s.key,
                "error",
                error=f"the sample took longer than its timeout ({ctx.timeout_s:g} s)",
                error_kind="limit",
                error_type="CaseTimeout",
            )
        )
    return SampleRun(_combined(results), events, time.perf_counter() - t0, workspace)


def _combined(results: list[RunResult]) -> RunResult:
    """One result for a conversation's turns: the last turn's, with counters summed."""
    last = results[-1]
    usage = sum((r.usage for r in results), Usage())
    return dataclasses.replace(
        last,
        steps=sum(r.steps for r in results),
        tool_calls=sum(r.tool_calls for r in results),
        usage=usage,
    )


async def _prepare_workspace(ctx: Any, s: Sample) -> Path:
    """A fresh copy of the case's workspace (and its setup SQL run), for one attempt."""
    source = ctx.workspace_of(s)
    target = Path(tempfile.mkdtemp(prefix="agent-eval-")) / "workspace"

    def copy() -> None:
        shutil.copytree(source, target, symlinks=True)
        if s.setup_sql:
            import duckdb

            con = duckdb.connect(str(target / (s.database or "eval.duckdb")))
            try:
                con.execute(f"SET file_search_path = '{target}'")
                for statement in s.setup_sql:
                    con.execute(statement)
            finally:
                con.close()

    await asyncio.to_thread(copy)
    return target


def _cleanup(workspace: Path | None) -> None:
    if workspace is not None:
        shutil.rmtree(workspace.parent, ignore_errors=True)


async def _check(ctx: Any, s: Sample, run: SampleRun, http: dict[str, Any]) -> list[dict[str, Any]]:
    workspace = run.workspace or ctx.workspace_of(s)
    view = SampleView(
        case_id=s.case.id,
        trial=s.trial,
        input=s.turns[-1],
        result=run.result,
        events=run.events,
        workspace=workspace,
        database=workspace / s.database if s.database else None,
        http=http,
        latency_s=run.latency_s,
    )
    registry: CheckRegistry = ctx.checks
    items = list(s.case.expect)
    if not any("status" in item for item in items):
        items.insert(0, {"status": "done"})  # a run that did not finish never passes
    return [dataclasses.asdict(await registry.run(item, view)) for item in items]


def _infra_entry(result: RunResult, attempt: int) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "error_kind": result.error_kind,
        "error_type": result.error_type,
        "message": result.error,
    }


def _record(
    s: Sample,
    run: SampleRun,
    checks: list[dict[str, Any]],
    infra: list[dict[str, Any]],
    http: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    infra_error = is_infra(run.result)
    passed = None if infra_error else all(c["passed"] for c in checks)
    failed = [c for c in checks if not c["passed"]]
    events = [_event_dict(e) for e in run.events]
    return {
        "sample": s.key,
        "case_id": s.case.id,
        "trial": s.trial,
        "seed": s.seed,
        "category": s.category,
        "tags": list(s.case.tags),
        "input": s.turns[0] if len(s.turns) == 1 else s.turns,
        "status": "infra_error" if infra_error else ("passed" if passed else "failed"),
        "passed": passed,
        "error_type": (infra[-1]["error_type"] if infra_error else None)
        or (failed[0]["error_type"] if failed else None),
        "failed_checks": [c["check"] for c in failed],
        "checks": checks,
        "result": dataclasses.asdict(run.result),
        **_counters(run, events),
        "attempts": len(infra) + (0 if infra_error else 1),
        "infra": infra,
        "http": {k: [dataclasses.asdict(r) for r in v] for k, v in http.items()},
        "started_at": started,
        "events": events,
    }


def _event_dict(event: Any) -> dict[str, Any]:
    data = to_dict(event)
    if data["kind"] == "step":
        data["generation"].pop("prompt", None)
    return data


def _counters(run: SampleRun, events: list[dict[str, Any]]) -> dict[str, Any]:
    steps = [e["generation"] for e in events if e["kind"] == "step"]
    results = [e["result"] for e in events if e["kind"] == "tool_result"]
    usage = run.result.usage
    return {
        "latency_s": round(run.latency_s, 6),
        "ttft_s": steps[0]["timings"]["ttft_s"] if steps else None,
        "steps": run.result.steps,
        "tool_calls": run.result.tool_calls,
        "calls_parsed": sum(len(g["tool_calls"]) for g in steps),
        "calls_malformed": sum(len(g["errors"]) for g in steps),
        "repairs": sum(1 for e in events if e["kind"] == "repair"),
        "tool_errors": sum(1 for r in results if r["status"] == "error"),
        "tool_results": len(results),
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "answer": run.result.answer,
    }
