"""Second review, finding 4: DuckDB follows the file tools' rule on what may be opened.

The file tools refuse hard-linked files (one may be a link to a file outside the workspace,
and nothing on the inode says which) and special files (a FIFO hangs a reader). DuckDB
opens files by path, so ``read_text('hard')`` read the outside file, in both sandbox modes:
bubblewrap does not help, because the inode is reachable through the workspace mount.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent.errors import ToolPolicyError
from agent.types import ToolCall
from tests.tools.test_sandbox import MODES
from tools.dispatch import Dispatcher
from tools.policy import SqlPolicy, ToolPolicies
from tools.registry import ToolRegistry
from tools.sql import SqlEngine

SECRET = "OUTSIDE-SECRET-4242"
QUERIES = [
    "SELECT * FROM read_text('hard.csv')",
    "SELECT * FROM read_csv('hard.csv')",
    "SELECT * FROM read_blob('hard.csv')",
    "SELECT * FROM 'hard.csv'",
    "SELECT * FROM read_text('**')",
    "SELECT * FROM read_csv('sub/*.csv', union_by_name=true)",
    "SELECT content FROM read_text('.hidden/h.txt')",
]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace holding hard links to a file outside it, beside ordinary data."""
    outside = tmp_path / "outside.csv"
    outside.write_text(f"token\n{SECRET}\n")
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / ".hidden").mkdir()
    (ws / "ok.csv").write_text("a\n1\n")
    (ws / "sub" / "fine.csv").write_text("token\nfine\n")
    os.link(outside, ws / "hard.csv")
    os.link(outside, ws / "sub" / "also.csv")
    os.link(outside, ws / ".hidden" / "h.txt")
    return ws


def _dispatcher(ws: Path, use_bwrap: bool) -> Dispatcher:
    policies = ToolPolicies(workspace=ws, sandbox={"use_bwrap": use_bwrap, "call_timeout_s": 20})
    art = ws.parent / "art"
    return Dispatcher(ToolRegistry.default(plugins=False), policies, run_id="r", artifacts_dir=art)


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_sql_query_never_reads_hard_linked_files(ws: Path, use_bwrap: bool) -> None:
    async with _dispatcher(ws, use_bwrap) as d:
        results = await d.dispatch([ToolCall("sql_query", {"query": q}) for q in QUERIES])
    for query, result in zip(QUERIES, results, strict=True):
        assert SECRET not in result.content, (query, result.content)
        assert result.error == "policy", (query, result.content)
        assert "'hard.csv' (4 hard links)" in result.content


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_sql_tables_skips_hard_linked_and_special_files(ws: Path, use_bwrap: bool) -> None:
    os.mkfifo(ws / "pipe.csv")  # DESCRIBE would block on it until the hard timeout
    async with _dispatcher(ws, use_bwrap) as d:
        start = time.monotonic()
        result = await d.call(ToolCall("sql_tables", {}))
        elapsed = time.monotonic() - start
        starts = d.worker.starts
    assert result.ok and SECRET not in result.content, result.content
    assert "'ok.csv'(a:BIGINT)" in result.content
    assert "'hard.csv'(refused: 4 hard links)" in result.content
    assert "'pipe.csv'(refused: a FIFO)" in result.content
    assert elapsed < 10 and starts == 1


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_fifo_in_the_workspace_cannot_hang_sql_query(
    tmp_path: Path, use_bwrap: bool
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    os.mkfifo(ws / "pipe.csv")
    async with _dispatcher(ws, use_bwrap) as d:
        result = await d.call(ToolCall("sql_query", {"query": "SELECT * FROM 'pipe.csv'"}))
        starts = d.worker.starts
    assert result.error == "policy" and "'pipe.csv' (a FIFO)" in result.content
    assert starts == 1


def test_a_link_made_during_a_query_discards_its_result(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "outside.csv").write_text(f"token\n{SECRET}\n")
    engine = SqlEngine(SqlPolicy(timeout_s=30, threads=1), ws)
    cwd = os.getcwd()
    timer = threading.Timer(0.3, os.link, (tmp_path / "outside.csv", ws / "late.csv"))
    timer.start()
    try:
        with pytest.raises(ToolPolicyError, match=r"'late.csv' \(2 hard links\)"):
            # Runs for seconds (~1 s was too close to the link's 0.3 s on a loaded
            # machine: the query ended first): the link appears while it runs.
            engine.query("SELECT count(*) FROM range(10) a, range(300000000) b WHERE b % 7 = 3")
    finally:
        timer.join()
        engine.close()
        os.chdir(cwd)


def test_files_are_checked_for_every_query_not_once(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "outside.csv").write_text(f"token\n{SECRET}\n")
    cwd = os.getcwd()
    engine = SqlEngine(SqlPolicy(), ws)
    try:
        assert engine.query("SELECT 1 AS one").endswith("\n1")
        os.link(tmp_path / "outside.csv", ws / "later.csv")
        with pytest.raises(ToolPolicyError, match="hard links"):
            engine.query("SELECT * FROM 'later.csv'")
        os.unlink(ws / "later.csv")
        assert engine.query("SELECT 2 AS two").endswith("\n2")
    finally:
        engine.close()
        os.chdir(cwd)
