"""SqlEngine's legitimate use: real DuckDB over real files in tmp_path."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb
import pytest

from agent.errors import (
    ConfigError,
    ToolArgumentError,
    ToolExecutionError,
    ToolPolicyError,
    ToolTimeout,
)
from tools._sqlrender import format_cell, render_table
from tools.policy import SqlPolicy
from tools.sql import SqlEngine, check_statement


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with a CSV, a Parquet and a JSON file; the cwd is restored afterwards."""
    monkeypatch.chdir(tmp_path)  # the engine chdirs into the workspace; this undoes it
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "sales.csv").write_text("region,amount\nnorth,10\nsouth,32\n")
    (root / "data" / "events.json").write_text('[{"kind": "a", "n": 1}, {"kind": "b", "n": 2}]')
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT 7 AS id, 'x' AS tag) TO '{root / 'data' / 'ids.parquet'}'")
    return root


def _engine(ws: Path, file_writes: bool = False, **policy: object) -> SqlEngine:
    return SqlEngine(SqlPolicy(**policy), ws, file_writes=file_writes)  # type: ignore[arg-type]


def _make_db(ws: Path) -> None:
    with duckdb.connect(str(ws / "shop.duckdb")) as con:
        con.execute("CREATE TABLE items(id INTEGER, name VARCHAR, price DOUBLE)")
        con.execute("INSERT INTO items VALUES (1, 'pen', 1.5), (2, 'ink', NULL)")
        con.execute("CREATE VIEW cheap AS SELECT * FROM items WHERE price < 2")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT region, amount FROM 'data/sales.csv' ORDER BY amount", "north|10\nsouth|32"),
        ("SELECT * FROM './data/sales.csv' WHERE amount > 20", "south|32"),
        ("SELECT * FROM read_csv('data/sales.csv') WHERE amount < 20", "north|10"),
        ("SELECT id, tag FROM 'data/ids.parquet'", "7|x"),
        ("SELECT kind, n FROM 'data/events.json' ORDER BY n", "a|1\nb|2"),
        ("SELECT count(*) AS n FROM glob('data/*')", "3"),
    ],
)
def test_workspace_files_by_relative_path(ws: Path, sql: str, expected: str) -> None:
    assert _engine(ws).query(sql).endswith(expected)


def test_result_header_names_types_and_count(ws: Path) -> None:
    out = _engine(ws).query("SELECT region, amount FROM 'data/sales.csv' ORDER BY 1")
    assert out.splitlines()[:2] == ["2 rows", "region:VARCHAR|amount:BIGINT"]


def test_database_file_tables_and_views(ws: Path) -> None:
    _make_db(ws)
    engine = _engine(ws, database=Path("shop.duckdb"))
    assert engine.query("SELECT name, price FROM items ORDER BY id").endswith("pen|1.5\nink|NULL")
    assert engine.query("SELECT name FROM cheap").endswith("pen")
    listing = engine.tables()
    assert "items(id:INTEGER, name:VARCHAR, price:DOUBLE)" in listing
    assert "view cheap(" in listing
    assert "'data/sales.csv'(region:VARCHAR, amount:BIGINT)" in listing
    assert "'data/ids.parquet'(id:INTEGER, tag:VARCHAR)" in listing
    assert "'data/events.json'(kind:VARCHAR, n:BIGINT)" in listing


def test_read_only_database_refuses_writes(ws: Path) -> None:
    _make_db(ws)
    engine = _engine(ws, database=Path("shop.duckdb"))
    with pytest.raises(ToolPolicyError, match="INSERT"):
        engine.query("INSERT INTO items VALUES (3, 'cap', 9)")
    assert engine.query("SELECT count(*) FROM items").endswith("\n2")


def test_write_mode_dml_ddl_persist(ws: Path) -> None:
    engine = _engine(ws, True, database=Path("new.duckdb"), read_only=False)
    assert engine.query("CREATE TABLE t AS SELECT * FROM 'data/sales.csv'") == "OK, 2 rows affected"
    assert engine.query("INSERT INTO t VALUES ('east', 5)") == "OK, 1 rows affected"
    (ws / "out").mkdir()
    assert engine.query("COPY t TO 'out/t.csv'") == "OK, 3 rows affected"
    engine.close()
    with duckdb.connect(str(ws / "new.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (3,)
    assert (ws / "out" / "t.csv").read_text().count("\n") == 4


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT amount FROM 'data/sales.csv' WHERE region = ?", ["south"]),
        ("SELECT amount FROM 'data/sales.csv' WHERE region = $1", ["south"]),
        ("SELECT amount FROM 'data/sales.csv' WHERE region = $r", {"r": "south"}),
    ],
)
def test_params(ws: Path, sql: str, params: list | dict) -> None:
    assert _engine(ws).query(sql, params).endswith("amount:BIGINT\n32")


