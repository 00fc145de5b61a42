"""Run store (real SQLite), JSONL traces (real files) and the `agent runs` commands."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.errors import ConfigError
from agent.runs import (
    _MIGRATIONS,
    TRACE_SCHEMA_VERSION,
    RunStore,
    TraceWriter,
    read_trace,
    resolve_store_path,
)
from agent.types import ToolCall, Usage
from tests.conftest import postgres_url


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / ".agent" / "runs.db")


def test_create_finish_get(store: RunStore, tmp_path: Path) -> None:
    rec = store.create("r1", task="demo", model_url="http://m:1", trace_path=tmp_path / "t")
    assert rec.status == "running" and rec.finished_at is None and rec.duration_s is None
    done = store.finish(
        "r1", status="done", answer="42", steps=3, tool_calls=2, usage=Usage(100, 20, 64)
    )
    assert done.status == "done" and done.answer == "42"
    assert (done.steps, done.tool_calls) == (3, 2)
    assert done.usage == Usage(100, 20, 64)
    assert done.finished_at is not None and done.duration_s >= 0
    assert done.trace_path == str(tmp_path / "t")
    assert store.get("nope") is None


def test_update_and_validation(store: RunStore) -> None:
    store.create("r1", task="demo")
    assert store.update("r1", steps=5, usage=Usage(1, 2)).usage == Usage(1, 2, None)
    with pytest.raises(TypeError, match="colour"):
        store.update("r1", colour="red")
    with pytest.raises(ValueError, match="status"):
        store.update("r1", status="great")
    with pytest.raises(KeyError):
        store.finish("ghost", status="done")
    with pytest.raises(ValueError, match="already exists"):
        store.create("r1", task="again")


def test_list_newest_first_with_status_filter(store: RunStore) -> None:
    for i in range(5):
        store.create(f"r{i}", task="demo")
    store.finish("r1", status="error", error="boom")
    store.finish("r3", status="error", error="boom")
    assert [r.run_id for r in store.list()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.run_id for r in store.list(limit=2)] == ["r4", "r3"]
    assert [r.run_id for r in store.list(status="error")] == ["r3", "r1"]


def test_migrations_idempotent_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore(path).create("r1", task="demo")
    again = RunStore(path)  # reopening must not re-run migrations or lose rows
    assert again.schema_version() == len(_MIGRATIONS)
    assert again.get("r1") is not None
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(_MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    RunStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999)")
    with pytest.raises(ConfigError, match="schema version 999"):
        RunStore(path)


def test_two_stores_and_another_process_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    a, b = RunStore(path), RunStore(path)
    a.create("from-a", task="x")
    b.finish("from-a", status="done", steps=1)
    code = (
        "import sys; from agent.runs import RunStore;"
        "s = RunStore(sys.argv[1]); s.create('from-proc', task='y');"
        "print(s.get('from-a').status)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "done"
    assert {r.run_id for r in a.list()} == {"from-a", "from-proc"}


def test_resolve_store_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AGENT_STORE", raising=False)
    assert resolve_store_path() == Path(".agent/runs.db")
    assert resolve_store_path(tmp_path / "x.db") == tmp_path / "x.db"
    monkeypatch.setenv("AGENT_STORE", str(tmp_path / "s"))
    assert resolve_store_path() == tmp_path / "s" / "runs.db"
    with pytest.raises(ConfigError, match="postgres URL"):
        resolve_store_path("postgres://u:secret@db/x")


# ---- traces ---------------------------------------------------------------------------


def test_trace_roundtrip_and_append_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "r1.jsonl"
    with TraceWriter(path, run_id="r1") as tw:
        tw.write("run_started", task="demo")
        tw.write("prompt", step=1, text="<|im_start|>user\nhé\n", chars=20)
        tw.write(
            "model_output",
            step=1,
            text="raw",
            tool_calls=[ToolCall("f", {"a": 1}, "c1")],
            usage=Usage(10, 2),
            path=Path("/x"),
        )
    with TraceWriter(path, run_id="r1") as tw:
        tw.write("final", answer="done")
    events = read_trace(path)
    assert [e["type"] for e in events] == ["run_started", "prompt", "model_output", "final"]
    assert all(e["v"] == TRACE_SCHEMA_VERSION and e["run_id"] == "r1" for e in events)
    assert events[1]["text"] == "<|im_start|>user\nhé\n"
    assert events[2]["tool_calls"] == [{"name": "f", "arguments": {"a": 1}, "id": "c1"}]
    assert events[2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 2,
        "cached_tokens": None,
    }
    assert events[2]["path"] == "/x"
    assert path.read_text().count("\n") == 4


def test_trace_is_readable_while_open(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    tw = TraceWriter(path, run_id="r")
    tw.write("prompt", step=1, text="x")
    assert [e["type"] for e in read_trace(path)] == ["prompt"]  # no close needed
    tw.close()
    tw.close()


def test_killed_writer_leaves_readable_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    TraceWriter(path, run_id="r").write("prompt", step=1, text="x")
    with path.open("a") as f:
        f.write('{"v": "1.0", "type": "model_out')  # cut mid-line by a kill
    assert [e["type"] for e in read_trace(path)] == ["prompt"]
    TraceWriter(path, run_id="r").write("final", answer="a")  # resume appends cleanly
    with pytest.raises(ConfigError, match=r"t\.jsonl:2: not a JSON trace event"):
        read_trace(path)  # the broken line is no longer the last one: an honest error


def test_unknown_major_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"v": "1.3", "type": "prompt"}\n{"v": "2.1", "type": "prompt"}\n'
        '{"v": "3.0", "type": "prompt"}\n'
    )
    with pytest.raises(ConfigError, match=r"t\.jsonl:3: trace format version 3\.0"):
        read_trace(path)


# ---- CLI ------------------------------------------------------------------------------


def _seed(tmp_path: Path) -> Path:
    db = tmp_path / "runs.db"
    store = RunStore(db)
    trace = tmp_path / "r-ok.jsonl"
    with TraceWriter(trace, run_id="r-ok") as tw:
        tw.write("prompt", step=1, text="P" * 1234)
        tw.write(
            "model_output",
            step=1,
            text="calling [bold]x[/bold]",
            tool_calls=[{"name": "sql_query", "arguments": {"q": "select 1"}}],
            errors=[{"raw": "<tool_call>{", "reason": "unterminated"}],
            usage={"prompt_tokens": 300, "completion_tokens": 12},
        )
        tw.write("tool_call", step=1, id="c1", name="sql_query", arguments={"q": "select 1"})
        tw.write("tool_result", step=1, id="c1", name="sql_query", content="1 row: 1")
        tw.write("final", answer="one")
    store.create("r-ok", task="demo", trace_path=trace, model_url="http://m:1")
    store.finish("r-ok", status="done", answer="one", steps=1, tool_calls=1, usage=Usage(300, 12))
    store.create("r-bad", task="other")
    store.finish("r-bad", status="error", error="backend down")
    return db


def test_cli_list(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    out = CliRunner().invoke(main, ["runs", "list", "--store", str(db)])
    assert out.exit_code == 0, out.output
    assert "r-ok" in out.output and "r-bad" in out.output and "312" in out.output
    js = CliRunner().invoke(
        main, ["runs", "list", "--json", "--status", "error", "--store", str(db)]
    )
    rows = [json.loads(line) for line in js.output.splitlines()]
    assert [r["run_id"] for r in rows] == ["r-bad"]
    assert rows[0]["error"] == "backend down"


def test_cli_list_env_store_and_missing_store(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    out = CliRunner().invoke(main, ["runs", "list", "--json"], env={"AGENT_STORE": str(db)})
    assert len(out.output.splitlines()) == 2
    missing = tmp_path / "none"
    out = CliRunner().invoke(main, ["runs", "list", "--store", str(missing)])
    assert out.exit_code == 2 and "no run store" in out.output  # a typo is not "no runs"
    assert not missing.exists()  # a read-only command creates nothing


def test_cli_show(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    out = CliRunner().invoke(main, ["runs", "show", "r-ok", "--store", str(db)], terminal_width=200)
    assert out.exit_code == 0, out.output
    for text in (
        "1,234 chars",
        "calling [bold]x[/bold]",
        'sql_query({"q": "select 1"})',
        "malformed: unterminated",
        "1 row: 1",
        "one",
    ):
        assert text in out.output, text
    js = CliRunner().invoke(main, ["runs", "show", "r-ok", "--json", "--store", str(db)])
    data = json.loads(js.output)
    assert data["run"]["status"] == "done" and len(data["trace"]) == 5


def test_cli_show_unknown_id_exits_2(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    out = CliRunner().invoke(main, ["runs", "show", "nope", "--store", str(db)])
    assert out.exit_code == 2
    assert "no run 'nope'" in out.output


def test_cli_show_missing_trace_still_shows_record(tmp_path: Path) -> None:
    db = _seed(tmp_path)
    out = CliRunner().invoke(main, ["runs", "show", "r-bad", "--store", str(db)])
    assert out.exit_code == 0
    assert "backend down" in out.output and "no trace" in out.output


# ---- the same store on Postgres --------------------------------------------------------


@pytest.mark.postgres
def test_postgres_run_store_matches_sqlite(tmp_path: Path) -> None:
    import uuid

    import psycopg

    from agent._db import PostgresDatabase
    from agent.runs import StoredEvent

    url = postgres_url()
    schema = "runs_" + uuid.uuid4().hex[:10]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{url}?options=-csearch_path%3D{schema}"
    try:
        pg = RunStore(PostgresDatabase(scoped))
        again = RunStore(PostgresDatabase(scoped))  # migrations run once
        assert pg.schema_version() == again.schema_version() == len(_MIGRATIONS)
        for i in range(3):
            pg.create(f"run_20261130T000000_abc{i}", task="demo")
        pg.finish("run_20261130T000000_abc1", status="done", steps=2, usage=Usage(10, 2))
        record = again.get("run_20261130T000000_abc1")
        assert record.status == "done" and record.usage.total_tokens == 12
        assert record.started_at > 1e9 and record.finished_at - record.started_at < 60
        assert again.find("abc2").run_id == "run_20261130T000000_abc2"
        assert [r.run_id for r in pg.list(status="done")] == ["run_20261130T000000_abc1"]
        with pytest.raises(ValueError, match="already exists"):
            pg.create("run_20261130T000000_abc0", task="demo")
        events = [StoredEvent("r", n, "text", '{"kind": "text"}', 1.0) for n in (1, 2, 3)]
        pg.append_events(events)
        pg.append_events(events[2:])  # written once
        assert [e.seq for e in again.events("r", after=1)] == [2, 3]
        assert again.last_seq("r") == 3 and again.last_seq("none") == 0
        pg.db.close()
        again.db.close()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
