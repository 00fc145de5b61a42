"""Persistence: where runs persist, SQLite/memory/Postgres checkpointers, resume across agents.

Postgres tests (marked ``postgres``) need ``AGENT_TEST_POSTGRES_URL``; ``.ci/run`` starts a
local cluster and sets it. Without it, or when the server cannot be reached, they skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
import traceback
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from agent.api import Agent
from agent.errors import ConfigError
from agent.events import ToolResultEvent
from agent.persistence import StoreLocation, open_persistence, redact_url, store_location
from agent.sim import ScriptPolicy
from tests.conftest import postgres_url
from tests.fakes import CALLS, add, call, launch
from tools.base import tool

# --- where things persist ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "kind", "folder", "url"),
    [
        (".agent", "sqlite", Path(".agent"), None),
        (Path("/tmp/x"), "sqlite", Path("/tmp/x"), None),
        (None, "memory", None, None),
        (
            "postgresql://u:pw@db:5432/agent",
            "postgres",
            Path(".agent"),
            "postgresql://u:pw@db:5432/agent",
        ),
        ("postgres://db/agent", "postgres", Path(".agent"), "postgres://db/agent"),
    ],
)
def test_store_location(store: Any, kind: str, folder: Path | None, url: str | None) -> None:
    location = store_location(store)
    assert (location.kind, location.folder, location.postgres_url) == (kind, folder, url)


def test_store_location_passes_through_and_takes_a_folder() -> None:
    location = StoreLocation(Path("runs"), "postgresql://db/x")
    assert store_location(location) is location
    assert store_location("postgresql://db/x", folder="local").folder == Path("local")


def test_store_location_refuses_other_urls_without_the_password() -> None:
    with pytest.raises(ConfigError, match="postgresql://") as info:
        store_location("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://h/db?sslmode=require&password=pw",
            "postgresql://h/db?sslmode=require&password=***",
        ),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_repr_hides_the_password() -> None:
    location = store_location("postgresql://u:hunter2@db/x")
    assert "hunter2" not in repr(location) and "u:***@db" in repr(location)


# --- SQLite and memory -------------------------------------------------------------------


async def test_sqlite_tool_results_survive_reopening(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    async with AsyncExitStack() as stack:
        _, kv = await open_persistence(store_location(folder), stack)
        await kv.aput(("tool_results", "run_1"), "key", {"content": "42"})
    assert {"checkpoints.db", "store.db"} <= {p.name for p in folder.iterdir()}
    async with AsyncExitStack() as stack:
        _, kv = await open_persistence(store_location(folder), stack)
        item = await kv.aget(("tool_results", "run_1"), "key")
    assert item is not None and item.value == {"content": "42"}


async def test_memory_keeps_nothing_on_disk(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    async with AsyncExitStack() as stack:
        saver, kv = await open_persistence(None, stack)
        await kv.aput(("ns",), "k", {"v": 1})
        assert (await kv.aget(("ns",), "k")).value == {"v": 1}
    assert type(saver).__name__ == "InMemorySaver"
    assert list(tmp_path.iterdir()) == []


async def test_sqlite_agent_run_checkpoints_into_the_folder(sim: Any, tmp_path: Path) -> None:
    sim.policy = ScriptPolicy([call("add", a=2, b=40), "The sum is 42."])
    folder = tmp_path / ".agent"
    async with Agent(sim.url, tools=(add,), store=folder) as agent:
        result = await agent.run("2 + 40?")
    assert result.status == "done"
    assert result.trace_path == str(folder / "traces" / f"{result.run_id}.jsonl")
    with sqlite3.connect(folder / "checkpoints.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = ?", (result.run_id,)
        ).fetchone()
    assert count > 0
    async with AsyncExitStack() as stack:
        _, kv = await open_persistence(folder, stack)
        saved = await kv.asearch(("tool_results", result.run_id))
    assert [item.value["content"] for item in saved] == ["42"]


async def test_missing_postgres_extra_says_how_to_install(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)
    with pytest.raises(ConfigError, match=r"pip install -e '.\[postgres\]'") as info:
        async with AsyncExitStack() as stack:
            await open_persistence(store_location("postgresql://u:hunter2@db/x"), stack)
    assert "hunter2" not in str(info.value)


async def test_unreachable_postgres_names_the_address_not_the_password() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://agent:s3cr3t-pw@127.0.0.1:{port}/agent?connect_timeout=3"
    agent = Agent("http://127.0.0.1:9", store=url)
    with pytest.raises(ConfigError) as info:
        await agent.run("hi")
    await agent.aclose()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "cannot reach Postgres" in message
    assert "s3cr3t-pw" not in "".join(traceback.format_exception(info.value))


# --- Postgres ----------------------------------------------------------------------------


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The test database's URL; skips when it is not configured or not reachable."""
    url = postgres_url()
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {redact_url(url)} is not reachable: {exc}")
    await conn.close()
    yield url


