"""Benchmark: many concurrent agent runs on one machine, against the backend alone.

    python bench/scale.py [--quick] [--json] [--sizes 256,1024]

(a) **Concurrent runs.** N runs at once through one shared ``Agent``, each 4 steps with
    three ``sql_query`` calls (real DuckDB in the sandbox over a CSV in a workspace; plain
    process sandbox, as on a machine without bubblewrap), against the ``h200``-profile
    simulator in a child process. The baseline, measured in the same run: the same
    conversations driven through the backend alone (no graph, no tools, no store), as
    ``bench/backend.py`` does. Reported per N: wall time of both and their ratio, client
    CPU per model step (this process; the sandbox workers' and the memory sampler's CPU
    apart), and the peak memory
    of this process plus every sandbox worker (PSS, so pages shared after a fork count
    once). Goals (issue): ratio ≤ 1.15 at 256 and 1,024, ≤ 2,000 MB at 1,024, ≤ 5 ms of
    client CPU per step. Then where that CPU goes, at 64 runs: the backend alone, the agent
    with in-memory checkpoints, the agent with its SQLite store.
(b) **KV-aware admission.** M queued 10-step conversations (backend alone: the KV cache is
    the server's), first all admitted at once, then through ``VLLMConfig(kv_budget=
    "auto")``: runs per second and the prefix-cache hit rate the simulator saw. Goal:
    ≥ 1.3× the throughput with a hit rate ≥ 0.95 when admitted. Also the hit rate's
    ceiling for these conversations: 64 of them, which the cache holds all at once.

(c) **Worker starts.** K sandbox workers started one after another (each for a run of its
    own, calls' tools = ``sql_query``, plain process sandbox): forked from the group's
    pre-warmed template (``sandbox.shared: true``, the default) vs a fresh interpreter each
    (``sandbox.shared: false``): median milliseconds to a worker ready to serve, the
    template's own start, and the PSS per idle worker.

``--quick`` (about a minute) measures (a) at 64 runs and the CPU split at 32, and (b) with
128 conversations on a simulator with an eighth of the H200's KV cache: the same pressure
as 1,024 on the whole cache (the ceiling then is 8 conversations). ``--sizes`` and
``--queued`` pick other sizes (``--queued 0`` leaves (b) out).
The process runs with the garbage-collector settings of ``agent eval`` and ``agent serve``
(:func:`agent.tune_gc`). ``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import chatml, tune_gc
from agent.config import Limits, Sampling
from agent.llm import VLLMBackend, VLLMConfig
from agent.sim.engine import PROFILES
from agent.sim.policy import SimRequest, count_assistant_turns
from agent.types import ToolCall
from bench._common import SimChild, backend_conversation

MODEL = "NousResearch/Hermes-3-Llama-3.1-8B"
RUN_STEPS, RUN_CALLS = 4, 3
LONG_STEPS = 10
UNPRESSURED = 64  # 10-step conversations that fit the modeled H200's cache all at once
SYSTEM = "You answer questions about the sales table. Use SQL; never guess numbers."
QUERY = "SELECT region, sum(amount) AS total FROM read_csv('sales.csv') GROUP BY 1 ORDER BY 2"
RESULT = "4 rows\nregion | total\nNorth | 61997.0\nEast | 56090.5\nSouth | 56044.0\nWest | 49823.0"


def policy(request: SimRequest) -> str:
    """The scripted model: a call per step (one per run step up to the last), then an answer;
    10-step conversations for the admission part."""
    turn = count_assistant_turns(request.prompt)
    steps = LONG_STEPS if "[long]" in request.prompt else RUN_STEPS
    if turn >= steps - 1 or (steps == RUN_STEPS and turn >= RUN_CALLS):
        return "North sold the most: 61,997.00."
    call = ToolCall("sql_query", {"query": QUERY + f" -- step {turn}"}, id="x")
    return f"Querying, step {turn}.\n" + chatml.render_call(call)


# -- memory of this process and its sandbox workers ----------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples the PSS of this process and its descendants (but ``exclude``) every 100 ms.

    Reading ``smaps_rollup`` of every worker is not free: ``cpu_s`` is what the sampling
    cost this process, to be left out of the client's CPU.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude, self.peak_kib, self._stop = exclude, 0, threading.Event()
        self.cpu_s = 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        try:
            self._loop()
        finally:
            self.cpu_s = time.thread_time()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            pids, todo = [], [os.getpid()]
            while todo:
                pid = todo.pop()
                if pid in self.exclude:
                    continue
                pids.append(pid)
                todo += _children(pid)
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in pids))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- (a) concurrent runs --------------------------------------------------------------------


async def _backend_only(url: str, n: int, steps: int, tag: str = "") -> float:
    """The same conversations through the backend alone; returns the wall time."""
    config = VLLMConfig(urls=(url,), model=MODEL)
    async with VLLMBackend(url, config=config) as backend:

        async def one(i: int) -> None:
            await backend_conversation(
                backend,
                SYSTEM,
                f"{tag}Run {i}: top region?",
                TOOLS,
                steps=steps,
                result=RESULT,
                sampling=Sampling(temperature=0.0, max_tokens=256),
                session_id=str(i),
            )

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


def _tool_specs() -> list[Any]:
    from tools.registry import ToolRegistry

    return ToolRegistry.default(plugins=False).select(["sql_query"]).specs()


TOOLS = _tool_specs()


async def _agent_runs(
    url: str, n: int, tmp: Path, sim: SimChild, *, persist: bool = True
) -> dict[str, float]:
    from agent.api import Agent
    from tools.policy import ToolPolicies

    workspace = tmp / "ws"
    workspace.mkdir(exist_ok=True)
    (workspace / "sales.csv").write_text(
        "region,amount\n"
        + "".join(
            f"{r},{i * 1.5}\n" for i, r in enumerate(["North", "East", "South", "West"] * 250)
        )
    )
    policies = ToolPolicies(workspace=workspace, sandbox={"use_bwrap": False})
    agent = Agent(
        VLLMBackend(url, model=MODEL),
        tools=["sql_query"],
        system=SYSTEM,
        policies=policies,
        sampling=Sampling(temperature=0.0, max_tokens=256),
        store=tmp / f"store-{n}" if persist else None,
        limits=Limits(max_steps=RUN_STEPS + 1),
    )
    await agent.run("warm up")
    with PeakMemory(exclude={sim.proc.pid}) as memory:
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(agent.run(f"Run {i}: top region?") for i in range(n)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    cpu -= memory.cpu_s
    await agent.aclose()
    steps = sum(r.steps for r in results)
    return {
        "runs": n,
        "done": sum(r.status == "done" for r in results),
        "wall_s": wall,
        "steps": steps,
        "tool_calls": sum(r.tool_calls for r in results),
        "client_cpu_ms_per_step": cpu / steps * 1e3,
        "peak_memory_mb": memory.peak_kib / 1024,
    }


async def concurrent_runs(n: int, tmp: Path) -> dict[str, float]:
    with SimChild("bench.scale:policy", "h200", 1.0) as sim:
        backend_wall = await _backend_only(sim.url, n, RUN_STEPS)
        agent = await _agent_runs(sim.url, n, tmp, sim)
    return agent | {
        "backend_wall_s": backend_wall,
        "ratio_vs_backend": agent["wall_s"] / backend_wall,
    }


async def cpu_breakdown(n: int, tmp: Path) -> dict[str, float]:
    """Where the client's CPU per step goes, at ``n`` runs: the backend alone (streaming,
    parsing), the agent without persistence (LangGraph, tools, events), the agent with its
    SQLite store (checkpoints, tool-result saves, run rows, traces)."""
    with SimChild("bench.scale:policy", "h200", 1.0) as sim:
        cpu0 = time.process_time()
        await _backend_only(sim.url, n, RUN_STEPS)
        backend = (time.process_time() - cpu0) / (n * RUN_STEPS) * 1e3
        memory = await _agent_runs(sim.url, n, tmp, sim, persist=False)
        stored = await _agent_runs(sim.url, n, tmp, sim)
    return {
        "runs": n,
        "backend_ms": backend,
        "agent_in_memory_ms": memory["client_cpu_ms_per_step"],
        "agent_sqlite_ms": stored["client_cpu_ms_per_step"],
        "graph_and_tools_ms": memory["client_cpu_ms_per_step"] - backend,
        "persistence_ms": stored["client_cpu_ms_per_step"] - memory["client_cpu_ms_per_step"],
    }


# -- (b) KV-aware admission -------------------------------------------------------------------


async def _admitted_conversations(url: str, m: int, budget: Any) -> float:
    # Admitted all at once, thousands of requests queue in the server before their first
    # token, longer than the default 120 s without data (a real vLLM does the same).
    config = VLLMConfig(
        urls=(url,), model=MODEL, kv_budget=budget, read_timeout_s=3600, timeout_s=7200
    )
    async with VLLMBackend(url, config=config) as backend:

        async def one(i: int) -> None:
            async with backend.admitted(str(i)):
                await backend_conversation(
                    backend,
                    SYSTEM,
                    f"[long] Run {i}: why?",
                    TOOLS,
                    steps=LONG_STEPS,
                    result=RESULT * 8,
                    sampling=Sampling(temperature=0.0, max_tokens=256),
                    session_id=str(i),
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(m)))
        return time.perf_counter() - t0


async def _on_fresh_server(m: int, budget: Any, speed: float, shrink: int) -> tuple[float, float]:
    """``m`` conversations on a simulator of their own, its KV cache ``1/shrink`` of the
    H200's: (wall s, prefix-cache hit rate)."""
    cache = PROFILES["h200"].cache_tokens // shrink
    with SimChild("bench.scale:policy", "h200", speed, cache_tokens=cache) as sim:
        before = sim.stats()
        wall = await _admitted_conversations(sim.url, m, budget)
        after = sim.stats()
    queries = after["prefix_cache_queries"] - before["prefix_cache_queries"]
    hits = after["prefix_cache_hits"] - before["prefix_cache_hits"]
    return wall, hits / queries if queries else 0.0


