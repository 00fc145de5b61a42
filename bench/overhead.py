"""Framework overhead per agent step, and checkpoint bytes, against stock LangGraph.

    python bench/overhead.py [--quick] [--json] [--profile]

**Same task for both.** A simulated model (``instant`` profile, so model time is tiny and
overhead dominates) calls one trivial in-process tool, ``lookup(key)`` returning a fixed
~500-character string, once per step for N steps, then answers. N travels in the prompt
(``[steps=N]``), so one ``FunctionPolicy`` serves every run length.

- **ours**: ``Agent(backend, tools=(lookup,), store=TMP, approval="none")`` — our graph,
  early tool dispatch, SQLite checkpoints (``AsyncSqliteSaver``, ``durability="async"``)
  plus the run store, traces and saved tool results that ``Agent`` always writes.
- **langgraph**: ``langchain.agents.create_agent(ChatHermes(...), [lookup])`` — stock
  ``ToolNode``, ``add_messages`` state, ``AsyncSqliteSaver`` on a temp file, the default
  ``durability`` ("async"). ``--full`` runs also add the same graph with ``durability="sync"``.

**Overhead per step** = (wall − model − tool) / model calls, per run; median over
interleaved runs. *Model time* is the time spent inside ``Backend.stream`` (each
``__anext__`` timed, so the caller's work between events is not counted) — the same
``VLLMBackend`` code on both sides: ChatHermes is given the timed backend. The stock
column "adapter" is the extra time inside ``ChatHermes._agenerate``/``_astream`` around
the backend (message conversion, callbacks); it counts as stock overhead. *Tool time* is
the time inside the tool function. Client CPU per step (``time.process_time``, all
threads) is printed too: it includes the backend's own CPU, identical on both sides.

**Checkpoint bytes**: one 200-step run each on a fresh SQLite file; the sum of
``LENGTH(checkpoint) + LENGTH(metadata)`` over the ``checkpoints`` table and
``LENGTH(value)`` over ``writes`` for the run's thread (what the checkpointer stored);
also each file's size after ``VACUUM``. Ours also keeps each tool result in the
LangGraph store (a ``store`` table under the store folder) for idempotent resume: shown
separately, and counted in the VACUUM size. Its JSONL trace is printed, not counted.

``--profile`` adds, for one 20-step run each, the awaited time in checkpointer and store
calls per step, and cProfile's top functions by own time (event-loop thread only).

The simulator runs in a child process (``bench/_common.SimChild``), so its CPU is not
charged to the client being measured. Two shared cores: numbers are noisy; medians.
``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatResult

from agent import chatml
from agent.llm.base import Backend, GenerationRequest
from agent.llm.chat_model import ChatHermes
from agent.sim.policy import SimRequest
from agent.types import ToolCall
from bench._common import SimChild

MODEL = "NousResearch/Hermes-3-Llama-3.1-8B"
LOOKUP_TEXT = (
    "Record 4471: the northern warehouse reported 1,284 pallets received and 1,190 shipped "
    "during the week, with 37 pallets held for inspection after a humidity alarm in bay 6. "
    "Outbound carriers were on time for 96.2% of loads; two late loads were attributed to a "
    "road closure on the ring road. Staffing was at 94% of plan. The cold-chain section "
    "logged no excursions. Cycle counts matched the system of record within 0.3%. Next "
    "review: Thursday, with the regional operations lead and the inventory control team."
)
_STEPS = re.compile(r"\[steps=(\d+)\]")


# -- the task: policy (runs in the simulator's process) and tool -----------------------


def policy(request: SimRequest) -> str:
    """The simulated model: call ``lookup`` with a fresh key until N calls, then answer."""
    match = _STEPS.search(request.prompt)
    n = int(match.group(1)) if match else 1
    k = request.assistant_turns
    if k >= n:
        return f"Done: looked up {n} keys; the warehouse records are consistent."
    return chatml.render_call(ToolCall("lookup", {"key": f"k{k}"}, id="x"))


def _prompt(n: int) -> str:
    return f"[steps={n}] Look up the warehouse records one key at a time, then summarise."


@dataclass
class Clock:
    """Seconds spent in the model and in tools during the current run."""

    model_s: float = 0.0
    chat_s: float = 0.0
    """Time inside ChatHermes (stock only): the backend's time plus the adapter's."""
    tool_s: float = 0.0
    model_calls: int = 0
    tool_calls: int = 0


CLOCK = Clock()


def _lookup(key: str) -> str:
    start = time.perf_counter()
    text = f"{key}: {LOOKUP_TEXT}"
    CLOCK.tool_s += time.perf_counter() - start
    CLOCK.tool_calls += 1
    return text


class TimedBackend(Backend):
    """Delegates to ``inner``; adds the time spent inside its stream to ``CLOCK.model_s``."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Any]:
        CLOCK.model_calls += 1
        events = self.inner.stream(request).__aiter__()
        while True:
            start = time.perf_counter()
            try:
                event = await events.__anext__()
            except StopAsyncIteration:
                return
            finally:
                CLOCK.model_s += time.perf_counter() - start
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


