"""Second review, findings 5, 8 and 9: SQL calls are independent, and behave alike in both modes.

5. Parallel ``sql_query`` calls shared one DuckDB connection: "connection is busy" errors,
   and calls answered with another call's rows.
8. One call's failure degraded the next ones: an aborted transaction, or a memory-limit
   failure that left the worker unable to serve more calls.
9. ``read_only: false`` worked in plain-process mode and failed under bubblewrap (the
   database's folder was mounted read-only unless file writes were allowed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from agent.types import ToolCall, ToolResult
from tests.tools.test_sandbox import MODES
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.registry import ToolRegistry


def _dispatcher(tmp_path: Path, use_bwrap: bool, **policy: Any) -> Dispatcher:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    sandbox = {"use_bwrap": use_bwrap, "call_timeout_s": 60, **policy.pop("sandbox", {})}
    policies = ToolPolicies(workspace=ws, sandbox=sandbox, **policy)
    art = tmp_path / "art"
    return Dispatcher(ToolRegistry.default(plugins=False), policies, run_id="r", artifacts_dir=art)


async def _sql(d: Dispatcher, query: str) -> ToolResult:
    return await d.call(ToolCall("sql_query", {"query": query}))


# --- 5: every call gets its own result -------------------------------------------------


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_parallel_queries_each_get_their_own_result(tmp_path: Path, use_bwrap: bool) -> None:
    async with _dispatcher(tmp_path, use_bwrap, sql={"read_only": False}) as d:
        made = await _sql(d, "CREATE TABLE t AS SELECT range AS k FROM range(8)")
        assert made.ok, made.content
        for round_ in range(5):
            calls = [
                ToolCall("sql_query", {"query": (
                    f"SELECT k + {round_ * 100} AS v, (SELECT sum(range) FROM range({n})) AS s "
                    f"FROM t WHERE k = {i}"
                )})
                for i, n in enumerate([300_000 * (1 + j % 3) for j in range(8)])
            ]  # fmt: skip
            results = await d.dispatch(calls)
            for i, (call, result) in enumerate(zip(calls, results, strict=True)):
                n = 300_000 * (1 + i % 3)
                expected = f"\n{i + round_ * 100}|{n * (n - 1) // 2}"
                assert result.ok and result.content.endswith(expected), (call, result.content)
        assert d.worker.starts == 1


# --- 8: one call's failure does not poison the next ---------------------------------------


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_failed_call_leaves_no_aborted_transaction(tmp_path: Path, use_bwrap: bool) -> None:
    async with _dispatcher(tmp_path, use_bwrap, sql={"read_only": False}) as d:
        await _sql(d, "CREATE TABLE t(a INTEGER)")
        begin = await _sql(d, "BEGIN TRANSACTION")
        failed = await _sql(d, "INSERT INTO t VALUES ('not a number')")
        after = [await _sql(d, q) for q in ("INSERT INTO t VALUES (1)", "SELECT count(*) FROM t")]
    assert all(r.ok for r in after), [r.content for r in after]
    assert after[1].content.endswith("\n1")
    assert failed.error == "execution"
    # Each call is its own transaction, so BEGIN is refused with a message saying so.
    assert begin.error == "policy" and "own transaction" in begin.content


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_memory_limit_failure_leaves_the_worker_serving(
    tmp_path: Path, use_bwrap: bool
) -> None:
    big = (
        "SELECT max(length(s)) FROM "
        "(SELECT string_agg(range::VARCHAR, ',') s FROM range(200000000))"
    )
    policy = {"sandbox": {"memory_mb": 1024}, "sql": {"memory_limit": "512MB", "timeout_s": 30}}
    async with _dispatcher(tmp_path, use_bwrap, **policy) as d:
        for _ in range(3):
            failed = await _sql(d, big)
            small = await d.dispatch(
                [ToolCall("sql_query", {"query": f"SELECT {i} AS v"}) for i in range(8)]
            )
            assert failed.error == "execution" and "memory" in failed.content
            assert [r.content.rsplit("\n", 1)[-1] for r in small] == [str(i) for i in range(8)], [
                r.content for r in small
            ]
        assert d.worker.starts == 1


# --- 9: a task file behaves the same in both modes ----------------------------------------


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_sql_writes_reach_the_database_file_and_nothing_else(
    tmp_path: Path, use_bwrap: bool
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with duckdb.connect(str(ws / "db.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
    sql = {"database": Path("db.duckdb"), "read_only": False}
    async with _dispatcher(tmp_path, use_bwrap, sql=sql) as d:
        writes = [
            await _sql(d, q)
            for q in (
                "INSERT INTO t SELECT range FROM range(1000)",
                "CREATE TABLE u AS SELECT 2 AS b",
                "UPDATE t SET a = a + 1 WHERE a < 10",
            )
        ]
        copy = await _sql(d, "COPY t TO 'out.csv'")
        write = await d.call(ToolCall("write_file", {"path": "x.txt", "content": "x"}))
    assert all(r.ok for r in writes), [r.content for r in writes]
    assert copy.error == "policy" and "allow_write" in copy.content, copy.content
    assert write.error == "policy"
    assert sorted(p.name for p in ws.iterdir() if not p.name.endswith(".wal")) == ["db.duckdb"]
    with duckdb.connect(str(ws / "db.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1001,)
        assert con.execute("SELECT b FROM u").fetchone() == (2,)


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_sql_file_exports_follow_the_file_write_policy(
    tmp_path: Path, use_bwrap: bool
) -> None:
    policy = {"sql": {"read_only": False}, "files": {"allow_write": True}}
    async with _dispatcher(tmp_path, use_bwrap, **policy) as d:
        copy = await _sql(d, "COPY (SELECT 42 AS n) TO 'out.csv'")
        back = await _sql(d, "SELECT n FROM 'out.csv'")
    assert copy.ok and back.ok and back.content.endswith("\n42"), (copy.content, back.content)
