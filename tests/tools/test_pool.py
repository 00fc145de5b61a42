"""The shared sandbox pool: runs share worker processes, never each other's state.

Every test runs in both sandbox modes where bubblewrap is installed. Runs are given one
worker (``pool_size: 1``) so that they provably share it (the same pid), and then try to
reach each other: in-memory SQL tables, per-run tool state, a cancelled call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.types import ToolCall
from tools import _pool
from tools.base import ToolContext, tool
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.registry import ToolRegistry
from tools.sandbox import bwrap_available, close_pool

MODES = [False, *([True] if bwrap_available() else [])]


@tool(sandbox="process")
def remember(value: str, ctx: ToolContext) -> dict:
    """Keep a value in the run's state; say which process holds it."""
    ctx.state["value"] = value
    return {"pid": os.getpid()}


@tool(sandbox="process")
def recall(ctx: ToolContext) -> dict:
    """The value this run kept, if any."""
    return {"value": ctx.state.get("value"), "pid": os.getpid()}


@tool(sandbox="process")
def die() -> str:
    """End the worker process at once."""
    os._exit(3)


@pytest.fixture(autouse=True)
async def _fresh_pool() -> Any:
    yield
    await close_pool()


def _dispatcher(tmp: Path, run: str, use_bwrap: bool, **policy: Any) -> Dispatcher:
    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    sandbox = {"use_bwrap": use_bwrap, "pool_size": 1, **policy.pop("sandbox", {})}
    tools = ToolRegistry([remember, recall, die])
    for builtin in ToolRegistry.default(plugins=False).select(["sql_query", "sql_tables"]):
        tools.register(builtin)
    policies = ToolPolicies(workspace=ws, sandbox=sandbox, **policy)
    return Dispatcher(tools, policies, run_id=run, artifacts_dir=tmp / "art" / run)


async def _call(d: Dispatcher, name: str, **args: Any) -> Any:
    result = await d.call(ToolCall(name, args))
    return result


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_two_runs_on_one_worker_cannot_see_each_others_tables(
    tmp_path: Path, use_bwrap: bool
) -> None:
    writable = {"sql": {"read_only": False}}
    async with (
        _dispatcher(tmp_path, "run-a", use_bwrap, **writable) as a,
        _dispatcher(tmp_path, "run-b", use_bwrap, **writable) as b,
    ):
        made = await _call(a, "sql_query", query="CREATE TABLE secrets AS SELECT 'a-only' AS s")
        assert made.ok, made.content
        peek = await _call(b, "sql_query", query="SELECT * FROM secrets")
        assert peek.error == "execution" and "secrets" in peek.content
        own = await _call(a, "sql_query", query="SELECT * FROM secrets")
        assert own.ok and "a-only" in own.content, "a run keeps its tables across calls"
        listing = await _call(b, "sql_tables")
        assert "secrets" not in listing.content
        assert a.worker.pid == b.worker.pid, "both runs were served by one worker"


# Every way a statement could leave state in a shared read-only engine for the next run.
STATEFUL = [
    "CREATE TEMP TABLE leak AS SELECT 'a-only' AS s",
    "CREATE TEMP VIEW leak AS SELECT 'a-only' AS s",
    "CREATE TEMP MACRO leak() AS 'a-only'",
    "CREATE TEMP SEQUENCE leak",
    "SET VARIABLE leak = 'a-only'",
    "SET threads = 1",
    "PREPARE leak AS SELECT 'a-only'",
    "BEGIN TRANSACTION",
    "ATTACH ':memory:' AS leak",
    "USE temp",
]


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_runs_sharing_a_read_only_engine_leave_nothing_for_each_other(
    tmp_path: Path, use_bwrap: bool
) -> None:
    """Read-only SQL shares one DuckDB engine per worker (``tools.builtins._engine``): every
    statement that could leave state behind is refused, so the next run finds none."""
    async with (
        _dispatcher(tmp_path, "run-a", use_bwrap) as a,
        _dispatcher(tmp_path, "run-b", use_bwrap) as b,
    ):
        setting = "SELECT current_setting('threads') AS t"
        threads = (await _call(b, "sql_query", query=setting)).content
        for query in STATEFUL:
            refused = await _call(a, "sql_query", query=query)
            assert not refused.ok, query
        for query in [
            "SELECT * FROM leak",
            "SELECT leak()",
            "SELECT nextval('leak')",
            "EXECUTE leak",
            "SELECT * FROM leak.information_schema.tables",
        ]:
            peek = await _call(b, "sql_query", query=query)
            assert not peek.ok and "a-only" not in peek.content, query
        unset = await _call(b, "sql_query", query="SELECT getvariable('leak') AS v")
        assert unset.ok and "a-only" not in unset.content
        assert (await _call(b, "sql_query", query=setting)).content == threads
        assert a.worker.pid == b.worker.pid, "both runs were served by one worker"


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_two_runs_on_one_worker_keep_their_own_state(tmp_path: Path, use_bwrap: bool) -> None:
    async with (
        _dispatcher(tmp_path, "run-a", use_bwrap) as a,
        _dispatcher(tmp_path, "run-b", use_bwrap) as b,
    ):
        await asyncio.gather(
            _call(a, "remember", value="alpha"), _call(b, "remember", value="beta")
        )
        got_a, got_b = await asyncio.gather(_call(a, "recall"), _call(b, "recall"))
    state_a, state_b = json.loads(got_a.content), json.loads(got_b.content)
    assert (state_a["value"], state_b["value"]) == ("alpha", "beta")
    assert state_a["pid"] == state_b["pid"]


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_timed_out_query_fails_alone(tmp_path: Path, use_bwrap: bool) -> None:
    policy = {"sql": {"read_only": False, "timeout_s": 60}, "sandbox": {"call_timeout_s": 1.5}}
    async with (
        _dispatcher(tmp_path, "run-a", use_bwrap, **policy) as a,
        _dispatcher(tmp_path, "run-b", use_bwrap, **policy) as b,
    ):
        assert (await _call(a, "sql_query", query="CREATE TABLE t AS SELECT 1 AS x")).ok
        pid = a.worker.pid
        slow = asyncio.ensure_future(
            _call(a, "sql_query", query="SELECT count(*) FROM range(100000000000) r, range(9)")
        )
        quick = [await _call(b, "sql_query", query=f"SELECT {i}") for i in range(5)]
        hung = await slow
        assert hung.error == "timeout" and "was stopped" in hung.content, hung.content
        assert all(q.ok for q in quick)
        kept = await _call(a, "sql_query", query="SELECT x FROM t")
        assert kept.ok, "the worker and the run's tables survived the interrupted query"
        assert a.worker.pid == b.worker.pid == pid and a.worker.starts == 1