async def admission(m: int, speed: float, shrink: int = 1) -> dict[str, float]:
    """``m`` queued conversations admitted all at once, then by KV budget. ``--quick``
    shrinks the cache with the queue, so the pressure (contexts / cache) is the same."""
    out: dict[str, float] = {"runs": m, "speed": speed, "cache_fraction": 1 / shrink}
    for label, budget in (("all_at_once", None), ("admitted", "auto")):
        wall, out[f"{label}_prefix_hit_rate"] = await _on_fresh_server(m, budget, speed, shrink)
        out[f"{label}_runs_per_s"] = m / wall
    out["throughput_gain"] = out["admitted_runs_per_s"] / out["all_at_once_runs_per_s"]
    # The ceiling: the same conversations, few enough that the cache holds them all. A
    # step's new tokens (its tool results) can never be a hit, so this is below 1.
    out["ceiling_runs"] = UNPRESSURED // shrink
    _, out["ceiling_prefix_hit_rate"] = await _on_fresh_server(
        UNPRESSURED // shrink, None, speed, shrink
    )
    return out


# -- (c) worker starts -----------------------------------------------------------------------


async def _start_workers(k: int, workspace: Path, forked: bool) -> tuple[list[float], float]:
    """Start ``k`` workers one by one; the seconds each took, and their mean PSS (MiB)."""
    from tools.policy import ToolPolicies
    from tools.registry import ToolRegistry
    from tools.sandbox import RunSandbox, close_pool

    tools = {t.name: t for t in ToolRegistry.default(plugins=False).select(["sql_query"])}
    sandbox = {"use_bwrap": False, "shared": forked, "pool_size": k}
    policies = ToolPolicies(workspace=workspace, sandbox=sandbox)
    runs = [RunSandbox(tools, policies, run_id=f"start-{i}") for i in range(k)]
    took = []
    for run in runs:  # each run holds its worker: the next needs a new one
        t0 = time.perf_counter()
        await run._assigned()
        took.append(time.perf_counter() - t0)
    pss = statistics.mean(_pss_kib(run.pid or 0) for run in runs) / 1024
    for run in runs:
        await run.aclose()
    await close_pool()
    return took, pss