def _timed_backend(url: str) -> TimedBackend:
    from agent.llm.vllm import VLLMBackend

    return TimedBackend(VLLMBackend(url, model=MODEL))


class TimedChatHermes(ChatHermes):
    """ChatHermes that adds the time spent inside it to ``CLOCK.chat_s``."""

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        start = time.perf_counter()
        try:
            return await super()._agenerate(*args, **kwargs)
        finally:
            CLOCK.chat_s += time.perf_counter() - start

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        chunks = super()._astream(*args, **kwargs).__aiter__()
        while True:
            start = time.perf_counter()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            finally:
                CLOCK.chat_s += time.perf_counter() - start
            yield chunk


# -- the two contenders ----------------------------------------------------------------


class Ours:
    """Our ``Agent`` with its SQLite store in ``store``."""

    name = "ours"

    def __init__(self, url: str, store: Path) -> None:
        from agent.api import Agent
        from agent.config import Limits, Sampling
        from tools.base import tool

        lookup = tool(name="lookup")(_lookup_doc(_lookup))
        self.store = store
        self.db = store / "checkpoints.db"
        self.agent = Agent(
            _timed_backend(url),
            tools=(lookup,),
            store=store,
            approval="none",
            limits=Limits(max_steps=250, max_tool_calls=300, deadline_s=3600),
            sampling=Sampling(temperature=0.0, max_tokens=256),
        )
        self.thread_id = ""

    async def run(self, n: int) -> None:
        result = await self.agent.run(_prompt(n))
        if result.status != "done" or result.tool_calls != n:
            raise RuntimeError(
                f"ours: {result.status} after {result.tool_calls} calls: {result.error}"
            )
        self.thread_id = result.run_id

    async def aclose(self) -> None:
        await self.agent.aclose()


class Stock:
    """``create_agent`` + ``ToolNode`` + ``AsyncSqliteSaver`` on ``store/stock.db``."""

    def __init__(self, url: str, store: Path, durability: str = "async") -> None:
        self.url, self.durability = url, durability
        self.name = "langgraph" if durability == "async" else f"langgraph/{durability}"
        store.mkdir(parents=True, exist_ok=True)
        self.db = store / "stock.db"
        self.thread_id = ""
        self.graph: Any = None
        self._conn: Any = None

    async def open(self) -> Stock:
        import aiosqlite
        from langchain.agents import create_agent
        from langchain_core.tools import StructuredTool
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        self._conn = await aiosqlite.connect(str(self.db))
        saver = AsyncSqliteSaver(self._conn)
        await saver.setup()
        lookup = StructuredTool.from_function(_lookup_doc(_lookup), name="lookup")
        model = TimedChatHermes(
            base_url=self.url,
            model=MODEL,
            temperature=0.0,
            max_tokens=256,
            backend=_timed_backend(self.url),
        )
        self.graph = create_agent(model, [lookup], checkpointer=saver)
        return self

    async def run(self, n: int) -> None:
        self.thread_id = uuid.uuid4().hex
        config = {"configurable": {"thread_id": self.thread_id}, "recursion_limit": 2 * n + 20}
        out = await self.graph.ainvoke(
            {"messages": [HumanMessage(_prompt(n))]}, config, durability=self.durability
        )
        messages = out["messages"]
        calls = sum(isinstance(m, ToolMessage) for m in messages)
        last = messages[-1]
        if calls != n or not isinstance(last, AIMessage) or last.tool_calls:
            raise RuntimeError(f"{self.name}: {calls} tool calls, last {type(last).__name__}")

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _lookup_doc(fn: Any) -> Any:
    """``fn`` as a documented ``lookup(key: str) -> str`` (both tool decorators read it)."""

    def lookup(key: str) -> str:
        """Look up one warehouse record by key.

        Args:
            key: The record key, e.g. "k0".
        """
        return fn(key)

    return lookup