async def test_a_crashed_worker_fails_its_calls_and_runs_move_on(tmp_path: Path) -> None:
    async with (
        _dispatcher(tmp_path, "run-a", False) as a,
        _dispatcher(tmp_path, "run-b", False) as b,
    ):
        await _call(b, "remember", value="beta")
        first = a.worker.pid
        crashed = await _call(a, "die")
        assert crashed.error == "execution" and "died during the call" in crashed.content
        after = await _call(b, "recall")
        assert after.ok and json.loads(after.content)["value"] is None, "a new worker"
        assert b.worker.pid != first and b.worker.starts == 2


async def test_dedicated_workers_when_not_shared(tmp_path: Path) -> None:
    solo = {"sandbox": {"shared": False}}
    async with (
        _dispatcher(tmp_path, "run-a", False, **solo) as a,
        _dispatcher(tmp_path, "run-b", False, **solo) as b,
    ):
        await asyncio.gather(_call(a, "recall"), _call(b, "recall"))
        assert a.worker.pid != b.worker.pid
        assert a.worker._group.template is None, "a run's own worker is not forked"
        assert int(_status(a.worker.pid, "PPid")) == os.getpid()
        pid = a.worker.pid
    with pytest.raises(ProcessLookupError):  # a run's own worker ends with the run
        for _ in range(100):
            os.kill(pid, 0)
            await asyncio.sleep(0.05)


async def test_an_idle_worker_stops_and_no_watcher_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pool, "IDLE_S", 0.2)
    before = {t.name for t in threading.enumerate()}
    async with _dispatcher(tmp_path, "run-a", False) as a:
        await _call(a, "recall")
        pid = a.worker.pid
        assert not [
            t
            for t in threading.enumerate()
            if t.name not in before and t.name.startswith("waitpid")
        ], "reaped by pidfd, not a thread"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the idle worker did not stop")


async def test_a_worker_past_half_its_cpu_takes_no_new_run(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, "run-a", False, sandbox={"pool_size": 2}) as a:
        await _call(a, "recall")
        a.worker._worker.cpu_s = 10_000  # as if it reported a long life of work
        async with _dispatcher(tmp_path, "run-b", False, sandbox={"pool_size": 2}) as b:
            await _call(b, "recall")
            assert b.worker.pid != a.worker.pid


