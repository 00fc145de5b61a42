"""Benchmark the tool layer: dispatch overhead per call, and the DuckDB tool against raw DuckDB.

    python bench/tools.py [--quick] [--json]

1. Dispatch overhead: a trivial sandboxed call (``list_files`` of an empty workspace:
   one directory read) through the whole path — JSON Schema validation, idempotency key,
   semaphore, the worker round trip (framed JSON over pipes), result shaping — measured
   per call, sequentially, after the worker has started. The same for a trivial in-process
   tool, to separate validation from the sandbox round trip. Goal: <= 2 ms.
2. DuckDB: the same GROUP BY aggregate over a few million rows of a Parquet file that
   DuckDB itself generates in a temporary workspace, through ``sql_query`` versus a raw
   in-process DuckDB connection with the same threads and memory limit, the two
   interleaved run by run (medians).
   Goal: ratio <= 1.2.

``--json`` prints one JSON object on the last line (``dispatch_ms_per_call``,
``duckdb_ratio_to_raw`` and the rest). Wall-clock figures: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file is named tools.py: drop its folder from sys.path so `tools` is the package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from agent.types import ToolCall  # noqa: E402
from tools.base import tool  # noqa: E402
from tools.dispatch import Dispatcher  # noqa: E402
from tools.policy import ToolPolicies  # noqa: E402
from tools.registry import ToolRegistry  # noqa: E402

QUERY = (
    "SELECT k, count(*) AS n, sum(v) AS s, avg(v) AS a FROM 'data.parquet' GROUP BY k ORDER BY k"
)


@tool
def noop(x: int) -> int:
    """Return x."""
    return x


async def _dispatch_overhead(ws: Path, calls: int) -> dict[str, Any]:
    policies = ToolPolicies(workspace=ws)
    registry = ToolRegistry.default(plugins=False)
    registry.register(noop)
    async with Dispatcher(registry, policies, run_id="bench", artifacts_dir=ws / ".art") as d:
        first = await d.call(ToolCall("list_files", {}))  # starts the worker
        assert first.ok, first.content
        start = time.perf_counter()
        for _ in range(calls):
            await d.call(ToolCall("list_files", {}))
        sandboxed = (time.perf_counter() - start) / calls * 1000
        start = time.perf_counter()
        for i in range(calls):
            await d.call(ToolCall("noop", {"x": i}))
        in_process = (time.perf_counter() - start) / calls * 1000
    return {
        "dispatch_ms_per_call": sandboxed,
        "inprocess_ms_per_call": in_process,
        "sandbox": first.sandbox,
        "calls": calls,
    }


def _make_data(ws: Path, rows: int) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT i % 100 AS k, (i * 7919) % 10007 AS v, 'row' || i AS label "
        f"FROM range({rows}) t(i)) TO '{ws / 'data.parquet'}' (FORMAT parquet)"
    )
    con.close()


async def _duckdb(ws: Path, rows: int, runs: int) -> dict[str, Any]:
    """The same query through raw DuckDB and through ``sql_query``, interleaved run by run
    so that load on a shared machine falls on both alike; medians."""
    import duckdb

    _make_data(ws, rows)
    policies = ToolPolicies(workspace=ws)
    raw = duckdb.connect(
        config={"threads": policies.sql.threads, "memory_limit": policies.sql.memory_limit}
    )
    raw.execute(f"SET file_search_path = '{ws}'")
    registry = ToolRegistry.default(plugins=False)
    raw_ms: list[float] = []
    tool_ms: list[float] = []
    async with Dispatcher(registry, policies, run_id="bench", artifacts_dir=ws / ".art") as d:
        call = ToolCall("sql_query", {"query": QUERY})
        warm = await d.call(call)  # starts the worker, opens DuckDB, reads the file once
        raw_rows = raw.execute(QUERY).fetchall()
        assert warm.ok and str(raw_rows[0][1]) in warm.content, "tool and raw results differ"
        for _ in range(runs):
            start = time.perf_counter()
            raw.execute(QUERY).fetchall()
            raw_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            result = await d.call(call)
            tool_ms.append((time.perf_counter() - start) * 1000)
            assert result.ok, result.content
    raw.close()
    raw_med, tool_med = statistics.median(raw_ms), statistics.median(tool_ms)
    return {
        "duckdb_rows": rows,
        "duckdb_raw_ms": raw_med,
        "duckdb_tool_ms": tool_med,
        "duckdb_ratio_to_raw": tool_med / raw_med,
    }


async def _main(quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        empty, data = Path(tmp, "empty"), Path(tmp, "data")
        empty.mkdir()
        data.mkdir()
        out = await _dispatch_overhead(empty, 300 if quick else 2000)
        out.update(await _duckdb(data, 2_000_000 if quick else 5_000_000, 15 if quick else 25))
    out["quick"] = quick
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Smaller runs (under a minute).")
    parser.add_argument("--json", action="store_true", help="End with one JSON object line.")
    args = parser.parse_args()
    out = asyncio.run(_main(args.quick))
    print(
        f"dispatch, sandboxed ({out['sandbox']}): {out['dispatch_ms_per_call']:.3f} ms/call "
        f"(goal <= 2 ms); in-process: {out['inprocess_ms_per_call']:.3f} ms/call"
    )
    if out.get("duckdb_ratio_to_raw") is None:
        print(f"duckdb: {out.get('duckdb')}")
    else:
        print(
            f"duckdb, {out['duckdb_rows']:,} rows GROUP BY: raw {out['duckdb_raw_ms']:.1f} ms, "
            f"tool {out['duckdb_tool_ms']:.1f} ms, ratio {out['duckdb_ratio_to_raw']:.2f} "
            "(goal <= 1.2)"
        )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
