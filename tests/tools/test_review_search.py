"""Second review, finding 6: ``search_timeout_s`` holds on any pattern, in the worker too.

The regex guard misses shapes like ``(a|a)*$``, and the ``SIGALRM`` stop worked only on the
main thread: in the worker's threads a 40-character line ran to the hard timeout, the worker
was killed, the other calls in flight failed and in-memory DuckDB tables were lost.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.types import ToolCall
from tests.tools.test_sandbox import MODES
from tools.dispatch import Dispatcher
from tools.files import FileSandbox
from tools.policy import FilesPolicy, ToolPolicies
from tools.registry import ToolRegistry

SLOW_LINE = "a" * 40 + "!"
CATASTROPHIC = [r"(a|a)*$", r"(a|aa)*b$", r"hit|(a|a)*$", r"(?:a|a)+!x"]


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("first hit\nsecond hit\n")
    (ws / "slow.txt").write_text(f"hit here too\n{SLOW_LINE}\n")
    return ws


@pytest.mark.parametrize("use_bwrap", MODES)
@pytest.mark.parametrize("pattern", CATASTROPHIC)
async def test_search_timeout_holds_in_the_worker(ws: Path, use_bwrap: bool, pattern: str) -> None:
    policies = ToolPolicies(
        workspace=ws, files={"search_timeout_s": 1.0}, sql={"read_only": False},
        sandbox={"use_bwrap": use_bwrap, "call_timeout_s": 20},
    )  # fmt: skip
    registry = ToolRegistry.default(plugins=False)
    async with Dispatcher(registry, policies, run_id="r", artifacts_dir=ws.parent / "art") as d:
        made = await d.call(ToolCall("sql_query", {"query": "CREATE TABLE kept AS SELECT 7 AS n"}))
        assert made.ok, made.content
        start = time.monotonic()
        search, other = await d.dispatch(
            [
                ToolCall("search_files", {"pattern": pattern}),
                ToolCall("sql_query", {"query": "SELECT n FROM kept"}),
            ]
        )
        elapsed = time.monotonic() - start
        after = await d.call(ToolCall("sql_query", {"query": "SELECT n + 1 AS m FROM kept"}))
        starts = d.worker.starts
    assert search.ok, search.content
    assert search.content.splitlines()[-1] == "[time limit of 1 s reached; incomplete]"
    assert elapsed < 5, f"the search took {elapsed:.1f} s"
    assert other.ok and after.ok and after.content.endswith("\n8"), (other.content, after.content)
    assert starts == 1, "the worker was killed"
    if pattern.startswith("hit|"):  # what was found before the deadline is kept
        assert "a.txt:1: first hit" in search.content


@pytest.mark.parametrize("pattern", CATASTROPHIC[:2])
def test_search_timeout_holds_in_a_thread(ws: Path, pattern: str) -> None:
    box = FileSandbox(FilesPolicy(), ws, search_timeout_s=0.5)
    result: list[str] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(box.search_files(pattern)), daemon=True)
    thread.start()
    thread.join(30)
    elapsed = time.monotonic() - start
    box.close()
    assert result and result[0].endswith("[time limit of 0.5 s reached; incomplete]")
    assert elapsed < 3, f"the search took {elapsed:.1f} s"


def test_a_finished_search_reports_everything(ws: Path) -> None:
    (ws / "bin.dat").write_bytes(b"hit\x00")
    with FileSandbox(FilesPolicy(), ws) as box:
        out = box.search_files("hit")
    assert out.splitlines() == [
        "a.txt:1: first hit",
        "a.txt:2: second hit",
        "slow.txt:1: hit here too",
        "[skipped 1 binary, oversize, hard-linked or special files]",
    ]