@pytest.mark.parametrize("shared", [True, False])
async def test_no_unknown_child_process_under_concurrent_runs(
    tmp_path: Path, shared: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """20 concurrent runs whose workers start, crash, restart and close: asyncio never logs
    "Unknown child process pid N" (each worker has one reaper, its pidfd on the loop)."""
    caplog.set_level(logging.DEBUG, logger="asyncio")
    sandbox = {"sandbox": {"shared": shared, "pool_size": 2}}

    async def run(i: int) -> None:
        async with _dispatcher(tmp_path, f"run-{i}", False, **sandbox) as d:
            await _call(d, "remember", value=str(i))
            if i % 5 == 0:
                await _call(d, "die")
            await _call(d, "recall")

    await asyncio.gather(*(run(i) for i in range(20)))
    await close_pool()
    assert "Unknown child process" not in caplog.text


def test_no_worker_home_folder_outlives_the_process(tmp_path: Path) -> None:
    """A plain worker's home folder is removed even when its pool was never closed: the
    event loop ended first, then the process."""
    code = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from agent.types import ToolCall
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.registry import ToolRegistry

async def main():
    ws = Path({str(tmp_path / "ws")!r})
    ws.mkdir()
    tools = ToolRegistry(list(ToolRegistry.default(plugins=False).select(["sql_tables"])))
    policies = ToolPolicies(workspace=ws, sandbox={{"use_bwrap": False}})
    async with Dispatcher(tools, policies, run_id="r", artifacts_dir=ws.parent / "art") as d:
        assert (await d.call(ToolCall("sql_tables", {{}}))).ok
        assert list(Path({str(tmp_path)!r}).glob("agent-worker-home-*")), "a home in use"

asyncio.run(main())
"""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob("agent-worker-home-*"))


def _status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split()[1]
    raise AssertionError(f"no {field} for {pid}")


async def test_plain_workers_are_forked_from_one_pre_warmed_template(tmp_path: Path) -> None:
    """A group's plain workers are forks of one single-threaded process that has DuckDB
    loaded already; their environment and isolation are a started worker's."""
    pool = {"sandbox": {"pool_size": 2}}
    async with (
        _dispatcher(tmp_path, "run-a", False, **pool) as a,
        _dispatcher(tmp_path, "run-b", False, **pool) as b,
    ):
        await _call(a, "remember", value="alpha")
        await _call(b, "remember", value="beta")  # a is busy: b gets a second worker
        assert a.worker.pid != b.worker.pid
        template = a.worker._group.template
        assert template is not None and template.alive and template.forks == 2
        assert int(_status(a.worker.pid, "PPid")) == int(_status(b.worker.pid, "PPid"))
        assert int(_status(a.worker.pid, "PPid")) == template.pid != os.getpid()
        assert _status(template.pid, "Threads") == "1", "fork copies one thread: it is alone"
        assert "duckdb" in Path(f"/proc/{template.pid}/maps").read_text(), "DuckDB pre-loaded"
        assert "duckdb" in Path(f"/proc/{a.worker.pid}/maps").read_text()
        recalled = [json.loads((await _call(d, "recall")).content) for d in (a, b)]
        assert [r["value"] for r in recalled] == ["alpha", "beta"]


@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not usable here")
async def test_bubblewrap_workers_each_have_a_sandbox_of_their_own(tmp_path: Path) -> None:
    pool = {"sandbox": {"pool_size": 2}}
    async with (
        _dispatcher(tmp_path, "run-a", True, **pool) as a,
        _dispatcher(tmp_path, "run-b", True, **pool) as b,
    ):
        await _call(a, "remember", value="alpha")
        await _call(b, "remember", value="beta")
        assert a.worker.pid != b.worker.pid and a.worker._group.template is None
        assert int(_status(a.worker.pid, "PPid")) == int(_status(b.worker.pid, "PPid"))
        assert int(_status(a.worker.pid, "PPid")) == os.getpid(), "each is a bwrap of ours"


async def test_a_dead_template_takes_its_workers_and_is_replaced(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, "run-a", False) as a:
        await _call(a, "remember", value="alpha")
        worker, template = a.worker.pid, a.worker._group.template
        os.kill(template.pid, 9)
        for _ in range(200):  # the worker dies with its template
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the worker outlived its template")
        after = await _call(a, "recall")
        assert after.ok and json.loads(after.content)["value"] is None, "a new worker"
        assert a.worker.starts == 2 and a.worker._group.template is not template
        assert a.worker._group.template.alive


async def test_a_crash_retires_the_template_but_spares_its_other_workers(
    tmp_path: Path,
) -> None:
    """A worker that dies unbidden retires its template (the next worker comes from a new
    one, with a new address-space layout); the template's other workers keep their runs and
    it stops with the last of them."""
    pool = {"sandbox": {"pool_size": 2}}
    async with _dispatcher(tmp_path, "run-b", False, **pool) as b:
        async with _dispatcher(tmp_path, "run-a", False, **pool) as a:
            await _call(a, "remember", value="alpha")
            await _call(b, "remember", value="beta")
            first = a.worker._group.template
            assert (await _call(a, "die")).error == "execution"
            assert first.retired and first.alive, "b's worker still needs it"
            assert json.loads((await _call(a, "recall")).content)["value"] is None
            assert a.worker._group.template is not first, "a fresh template"
            assert json.loads((await _call(b, "recall")).content)["value"] == "beta"
        await b.worker._worker.kill("")  # as if it idled out: stopped by the pool
    for _ in range(100):
        if not first.alive:
            return
        await asyncio.sleep(0.05)
    pytest.fail("a retired template outlived its last worker")


async def test_a_template_retires_after_its_fork_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pool, "FORKS_PER_TEMPLATE", 2)
    pool = {"sandbox": {"pool_size": 3}}
    async with (
        _dispatcher(tmp_path, "run-a", False, **pool) as a,
        _dispatcher(tmp_path, "run-b", False, **pool) as b,
        _dispatcher(tmp_path, "run-c", False, **pool) as c,
    ):
        for d in (a, b, c):
            await _call(d, "remember", value=d.run_id)
        assert a.worker._group.template is not None
        templates = {int(_status(d.worker.pid, "PPid")) for d in (a, b, c)}
        assert len(templates) == 2, "the third worker came from a second template"