# -- overhead --------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run."""

    wall_s: float
    cpu_s: float
    model_s: float
    chat_s: float
    tool_s: float
    model_calls: int
    tool_calls: int

    @property
    def overhead_ms(self) -> float:
        """Milliseconds per model call that were neither model nor tool time."""
        return (self.wall_s - self.model_s - self.tool_s) / self.model_calls * 1e3

    @property
    def adapter_ms(self) -> float:
        return max(self.chat_s - self.model_s, 0.0) / self.model_calls * 1e3 if self.chat_s else 0.0


async def timed_run(contender: Any, n: int) -> Sample:
    """Run ``contender`` for ``n`` tool steps and split its wall time."""
    global CLOCK
    CLOCK = Clock()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await contender.run(n)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c = CLOCK
    if c.model_calls != n + 1 or c.tool_calls != n:
        raise RuntimeError(f"{contender.name}: {c.model_calls} model calls, {c.tool_calls} tools")
    return Sample(wall, cpu, c.model_s, c.chat_s, c.tool_s, c.model_calls, c.tool_calls)


async def measure_overhead(contenders: list[Any], steps: int, reps: int) -> dict[str, list[Sample]]:
    """``reps`` interleaved runs of each contender after one warm-up run each."""
    for c in contenders:
        await c.run(steps)
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for i in range(reps):
        order = contenders if i % 2 == 0 else contenders[::-1]
        for c in order:
            samples[c.name].append(await timed_run(c, steps))
    return samples


def summarize(samples: list[Sample]) -> dict[str, float]:
    """Medians per model call, in milliseconds."""
    calls = samples[0].model_calls

    def med(f: Any) -> float:
        return statistics.median(f(s) for s in samples)

    return {
        "runs": len(samples),
        "model_calls_per_run": calls,
        "wall_ms_per_step": med(lambda s: s.wall_s / calls * 1e3),
        "model_ms_per_step": med(lambda s: s.model_s / calls * 1e3),
        "tool_ms_per_step": med(lambda s: s.tool_s / calls * 1e3),
        "overhead_ms_per_step": med(lambda s: s.overhead_ms),
        "overhead_ms_per_step_min": min(s.overhead_ms for s in samples),
        "adapter_ms_per_step": med(lambda s: s.adapter_ms),
        "cpu_ms_per_step": med(lambda s: s.cpu_s / calls * 1e3),
    }


# -- checkpoint bytes ------------------------------------------------------------------


def _blob_bytes(con: sqlite3.Connection, sql: str, thread_id: str) -> tuple[int, int]:
    rows, size = con.execute(sql, (thread_id,)).fetchone()
    return int(rows), int(size or 0)


def checkpoint_bytes(db: Path, thread_id: str) -> dict[str, int]:
    """What the checkpointer stored for one thread, and its file's size after VACUUM."""
    with closing(sqlite3.connect(db)) as con:
        cp_rows, cp = _blob_bytes(
            con,
            "SELECT COUNT(*), SUM(LENGTH(CAST(checkpoint AS BLOB)) "
            "+ LENGTH(CAST(metadata AS BLOB))) FROM checkpoints WHERE thread_id = ?",
            thread_id,
        )
        wr_rows, wr = _blob_bytes(
            con,
            "SELECT COUNT(*), SUM(LENGTH(CAST(value AS BLOB))) FROM writes WHERE thread_id = ?",
            thread_id,
        )
    return {
        "checkpoints": cp_rows,
        "checkpoint_bytes": cp,
        "writes": wr_rows,
        "write_bytes": wr,
        "checkpointer_bytes": cp + wr,
        "file_bytes_after_vacuum": _vacuumed_size(db),
    }