async def _query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await (await conn.execute(sql, params)).fetchall()


@pytest.mark.postgres
async def test_postgres_agent_run_end_to_end(
    sim: Any, pg_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)  # the local folder defaults to ./.agent
    sim.policy = ScriptPolicy([call("add", a=2, b=40), "The sum is 42."])
    async with Agent(sim.url, tools=(add,), store=pg_url) as agent:
        result = await agent.run("2 + 40?")
    assert result.status == "done" and result.answer == "The sum is 42."
    rows = await _query(
        pg_url, "SELECT count(*) FROM checkpoints WHERE thread_id = %s", result.run_id
    )
    assert rows[0][0] > 0
    saved = await _query(
        pg_url, "SELECT value FROM store WHERE prefix = %s", f"tool_results.{result.run_id}"
    )
    assert [value["content"] for (value,) in saved] == ["42"]
    local = tmp_path / ".agent"
    assert result.trace_path == str(Path(".agent", "traces", f"{result.run_id}.jsonl"))
    assert (tmp_path / result.trace_path).exists()  # traces stay local; the run row does not
    assert not (local / "runs.db").exists()
    runs = await _query(pg_url, "SELECT status FROM runs WHERE run_id = %s", result.run_id)
    assert runs == [("done",)]
    assert not (local / "checkpoints.db").exists() and not (local / "store.db").exists()


@pytest.mark.postgres
async def test_postgres_run_paused_for_approval_resumes_in_another_agent(
    sim: Any, pg_url: str, tmp_path: Path
) -> None:
    CALLS.clear()
    sim.policy = ScriptPolicy([call("launch", target="probe"), "Launched."])
    # Two agents with different local folders, as on two hosts: only Postgres is shared.
    first = StoreLocation(tmp_path / "host1", pg_url)
    async with Agent(sim.url, tools=(launch,), store=first) as agent:
        paused = await agent.run("launch it")
    assert paused.status == "awaiting_approval" and CALLS == []
    second = StoreLocation(tmp_path / "host2", pg_url)
    async with Agent(sim.url, tools=(launch,), store=second) as agent:
        resumed = await agent.run(run_id=paused.run_id, approve="all")
    assert (resumed.status, resumed.answer) == ("done", "Launched.")
    assert CALLS == [("launch", "probe")]


@pytest.mark.postgres
async def test_postgres_tool_results_survive_reopening(pg_url: str) -> None:
    namespace = ("tool_results", f"run_{os.getpid()}_{id(pg_url)}")
    async with AsyncExitStack() as stack:
        _, kv = await open_persistence(store_location(pg_url), stack)
        await kv.aput(namespace, "key", {"content": "42"})
    async with AsyncExitStack() as stack:
        _, kv = await open_persistence(store_location(pg_url), stack)
        item = await kv.aget(namespace, "key")
        await kv.adelete(namespace, "key")
    assert item is not None and item.value == {"content": "42"}


def _open_after(folder: str, barrier: Any) -> None:
    """In a worker process: open a SQLite store in ``folder`` as the others do."""

    async def go() -> None:
        async with AsyncExitStack() as stack:
            await open_persistence(store_location(folder), stack)

    barrier.wait()
    asyncio.run(go())


