"""The eval runner: every case × trial of a suite through one shared backend, at once.

``await run_suite(suite, EvalOptions(...))`` plans the samples (trial-major, so early
progress already covers every case), starts what they need once — the suite's services,
the recording proxy, the simulated server with :class:`evals.sim_policy.SuitePolicy` when
``simulated`` — and runs them with ``concurrency`` workers. Each sample is one
``Agent.stream`` per user turn (:mod:`evals._execute`); its record is appended to
``samples.jsonl`` as soon as it is checked, and ``summary.json`` is written at the end.

Agents are shared: one per distinct configuration and trial (trial *t* samples with
seed ``suite.seed + t``); compiling one costs ~30 ms, so a sample gets its own only when
it needs its own copy of the workspace (writes allowed, or ``setup_sql``). Their
checkpoints use ``durability="exit"`` in memory: an eval needs no per-step durability,
because resume is per sample — a crash loses the samples in flight (at most
``concurrency``), which ``--resume`` runs again from the start.

>>> EvalOptions().retries
2
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from evals import _setup
from evals._execute import Sample, run_sample
from evals.checks import CheckRegistry
from evals.metrics import summarize
from evals.results import RunFolder, default_root, new_eval_id
from evals.suite import Suite

__all__ = ["EvalOptions", "Progress", "run_suite", "work"]


@dataclass(frozen=True)
class EvalOptions:
    """How to run a suite; ``None`` keeps the suite's own value."""

    trials: int | None = None
    concurrency: int | None = None
    timeout_s: float | None = None
    retries: int = 2
    """Runs again of a sample that hit an infrastructure error."""
    retry_backoff_s: float = 1.0
    limit: int | None = None
    """Run the first N selected cases only."""
    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    model_url: str | None = None
    simulated: bool = False
    """Start the simulated server and answer each case from its script."""
    out: Path | None = None
    """The run folder (default: a new one under ``.agent/evals``)."""
    resume: Path | None = None
    """A run folder to continue."""
    extra_tools: tuple[Any, ...] = ()
    """Tool objects cases may name besides the built-ins and plugins (Python API)."""


@dataclass
class Progress:
    """Counters the CLI's progress bar reads after each sample."""

    total: int
    done: int = 0
    passed: int = 0
    infra: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def add(self, record: dict[str, Any]) -> None:
        self.done += 1
        self.passed += bool(record["passed"])
        self.infra += record["status"] == "infra_error"
        self.completion_tokens += record.get("completion_tokens") or 0

    @property
    def pass_rate(self) -> float | None:
        scored = self.done - self.infra
        return self.passed / scored if scored else None


async def run_suite(
    suite: Suite,
    options: EvalOptions = EvalOptions(),
    on_sample: Callable[[dict[str, Any], Progress], Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Run the suite; return the run folder and its summary (``summary.json``).

    Raises ConfigError for bad options and ``BackendUnavailable`` when the model server
    cannot be reached before the first sample.
    """
    trials = options.trials or suite.trials
    cases = _select(suite, options)
    folder, done = _open_folder(suite, options)
    async with AsyncExitStack() as stack:
        env = await _setup.start(suite, options, stack)
        samples = _setup.plan(suite, cases, trials, env)
        todo = [s for s in samples if s.key not in done]
        env.policy_for(samples)
        await env.connect(stack)
        if options.resume is None:
            folder.create(_setup.config(suite, options, env, samples, trials, folder.path.name))
        else:
            folder.drop_partial_line()
        progress = Progress(len(todo))
        ctx = _Context(env, folder.path.name, options, suite)
        try:
            workers = options.concurrency or suite.concurrency
            await work(lambda s: run_sample(ctx, s), todo, workers, folder, progress, on_sample)
        finally:
            folder.close()
    summary = summarize(list(folder.latest().values()), folder.config())
    folder.write_json("summary.json", summary)
    return folder.path, summary


def _select(suite: Suite, o: EvalOptions) -> list[Any]:
    cases = list(suite.cases)
    if o.ids:
        known = {c.id for c in cases}
        if unknown := [i for i in o.ids if i not in known]:
            raise ConfigError(f"--ids: no case {unknown[0]!r} in {suite.title}")
        cases = [c for c in cases if c.id in o.ids]
    if o.tags:
        cases = [c for c in cases if set(c.tags) & set(o.tags)]
    if o.limit is not None:
        cases = cases[: o.limit]
    if not cases:
        raise ConfigError("no case selected (check --ids, --tags and --limit)")
    return cases


def _open_folder(suite: Suite, o: EvalOptions) -> tuple[RunFolder, set[str]]:
    if o.resume is None:
        path = o.out or default_root() / new_eval_id()
        if path.exists() and any(path.iterdir()):
            raise ConfigError(
                f"{path} exists and is not empty: choose another --out, or --resume it"
            )
        return RunFolder(path), set()
    folder = RunFolder(o.resume)
    config = folder.config()
    if config.get("suite", {}).get("sha256") != suite.digest:
        raise ConfigError(
            f"--resume {o.resume}: the suite file changed since that eval started "
            "(its sha256 differs); start a new eval"
        )
    done = {k for k, r in folder.latest().items() if r["status"] != "infra_error"}
    return folder, done


class _Context:
    """What a sample needs while it runs: agents, workspaces, checks, recorder, limits."""

    def __init__(self, env: Any, eval_id: str, o: EvalOptions, suite: Suite) -> None:
        self.env, self.eval_id = env, eval_id
        self.retries, self.retry_backoff_s = o.retries, o.retry_backoff_s
        self.timeout_s = o.timeout_s or suite.timeout_s
        self.checks = CheckRegistry.default()
        self.approve = suite.approve

    def agent_for(self, s: Sample, workspace: Path | None) -> Any:
        return self.env.agent_for(s, workspace)

    def workspace_of(self, s: Sample) -> Path:
        return self.env.workspaces[s.agent_key]

    def recorder_take(self, token: str) -> dict[str, Any]:
        return self.env.recorder.take(token) if self.env.recorder is not None else {}


async def work(
    run: Callable[[Any], Awaitable[dict[str, Any]]],
    todo: list[Any],
    workers: int,
    folder: RunFolder,
    progress: Progress,
    on_sample: Callable[[dict[str, Any], Progress], Any] | None,
) -> None:
    """Run ``run(item)`` for every item with ``workers`` at once; append each record."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = await run(item)
            folder.append(record)
            progress.add(record)
            if on_sample is not None:
                on_sample(record, progress)

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(workers, len(todo))))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
