"""``agent eval bfcl``: BFCL's single-turn categories, one model call per case, AST-scored.

Each case's functions become tools (:func:`evals.bfcl.to_tool_specs`); its question is
rendered with them and sent through the backend seam (``Backend.generate``) once; the
parsed calls are scored, never executed (:func:`evals.bfcl.score`, BFCL's AST checker).
Records and metrics are those of any eval run (``samples.jsonl``, ``summary.json``), with
one check, ``bfcl_ast``, whose ``error_type`` is BFCL's.

Without a GPU, ``sim_gold`` serves the cases from the simulated server with
:class:`evals.bfcl_policy.BfclPolicy`: the gold answer, except a seeded ``corruption``
fraction of cases answered wrongly on purpose, so the whole path runs end to end —
100% with no corruption, exactly the planned failures otherwise (each sample records
the corruption it was given).

>>> BfclOptions(data=Path("d")).categories[0]
'simple_python'
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

import agent
from agent.config import ConfigModel, Sampling
from agent.errors import BackendError, ConfigError, ContextLengthExceeded
from agent.events import StepFinished, to_dict
from agent.types import RunResult
from evals.bfcl import CATEGORIES, BfclCase, load_category, score, to_tool_specs
from evals.metrics import summarize
from evals.results import RunFolder, default_root, git_revision, new_eval_id
from evals.runner import Progress, work

__all__ = ["BfclConfig", "BfclOptions", "run_bfcl"]


class BfclConfig(ConfigModel):
    """A BFCL run configuration file (``agent eval bfcl --config FILE``); options given
    on the command line win."""

    data: Path | None = Field(None, description="BFCL_v4 data folder, relative to this file.")
    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES))
    limit: int | None = Field(None, ge=1, description="The first N cases of each category.")
    sim_gold: bool = False
    corruption: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    concurrency: int = Field(32, ge=1, le=4096)


@dataclass(frozen=True)
class BfclOptions:
    """What ``agent eval bfcl`` runs, and against what."""

    data: Path
    categories: tuple[str, ...] = CATEGORIES
    limit: int | None = None
    """The first N cases of each category."""
    ids: tuple[str, ...] = ()
    model_url: str | None = None
    sim_gold: bool = False
    corruption: float = 0.0
    seed: int = 0
    concurrency: int = 32
    retries: int = 2
    retry_backoff_s: float = 1.0
    max_tokens: int = 1024
    out: Path | None = None


async def run_bfcl(
    o: BfclOptions, on_sample: Callable[[dict[str, Any], Progress], Any] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Run the chosen BFCL categories; return the run folder and its summary."""
    cases = _cases(o)
    folder = RunFolder(o.out or default_root() / new_eval_id())
    async with AsyncExitStack() as stack:
        url, policy = await _server(o, cases, stack)
        from agent.llm.vllm import VLLMBackend
        from evals._setup import _server_info

        backend = VLLMBackend(url, timeout_s=120.0)
        stack.push_async_callback(backend.aclose)
        server = await _server_info(url)
        folder.create(_config(o, folder.path.name, url, server, len(cases)))
        progress = Progress(len(cases))
        try:
            await work(
                lambda case: _sample(backend, case, o, policy),
                cases,
                o.concurrency,
                folder,
                progress,
                on_sample,
            )
        finally:
            folder.close()
    summary = summarize(list(folder.latest().values()), folder.config())
    folder.write_json("summary.json", summary)
    return folder.path, summary


def _cases(o: BfclOptions) -> list[BfclCase]:
    unknown = [c for c in o.categories if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"--category {unknown[0]!r}: not one of {', '.join(CATEGORIES)}")
    cases = []
    for category in o.categories:
        chosen = load_category(o.data, category)
        if o.ids:
            chosen = [c for c in chosen if c.id in o.ids]
        cases += chosen[: o.limit] if o.limit is not None else chosen
    if not cases:
        raise ConfigError("no BFCL case selected (check --category, --ids and --limit)")
    return cases


async def _server(o: BfclOptions, cases: list[BfclCase], stack: AsyncExitStack) -> tuple[str, Any]:
    if not o.sim_gold:
        from agent.task import ModelConfig

        return ModelConfig().urls(o.model_url)[0], None
    from agent.sim import FunctionPolicy
    from agent.testing import arun_sim
    from evals.bfcl_policy import BfclPolicy

    policy = BfclPolicy(cases, corruption_rate=o.corruption, seed=o.seed)
    sim = await stack.enter_async_context(arun_sim(FunctionPolicy(policy)))
    return sim.url, policy