async def worker_starts(k: int, tmp: Path) -> dict[str, float]:
    workspace = tmp / "ws"
    workspace.mkdir()
    forked, forked_pss = await _start_workers(k + 1, workspace, True)
    fresh, fresh_pss = await _start_workers(k, workspace, False)
    # The first forked start also starts the template: reported on its own.
    template_ms = (forked[0] - statistics.median(forked[1:])) * 1e3
    return {
        "workers": k,
        "forked_ms": statistics.median(forked[1:]) * 1e3,
        "fresh_ms": statistics.median(fresh) * 1e3,
        "speedup": statistics.median(fresh) / statistics.median(forked[1:]),
        "template_start_ms": template_ms,
        "forked_pss_mb": forked_pss,
        "fresh_pss_mb": fresh_pss,
    }


async def main(quick: bool, sizes: list[int], queued: int) -> dict[str, Any]:
    result: dict[str, Any] = {"quick": quick}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            result[f"runs_{n}"] = await concurrent_runs(n, Path(tmp))
            result[f"ratio_vs_backend_{n}"] = result[f"runs_{n}"]["ratio_vs_backend"]
    if 1024 in sizes:
        result["peak_memory_mb_1024"] = result["runs_1024"]["peak_memory_mb"]
    largest = result[f"runs_{max(sizes)}"]
    result["client_cpu_ms_per_step"] = largest["client_cpu_ms_per_step"]
    with tempfile.TemporaryDirectory() as tmp:
        result["cpu_per_step"] = await cpu_breakdown(32 if quick else 64, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        result["worker_start"] = await worker_starts(8 if quick else 32, Path(tmp))
    if queued:
        # --quick: an eighth of the queue on an eighth of the cache (the same pressure).
        shrink = 8 if quick else 1
        result["admission"] = await admission(queued, 8.0 if quick else 4.0, shrink)
        result["admission_throughput_gain"] = result["admission"]["throughput_gain"]
        result["prefix_hit_rate_admitted"] = result["admission"]["admitted_prefix_hit_rate"]
        result["prefix_hit_rate_ceiling"] = result["admission"]["ceiling_prefix_hit_rate"]
    return result


def _print(r: dict[str, Any]) -> None:
    print("(a) concurrent 4-step runs, 3 sql_query calls each (h200 profile, plain sandbox)")
    print("  runs  done  agent s  backend s  ratio  client ms/step  peak MB (client+workers)")
    for key in sorted(k for k in r if k.startswith("runs_")):
        s = r[key]
        print(
            f"  {s['runs']:4d} {s['done']:5d} {s['wall_s']:8.2f} {s['backend_wall_s']:10.2f}"
            f" {s['ratio_vs_backend']:6.3f} {s['client_cpu_ms_per_step']:15.2f}"
            f" {s['peak_memory_mb']:10.0f}"
        )
    c = r["cpu_per_step"]
    print(f"    client CPU ms/step at {c['runs']} runs: backend alone {c['backend_ms']:.1f},")
    print(
        f"    agent in memory {c['agent_in_memory_ms']:.1f} (graph + tools"
        f" +{c['graph_and_tools_ms']:.1f}), agent + SQLite store {c['agent_sqlite_ms']:.1f}"
        f" (persistence +{c['persistence_ms']:.1f})"
    )
    w = r["worker_start"]
    print(f"(c) {w['workers']} sandbox workers started one by one (plain process sandbox)")
    print(
        f"  forked from the template {w['forked_ms']:.1f} ms each (PSS {w['forked_pss_mb']:.1f}"
        f" MB), a fresh interpreter {w['fresh_ms']:.1f} ms (PSS {w['fresh_pss_mb']:.1f} MB):"
        f" {w['speedup']:.1f}x; the template's own start {w['template_start_ms']:.0f} ms"
    )
    if "admission" not in r:
        return
    a = r["admission"]
    print(
        f"(b) {a['runs']} queued 10-step conversations, h200 profile at speed {a['speed']},"
        f" {a['cache_fraction']:.2g} of its KV cache"
    )
    for label in ("all_at_once", "admitted"):
        print(
            f"  {label:12} {a[label + '_runs_per_s']:8.1f} runs/s"
            f"  prefix-cache hit rate {a[label + '_prefix_hit_rate']:.3f}"
        )
    print(f"  throughput gain {a['throughput_gain']:.2f}")
    print(
        f"  hit-rate ceiling ({a['ceiling_runs']} conversations, no eviction):"
        f" {a['ceiling_prefix_hit_rate']:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="(a) at 64, (b) 128 on 1/8 cache")
    parser.add_argument("--json", action="store_true", help="print a JSON object last")
    parser.add_argument("--sizes", help="comma-separated run counts for (a)")
    parser.add_argument(
        "--queued", type=int, help="conversations queued for (b); 0 skips it (1,024 / 4,096)"
    )
    args = parser.parse_args()
    queued = args.queued if args.queued is not None else (128 if args.quick else 4096)
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([64] if args.quick else [256, 1024])
    )
    tune_gc()  # as `agent eval` and `agent serve` do
    res = asyncio.run(main(args.quick, sizes, queued))
    _print(res)
    if args.json:
        print(json.dumps(res))