def store_bytes(folder: Path, thread_id: str) -> dict[str, int]:
    """Ours: tool results saved in the LangGraph store (namespace ``tool_results.RUN``),
    wherever the store's ``store`` table lives under ``folder``."""
    rows = size = files = 0
    for db in sorted(folder.glob("*.db")):
        with closing(sqlite3.connect(db)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            if "store" not in tables:
                continue
            n, b = _blob_bytes(
                con,
                "SELECT COUNT(*), SUM(LENGTH(CAST(value AS BLOB))) "
                "FROM store WHERE prefix LIKE '%' || ?",
                thread_id,
            )
        rows, size = rows + n, size + b
        if "checkpoints" not in tables:  # a file of its own: count it
            files += _vacuumed_size(db)
    return {"store_rows": rows, "store_bytes": size, "store_file_bytes_after_vacuum": files}


def _vacuumed_size(db: Path) -> int:
    with closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("VACUUM")
    return db.stat().st_size


async def measure_checkpoints(url: str, root: Path, steps: int) -> dict[str, dict[str, Any]]:
    """One ``steps``-step run per contender on fresh files; bytes stored and wall time."""
    out: dict[str, dict[str, Any]] = {}
    for make in (lambda: Ours(url, root / "cp-ours"), lambda: Stock(url, root / "cp-stock")):
        contender = make()
        if isinstance(contender, Stock):
            await contender.open()
        start = time.perf_counter()
        try:
            await contender.run(steps)
        finally:
            await contender.aclose()
        wall = time.perf_counter() - start
        out[contender.name] = checkpoint_bytes(contender.db, contender.thread_id)
        out[contender.name]["wall_s"] = wall
        if isinstance(contender, Ours):
            out["ours"].update(store_bytes(contender.store, contender.thread_id))
            traces = contender.store / "traces"
            out["ours"]["trace_bytes"] = sum(p.stat().st_size for p in traces.glob("*.jsonl"))
    return out


# -- profile ---------------------------------------------------------------------------


async def profile(contender: Any, steps: int, top: int) -> list[dict[str, Any]]:
    """cProfile one run (event-loop thread only); the ``top`` functions by own time."""
    await contender.run(steps)  # warm
    prof = cProfile.Profile()
    prof.enable()
    await contender.run(steps)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [
        {
            "where": f"{_short(f)}:{line}({fn})",
            "calls": nc,
            "tottime_ms": tt * 1e3,
            "cumtime_ms": ct * 1e3,
        }
        for (f, line, fn), (_cc, nc, tt, ct, _callers) in rows
    ]


async def persistence_calls(contender: Any, steps: int) -> dict[str, dict[str, float]]:
    """Awaited time in checkpointer and store calls over one run, per model call.

    With ``durability="async"`` (stock) checkpoint writes run beside the next model call,
    so their time is not all on the critical path; with ``"sync"`` (ours) it is.
    """
    graph = contender.agent._graph if isinstance(contender, Ours) else contender.graph
    spent: dict[str, list[float]] = {}
    targets = [("checkpointer", graph.checkpointer, ("aput", "aput_writes", "aget_tuple"))]
    if graph.store is not None:
        targets.append(("store", graph.store, ("aget", "aput")))
    for label, obj, methods in targets:
        for m in methods:
            setattr(obj, m, _timed_method(getattr(obj, m), spent.setdefault(f"{label}.{m}", [])))
    try:
        await contender.run(steps)
    finally:
        for _label, obj, methods in targets:
            for m in methods:
                delattr(obj, m)  # back to the class's method
    calls = steps + 1
    return {
        k: {"calls_per_step": len(v) / calls, "ms_per_step": sum(v) / calls * 1e3}
        for k, v in spent.items()
    }


def _timed_method(method: Any, spent: list[float]) -> Any:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    return timed


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# -- main ------------------------------------------------------------------------------


async def run_all(quick: bool, want_profile: bool) -> dict[str, Any]:
    steps, reps = 20, (4 if quick else 12)
    result: dict[str, Any] = {"quick": quick, "steps_per_run": steps, "profile": "instant"}
    with SimChild("bench.overhead:policy") as sim, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        contenders: list[Any] = [
            Ours(sim.url, root / "ours"),
            await Stock(sim.url, root / "stock").open(),
        ]
        if not quick:
            contenders.append(await Stock(sim.url, root / "stock-sync", "sync").open())
        try:
            samples = await measure_overhead(contenders, steps, reps)
            if want_profile:
                result["hotspots"] = {c.name: await profile(c, steps, 15) for c in contenders[:2]}
                result["persistence"] = {
                    c.name: await persistence_calls(c, steps) for c in contenders[:2]
                }
        finally:
            for c in contenders:
                await c.aclose()
        result["overhead"] = {name: summarize(s) for name, s in samples.items()}
        result["checkpoints"] = await measure_checkpoints(sim.url, root, 200)
    ours, stock = result["overhead"]["ours"], result["overhead"]["langgraph"]
    cp_ours, cp_stock = result["checkpoints"]["ours"], result["checkpoints"]["langgraph"]
    result["overhead_ratio_vs_langgraph"] = (
        ours["overhead_ms_per_step"] / stock["overhead_ms_per_step"]
    )
    result["cpu_ratio_vs_langgraph"] = ours["cpu_ms_per_step"] / stock["cpu_ms_per_step"]
    result["checkpoint_bytes_ratio_vs_langgraph"] = (
        cp_ours["checkpointer_bytes"] / cp_stock["checkpointer_bytes"]
    )
    result["checkpoint_bytes_ratio_incl_store_vs_langgraph"] = (
        cp_ours["checkpointer_bytes"] + cp_ours["store_bytes"]
    ) / cp_stock["checkpointer_bytes"]
    result["file_bytes_ratio_vs_langgraph"] = (
        cp_ours["file_bytes_after_vacuum"] + cp_ours["store_file_bytes_after_vacuum"]
    ) / cp_stock["file_bytes_after_vacuum"]
    return result


def print_table(r: dict[str, Any]) -> None:
    """The readable report: overhead, checkpoint bytes, and (``--profile``) hotspots."""
    _print_overhead(r)
    _print_checkpoints(r)
    _print_profile(r)


def _print_overhead(r: dict[str, Any]) -> None:
    o = r["overhead"]
    print(
        f"Per agent step ({r['steps_per_run']} tool steps + answer = "
        f"{o['ours']['model_calls_per_run']} model calls per run; median of "
        f"{o['ours']['runs']} interleaved runs; simulator: {r['profile']}, child process)"
    )
    print(
        f"  {'':16} {'wall ms':>8} {'model ms':>9} {'tool ms':>8} {'overhead ms':>12}"
        f" {'(min)':>6} {'adapter ms':>11} {'client CPU ms':>14}"
    )
    for name, s in o.items():
        print(
            f"  {name:16} {s['wall_ms_per_step']:8.2f} {s['model_ms_per_step']:9.2f}"
            f" {s['tool_ms_per_step']:8.3f} {s['overhead_ms_per_step']:12.2f}"
            f" {s['overhead_ms_per_step_min']:6.2f} {s['adapter_ms_per_step']:11.2f}"
            f" {s['cpu_ms_per_step']:14.2f}"
        )
    print(
        f"  overhead ours / langgraph: {r['overhead_ratio_vs_langgraph']:.2f}  (goal <= 0.5)"
        f"   client CPU ratio: {r['cpu_ratio_vs_langgraph']:.2f}"
    )


def _print_checkpoints(r: dict[str, Any]) -> None:
    print("\nCheckpoint bytes, one 200-step run each (SQLite, AsyncSqliteSaver)")
    print(
        f"  {'':16} {'ckpts':>6} {'ckpt bytes':>12} {'writes':>7} {'write bytes':>12}"
        f" {'total':>12} {'store bytes':>12} {'files (VACUUM)':>15} {'run s':>6}"
    )
    for name, c in r["checkpoints"].items():
        files = c["file_bytes_after_vacuum"] + c.get("store_file_bytes_after_vacuum", 0)
        print(
            f"  {name:16} {c['checkpoints']:6d} {c['checkpoint_bytes']:12,d}"
            f" {c['writes']:7d} {c['write_bytes']:12,d} {c['checkpointer_bytes']:12,d}"
            f" {c.get('store_bytes', 0):12,d} {files:15,d} {c['wall_s']:6.1f}"
        )
    print(
        f"  checkpointer bytes ours / langgraph: {r['checkpoint_bytes_ratio_vs_langgraph']:.4f}"
        f"  (goal <= 0.1); with saved tool results: "
        f"{r['checkpoint_bytes_ratio_incl_store_vs_langgraph']:.4f}; files after VACUUM: "
        f"{r['file_bytes_ratio_vs_langgraph']:.4f}"
    )
    print(
        f"  (ours also wrote {r['checkpoints']['ours']['trace_bytes']:,d} bytes of JSONL "
        "trace for that run; not counted)"
    )


def _print_profile(r: dict[str, Any]) -> None:
    for name, calls in r.get("persistence", {}).items():
        print(f"\nAwaited persistence calls per model call: {name}")
        for k, v in calls.items():
            print(f"  {k:28} {v['calls_per_step']:5.2f} calls {v['ms_per_step']:7.2f} ms")
    for name, rows in r.get("hotspots", {}).items():
        print(f"\nTop functions by own time, one {r['steps_per_run']}-step run: {name}")
        for h in rows:
            print(
                f"  {h['tottime_ms']:8.1f} ms own {h['cumtime_ms']:8.1f} ms cum"
                f" {h['calls']:7d}x  {h['where']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (under a minute)")
    parser.add_argument("--json", action="store_true", help="print a JSON object last")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile one run of each and print the hotspots"
    )
    args = parser.parse_args()
    result = asyncio.run(run_all(args.quick, args.profile))
    print_table(result)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