def test_params_of_wrong_shape_refused(ws: Path) -> None:
    with pytest.raises(ToolArgumentError, match="params"):
        _engine(ws).query("SELECT ?", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sql",
    [
        "WITH t AS (SELECT 1 AS a) SELECT * FROM t",
        "VALUES (1, 'a'), (2, 'b')",
        "DESCRIBE SELECT * FROM 'data/sales.csv'",
        "SHOW TABLES",
        "SUMMARIZE SELECT * FROM 'data/sales.csv'",
        "EXPLAIN SELECT * FROM 'data/sales.csv'",
        "EXPLAIN ANALYZE SELECT 1",
        "-- why\nEXPLAIN (FORMAT json) SELECT 1",
        "FROM 'data/sales.csv'",
        "PIVOT 'data/sales.csv' ON region IN ('north', 'south') USING sum(amount)",
        "SELECT 1 -- trailing comment\n;",
    ],
)
def test_select_like_statements_allowed_read_only(ws: Path, sql: str) -> None:
    assert "row" in _engine(ws).query(sql).splitlines()[0]


def test_unknown_table_lists_existing(ws: Path) -> None:
    _make_db(ws)
    with pytest.raises(ToolExecutionError) as info:
        _engine(ws, database=Path("shop.duckdb")).query("SELECT * FROM item")
    assert "item does not exist" in str(info.value)
    assert "items" in str(info.value) and "cheap" in str(info.value)
    assert "pg_sequences" not in str(info.value)


def test_syntax_error(ws: Path) -> None:
    with pytest.raises(ToolExecutionError, match="syntax error"):
        _engine(ws).query("SELEC 1")


def test_empty_query(ws: Path) -> None:
    with pytest.raises(ToolArgumentError, match="empty"):
        _engine(ws).query("  -- nothing\n")


def test_missing_file_message_has_no_host_path(ws: Path) -> None:
    with pytest.raises(ToolExecutionError) as info:
        _engine(ws).query(f"SELECT * FROM '{ws}/data/nope.csv'")
    assert str(ws.parent) not in str(info.value)
    assert "data/nope.csv" in str(info.value)


def test_results_show_workspace_paths_relative(ws: Path) -> None:
    out = _engine(ws).query("SELECT file FROM glob('data/*.csv')")
    assert out.endswith("\ndata/sales.csv") and str(ws) not in out


def test_relative_paths_survive_a_cwd_change(ws: Path, tmp_path: Path) -> None:
    engine = _engine(ws)
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")  # the ws fixture's monkeypatch restores the cwd
    assert engine.query("SELECT count(*) FROM 'data/sales.csv'").endswith("\n2")


def test_interrupt_from_another_thread_leaves_connection_usable(ws: Path) -> None:
    engine = _engine(ws, timeout_s=120)
    done = threading.Event()

    def keep_interrupting() -> None:
        while not done.wait(0.01):
            engine.interrupt()

    thread = threading.Thread(target=keep_interrupting)
    thread.start()
    try:
        with pytest.raises(ToolTimeout, match="interrupted"):
            engine.query("SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b")
    finally:
        done.set()
        thread.join()
    assert engine.query("SELECT 41 + 1 AS x").endswith("\n42")


def test_close_twice(ws: Path) -> None:
    engine = _engine(ws)
    engine.close()
    engine.close()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"database": Path("../outside.duckdb"), "read_only": False}, "inside the workspace"),
        ({"database": Path("missing.duckdb")}, "not found"),
        ({"memory_limit": "lots"}, "memory_limit"),
    ],
)
def test_bad_configuration(ws: Path, policy: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _engine(ws, **policy)
    assert not (ws.parent / "outside.duckdb").exists()


def test_check_statement_returns_the_statement() -> None:
    statement = check_statement("SELECT 1;", read_only=True)
    assert statement.type == duckdb.StatementType.SELECT


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "NULL"),
        ("", "''"),
        ("a|b", "a\\|b"),
        ("two\nlines", "two\\nlines"),
        ("x" * 500, "x" * 200 + "…"),
        (list(range(10**6)), None),
        (b"\x00\x01", "b'\\x00\\x01'"),
        ({"k": [1, None]}, "{k: [1, None]}"),
    ],
)
def test_format_cell(value: object, shown: str | None) -> None:
    text = format_cell(value)
    assert "\n" not in text and len(text) <= 201
    if shown is not None:
        assert text == shown


def test_render_table_respects_byte_cap() -> None:
    rows = [(i, "y" * 150) for i in range(100)]
    out = render_table(["i", "s"], ["INTEGER", "VARCHAR"], rows, total=100, max_bytes=1000)
    assert len(out) <= 1000
    assert out.startswith("100 rows (showing ") and "output cap reached" in out


def test_total_count_of_a_capped_query_uses_the_params(ws: Path) -> None:
    out = _engine(ws, max_rows=10).query("SELECT * FROM range($n) -- note", {"n": 1000})
    assert out.splitlines()[0] == "1000 rows (showing 10)"