def test_sqlite_setup_by_processes_starting_together(tmp_path: Path) -> None:
    """Workers of `agent serve --workers` open a fresh store at once: LangGraph's store
    migrations run side by side failed one of them ("duplicate column name")."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        folder = str(tmp_path / f"fresh{attempt}")
        barrier = context.Barrier(4)
        procs = [context.Process(target=_open_after, args=(folder, barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 4


@pytest.mark.postgres
async def test_postgres_concurrent_setup(pg_url: str) -> None:
    async def open_one() -> str:
        async with AsyncExitStack() as stack:
            saver, _ = await open_persistence(store_location(pg_url), stack)
            return type(saver).__name__

    assert await asyncio.gather(*(open_one() for _ in range(3))) == ["AsyncPostgresSaver"] * 3


@pytest.mark.postgres
async def test_postgres_concurrent_setup_of_a_fresh_database(pg_url: str) -> None:
    """Processes starting together on an empty database (here: an empty schema) all start:
    one creates the tables while the others wait without holding a snapshot that its
    ``CREATE INDEX CONCURRENTLY`` would wait for (that was a deadlock, 1 start in 2)."""
    import uuid

    import psycopg

    schema = f"fresh_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            for _ in range(3):
                await admin.execute(f"DROP SCHEMA {schema} CASCADE")
                await admin.execute(f"CREATE SCHEMA {schema}")

                async def open_one() -> str:
                    async with AsyncExitStack() as stack:
                        saver, _ = await open_persistence(store_location(url), stack)
                        return type(saver).__name__

                names = await asyncio.gather(*(open_one() for _ in range(4)))
                assert names == ["AsyncPostgresSaver"] * 4
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.postgres
async def test_postgres_wrong_password_is_not_echoed(pg_url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(pg_url)
    user, host = parts.username or "postgres", parts.netloc.rpartition("@")[2]
    url = parts._replace(netloc=f"{user}:wr0ng-pa55@{host}").geturl()
    with pytest.raises(ConfigError, match="cannot reach Postgres") as info:
        async with AsyncExitStack() as stack:
            await open_persistence(store_location(url), stack)
    assert host in str(info.value) or host + ":5432" in str(info.value)
    assert "wr0ng-pa55" not in "".join(traceback.format_exception(info.value))


@tool
def quick(x: int) -> int:
    """Answer at once.

    Args:
        x: A number.
    """
    CALLS.append(("quick", x))
    return x


@tool
async def hang(x: int) -> int:
    """Hang the first time (until the run is cancelled), answer at once after.

    Args:
        x: A number.
    """
    CALLS.append(("hang", x))
    if CALLS.count(("hang", x)) == 1:
        await asyncio.sleep(3600)
    return x


@pytest.mark.postgres
async def test_postgres_interrupted_run_resumes_without_repeating_calls(
    sim: Any, pg_url: str, tmp_path: Path
) -> None:
    CALLS.clear()
    sim.policy = ScriptPolicy([call("quick", x=1) + "\n" + call("hang", x=2), "Both done."])
    run_id = f"run_pg_{os.getpid()}_{id(tmp_path):x}"
    async with Agent(
        sim.url, tools=(quick, hang), store=StoreLocation(tmp_path / "a", pg_url), approval="none"
    ) as agent:
        task = asyncio.create_task(agent.run("go", run_id=run_id))
        for _ in range(500):  # until both calls started and quick's result is saved
            await asyncio.sleep(0.01)
            if ("hang", 2) in CALLS and await _query(
                pg_url, "SELECT 1 FROM store WHERE prefix = %s", f"tool_results.{run_id}"
            ):
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with Agent(
        sim.url, tools=(quick, hang), store=StoreLocation(tmp_path / "b", pg_url), approval="none"
    ) as agent:
        events: list[Any] = []
        result = await agent.run(run_id=run_id, on_event=events.append)
    assert (result.status, result.answer) == ("done", "Both done.")
    reused = {e.result.name: e.reused for e in events if isinstance(e, ToolResultEvent)}
    assert reused == {"quick": True, "hang": False}
    assert CALLS == [("quick", 1), ("hang", 2), ("hang", 2)], "quick must not run twice"


async def test_a_locked_run_store_never_blocks_the_event_loop(sim: Any, tmp_path: Path) -> None:
    """Another process holds the run store's write lock: the run waits for it on the I/O
    thread (agent._io) while the loop goes on; once it is released, the run completes."""
    sim.policy = ScriptPolicy(["Hello."])
    folder = tmp_path / ".agent"
    async with Agent(sim.url, store=folder) as agent:
        await agent.run("warm up: creates runs.db")
        holder = sqlite3.connect(folder / "runs.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            run = asyncio.create_task(agent.run("hi"))
            ticks = 0
            for _ in range(20):  # if the store's write were on the loop, none would tick
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not run.done(), "the run waits for the lock, the loop not"
        finally:
            holder.execute("COMMIT")
            holder.close()
        result = await run
    assert result.status == "done" and result.answer == "Hello."


def test_an_agent_never_closed_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    """A script that forgets ``await agent.aclose()`` still exits (aiosqlite's connection
    thread would otherwise hold the interpreter at shutdown forever)."""
    import subprocess

    code = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from agent import Agent
from agent.sim import ScriptPolicy
from agent.testing import run_sim

async def main(url):
    agent = Agent(url, store={str(tmp_path / "store")!r})
    print((await agent.run("hi")).status, flush=True)

with run_sim(ScriptPolicy(["ok"])) as sim:
    asyncio.run(main(sim.url))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "done", done.stderr