async def _sample(backend: Any, case: BfclCase, o: BfclOptions, policy: Any) -> dict[str, Any]:
    from agent.chatml import to_messages
    from agent.llm.base import GenerationRequest

    request = GenerationRequest(
        to_messages(case.messages),
        tools=to_tool_specs(case.functions),
        sampling=Sampling(temperature=0.0, max_tokens=o.max_tokens, seed=o.seed),
    )
    started, infra = time.time(), []
    while True:
        t0 = time.perf_counter()
        try:
            generation = await backend.generate(request)
            break
        except ContextLengthExceeded as exc:
            return _failed(case, exc, time.perf_counter() - t0, started, infra)
        except BackendError as exc:
            infra.append(
                {
                    "attempt": len(infra),
                    "error_kind": exc.kind,
                    "error_type": type(exc).__name__,
                    "message": str(exc),
                }
            )
            if len(infra) > o.retries:
                return _record(case, None, [], time.perf_counter() - t0, started, infra)
            await asyncio.sleep(o.retry_backoff_s * 2 ** (len(infra) - 1))
    verdict = score(case, generation.tool_calls)
    check = {
        "check": "bfcl_ast",
        "passed": verdict.valid,
        "reason": verdict.error or f"{len(generation.tool_calls)} calls accepted",
        "error_type": verdict.error_type,
        "params": {"category": case.category},
    }
    record = _record(case, generation, [check], time.perf_counter() - t0, started, infra)
    if policy is not None:
        record["planned_corruption"] = policy.plan(case)
    return record


def _failed(
    case: BfclCase, exc: Exception, latency: float, started: float, infra: list[Any]
) -> dict[str, Any]:
    check = {
        "check": "bfcl_ast",
        "passed": False,
        "reason": str(exc),
        "error_type": type(exc).__name__,
        "params": {},
    }
    return _record(case, None, [check], latency, started, infra)


def _record(
    case: BfclCase,
    gen: Any,
    checks: list[dict[str, Any]],
    latency: float,
    started: float,
    infra: list[Any],
) -> dict[str, Any]:
    scored = bool(checks)
    passed = all(c["passed"] for c in checks) if scored else None
    result = RunResult(
        run_id=f"{case.id}#0",
        status="done" if gen is not None else "error",
        answer=gen.content if gen is not None else None,
        steps=1,
        tool_calls=len(gen.tool_calls) if gen is not None else 0,
        usage=gen.usage if gen is not None else agent.types.Usage(),
        error=None if gen is not None else (infra[-1]["message"] if infra else checks[0]["reason"]),
    )
    events = []
    if gen is not None:
        step = to_dict(StepFinished(1, dataclasses.replace(gen, prompt=None)))
        events.append(step)
    usage = result.usage
    return {
        "sample": f"{case.id}#0",
        "case_id": case.id,
        "trial": 0,
        "seed": None,
        "category": case.category,
        "tags": [],
        "input": case.messages[-1]["content"] if case.messages else "",
        "status": "passed" if passed else ("failed" if scored else "infra_error"),
        "passed": passed,
        "error_type": next((c["error_type"] for c in checks if not c["passed"]), None)
        or (infra[-1]["error_type"] if infra and not scored else None),
        "failed_checks": [c["check"] for c in checks if not c["passed"]],
        "checks": checks,
        "result": dataclasses.asdict(result),
        "latency_s": round(latency, 6),
        "ttft_s": gen.timings.ttft_s if gen is not None else None,
        "steps": 1,
        "tool_calls": result.tool_calls,
        "calls_parsed": result.tool_calls,
        "calls_malformed": len(gen.errors) if gen is not None else 0,
        "repairs": 0,
        "tool_errors": 0,
        "tool_results": 0,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "answer": result.answer,
        "attempts": len(infra) + (1 if scored else 0),
        "infra": infra,
        "http": {},
        "started_at": started,
        "events": events,
    }


def _config(
    o: BfclOptions, eval_id: str, url: str, server: dict[str, Any], n: int
) -> dict[str, Any]:
    return {
        "eval_id": eval_id,
        "kind": "bfcl",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agent_version": agent.__version__,
        "suite": {"name": "bfcl:" + ",".join(o.categories), "path": str(o.data), "sha256": None},
        "model": {
            "urls": [url],
            "name": server.get("model"),
            "mode": "completions",
            "simulated": o.sim_gold,
        },
        "server_version": server.get("version"),
        "git": git_revision(Path(__file__).parent),
        "bfcl": {
            "data": str(o.data),
            "categories": list(o.categories),
            "sim_gold": o.sim_gold,
            "corruption": o.corruption if o.sim_gold else None,
            "seed": o.seed,
        },
        "options": {
            "trials": 1,
            "concurrency": o.concurrency,
            "retries": o.retries,
            "limit": o.limit,
            "ids": list(o.ids),
        },
        "samples_planned": n,
    }
