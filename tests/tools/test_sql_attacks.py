"""SECURITY.md's SQL checklist against the real, locked engine.

Every attack must fail with a clear ``ToolError`` and leave the sentinel outside the workspace
unread (its secret never appears in any output) and unwritten (the outside folder unchanged).
Resource attacks run with small caps (0.5 s, 64 MB) so the suite stays fast.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from agent.errors import ToolError, ToolExecutionError, ToolPolicyError, ToolTimeout
from tools.policy import SqlPolicy
from tools.sql import SqlEngine

SECRET = "TOP-SECRET-SENTINEL-31337"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``outside/`` with sentinel files in several formats, built once."""
    base = tmp_path_factory.mktemp("sql")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"token\n{SECRET}\n")
    (outside / "secret.json").write_text(f'{{"token": "{SECRET}"}}')
    with duckdb.connect(str(outside / "secret.duckdb")) as con:
        con.execute(f"CREATE TABLE s AS SELECT '{SECRET}' AS token")
        con.execute(f"COPY s TO '{outside / 'secret.parquet'}'")
    return base


@pytest.fixture
def ws(base: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh workspace beside ``outside/``; afterwards ``outside/`` must be unchanged."""
    monkeypatch.chdir(base)
    root = Path(tempfile.mkdtemp(prefix="ws", dir=base))
    (root / "data").mkdir()
    (root / "data" / "ok.csv").write_text("a\n1\n")
    before = _snapshot(base / "outside")
    yield root
    assert _snapshot(base / "outside") == before, "something outside the workspace was written"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _engine(ws: Path, **policy: object) -> SqlEngine:
    """A locked engine. File writes are allowed, so COPY … TO meets DuckDB's own lock."""
    defaults: dict[str, object] = {"timeout_s": 0.5, "memory_limit": "64MB", "threads": 1}
    return SqlEngine(SqlPolicy(**(defaults | policy)), ws, file_writes=True)  # type: ignore[arg-type]


def _refused(engine: SqlEngine, sql: str, error: type[ToolError] = ToolPolicyError) -> str:
    """Run ``sql``, expect ``error``, check nothing leaked and the engine still works."""
    with pytest.raises(error) as info:
        engine.query(sql)
    message = str(info.value)
    assert SECRET not in message
    assert engine.query("SELECT 1 AS alive").endswith("\n1")
    return message


OUT = "{outside}"  # replaced by the absolute path of the outside folder

FILE_READS = [
    f"SELECT * FROM read_csv('{OUT}/secret.csv')",
    f"SELECT * FROM read_csv_auto('{OUT}/secret.csv')",
    f"SELECT * FROM read_text('{OUT}/secret.csv')",
    f"SELECT * FROM read_blob('{OUT}/secret.csv')",
    f"SELECT * FROM read_parquet('{OUT}/secret.parquet')",
    f"SELECT * FROM read_json('{OUT}/secret.json')",
    f"SELECT * FROM read_json_auto('{OUT}/secret.json')",
    f"SELECT * FROM '{OUT}/secret.csv'",
    f"SELECT * FROM glob('{OUT}/*')",
    f"SELECT * FROM glob('{OUT}/../*/*')",
    f"SELECT * FROM read_text('{OUT}/../ws/../outside/secret.csv')",
    "SELECT * FROM read_csv('../outside/secret.csv')",
    "SELECT * FROM read_text('data/../../outside/secret.csv')",
    "SELECT * FROM read_text('./../outside/*.csv')",
    "SELECT * FROM read_text('~/.bashrc')",
    "SELECT * FROM read_text('~/../../etc/passwd')",
    f"SELECT * FROM read_text('file://{OUT}/secret.csv')",
    f"SELECT * FROM read_text('file://localhost{OUT}/secret.csv')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_text('/proc/self/environ')",
    "SELECT * FROM read_csv('/etc/*')",
    f"SELECT * FROM read_csv(['data/ok.csv', '{OUT}/secret.csv'])",
    f"SELECT * FROM parquet_schema('{OUT}/secret.parquet')",
    f"SELECT * FROM parquet_metadata('{OUT}/secret.parquet')",
    f"SELECT * FROM sniff_csv('{OUT}/secret.csv')",
    f"SELECT * FROM query_table('{OUT}/secret.csv')",
]


@pytest.mark.parametrize("sql", FILE_READS)
def test_reading_outside_the_workspace_is_refused(ws: Path, sql: str) -> None:
    engine = _engine(ws)
    sql = sql.replace(OUT, str(ws.parent / "outside"))
    with pytest.raises(ToolError) as info:
        engine.query(sql)
    assert SECRET not in str(info.value)
    assert not isinstance(info.value, ToolTimeout)


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize("target", [f"{OUT}/stolen.csv", "../outside/stolen.csv", "~/stolen.csv"])
def test_copy_to_outside_is_refused(ws: Path, read_only: bool, target: str) -> None:
    target = target.replace(OUT, str(ws.parent / "outside"))
    _refused(_engine(ws, read_only=read_only), f"COPY (SELECT 1) TO '{target}'")
    assert not (Path.home() / "stolen.csv").exists()


def test_copy_from_outside_into_a_table_is_refused(ws: Path) -> None:
    engine = _engine(ws, read_only=False)
    engine.query("CREATE TABLE t(token VARCHAR)")
    _refused(engine, "COPY t FROM '../outside/secret.csv'")
    _refused(engine, "CREATE TABLE u AS SELECT * FROM '../outside/secret.csv'")
    assert engine.query("SELECT count(*) FROM t").endswith("\n0")


@pytest.mark.parametrize("read_only", [True, False])
@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        (f"EXPORT DATABASE '{OUT}/dump'", "EXPORT"),
        ("EXPORT DATABASE 'dump'", "EXPORT"),
        (f"IMPORT DATABASE '{OUT}'", "PRAGMA"),
        (f"ATTACH '{OUT}/secret.duckdb' AS s", "ATTACH"),
        ("ATTACH '../outside/secret.duckdb'", "ATTACH"),
        ("ATTACH 'inside.duckdb'", "ATTACH"),
        ("ATTACH ':memory:' AS m", "ATTACH"),
        ("DETACH memory", "DETACH"),
        ("INSTALL httpfs", "LOAD"),
        ("FORCE INSTALL httpfs FROM 'http://127.0.0.1:9/'", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        (f"LOAD '{OUT}/evil.duckdb_extension'", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("SET threads = 64", "SET"),
        ("SET GLOBAL memory_limit = '100GB'", "SET"),
        ("SET SESSION max_execution_time = 0", "SET"),
        ("RESET lock_configuration", "SET"),
        ("RESET memory_limit", "SET"),
        ("SET VARIABLE x = 1", "SET"),
        ("USE memory", "SET"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("PRAGMA memory_limit = '100GB'", "SET"),
        ("PRAGMA table_info('t')", "PRAGMA"),
        ("CALL duckdb_settings()", "CALL"),
        ("CHECKPOINT", "CALL"),
        ("CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')", "secret"),
        ("CREATE TEMPORARY SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')", "secret"),
        ("CREATE OR REPLACE PERSISTENT SECRET s (TYPE s3)", "secret"),
        ("/* hi */ CREATE -- there\n SECRET s (TYPE http)", "secret"),
        ("DROP SECRET s", "secret"),
    ],
)
def test_forbidden_statements_are_refused_by_type(
    ws: Path, read_only: bool, sql: str, kind: str
) -> None:
    engine = _engine(ws, read_only=read_only)
    message = _refused(engine, sql.replace(OUT, str(ws.parent / "outside")))
    assert kind in message and "allowed" in message
    assert not (ws / "dump").exists() and not (ws / "inside.duckdb").exists()


def test_update_extensions_is_refused(ws: Path) -> None:
    _refused(_engine(ws, read_only=False), "UPDATE EXTENSIONS")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM 'https://example.com/data.csv'",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
        "SELECT * FROM read_parquet('s3://bucket/x.parquet')",
        "SELECT * FROM read_json('hf://datasets/x/y.json')",
    ],
)
def test_urls_are_refused_without_network(ws: Path, sql: str) -> None:
    message = _refused(_engine(ws), sql)
    assert "refused by the sandbox" in message


def test_settings_cannot_be_changed_through_functions(ws: Path) -> None:
    engine = _engine(ws)
    _refused(engine, "SELECT * FROM query('SET enable_external_access = true')", ToolExecutionError)
    settings = engine.query(
        "SELECT current_setting('enable_external_access') AS ext, "
        "current_setting('lock_configuration') AS locked, "
        "current_setting('max_execution_time') AS ms, current_setting('threads') AS threads"
    )
    assert settings.endswith("\nfalse|true|500|1")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT 1; SET enable_external_access = true",
        "SELECT 1;\n-- comment\nDROP TABLE t",
        "SELECT 1; COPY (SELECT 1) TO '../outside/x.csv'",
        "SELECT ';'; ATTACH '../outside/secret.duckdb'",
    ],
)
def test_stacked_statements_are_refused(ws: Path, sql: str) -> None:
    engine = _engine(ws, read_only=False)
    engine.query("CREATE TABLE t(a INTEGER)")
    assert "one statement per call" in _refused(engine, sql)
    assert "t(a:INTEGER)" in engine.tables()


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE TABLE t(a INTEGER)", "CREATE"),
        ("CREATE VIEW v AS SELECT 1", "CREATE"),
        ("CREATE MACRO m(x) AS x", "CREATE"),
        ("INSERT INTO t VALUES (1)", "INSERT"),
        ("UPDATE t SET a = 1", "UPDATE"),
        ("DELETE FROM t", "DELETE"),
        ("DROP TABLE t", "DROP"),
        ("ALTER TABLE t ADD COLUMN b INTEGER", "ALTER"),
        ("COPY t FROM 'data/ok.csv'", "COPY"),
        ("COPY (SELECT 1) TO 'inside.csv'", "COPY"),
        ("BEGIN TRANSACTION", "TRANSACTION"),
        ("VACUUM", "VACUUM"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'inside.csv'", "COPY"),
        ("EXPLAIN (FORMAT json) CREATE TABLE x(a INTEGER)", "CREATE"),
        ("/* c */ EXPLAIN -- c\n ANALYZE /* c */ COPY (SELECT 1) TO 'inside.csv'", "COPY"),
        ("EXPLAIN (FORMAT '/*') COPY (SELECT 1) TO 'inside.csv' -- */) SELECT 1", "EXPLAIN"),
        ("MERGE INTO t USING t AS s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE_INTO"),
        ("PIVOT 'data/ok.csv' ON a", "MULTI"),
    ],
)
def test_non_select_refused_on_read_only_tool(ws: Path, sql: str, kind: str) -> None:
    message = _refused(_engine(ws), sql)
    assert f"not allowed: {kind}" in message and "SELECT" in message
    assert not (ws / "inside.csv").exists()


def test_read_only_database_file_stays_unchanged(ws: Path) -> None:
    with duckdb.connect(str(ws / "db.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a; CREATE SEQUENCE s")
    before = (ws / "db.duckdb").read_bytes()
    engine = _engine(ws, database=Path("db.duckdb"))
    _refused(engine, "SELECT nextval('s')", ToolExecutionError)
    engine.close()
    assert (ws / "db.duckdb").read_bytes() == before


def test_symlink_to_a_file_outside_is_refused(ws: Path) -> None:
    (ws / "data" / "link.csv").symlink_to(ws.parent / "outside" / "secret.csv")
    (ws / "passwd").symlink_to("/etc/passwd")
    engine = _engine(ws)
    assert "refused by the sandbox" in _refused(engine, "SELECT * FROM 'data/link.csv'")
    _refused(engine, "SELECT * FROM read_text('passwd')")
    assert "link.csv" not in engine.tables()


def test_symlink_to_a_folder_outside_is_refused(ws: Path) -> None:
    (ws / "escape").symlink_to(ws.parent / "outside", target_is_directory=True)
    engine = _engine(ws)
    _refused(engine, "SELECT * FROM read_text('escape/secret.csv')")
    _refused(engine, "SELECT * FROM read_csv('escape/*.csv')")


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM range(1e12::BIGINT)",
        "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        "SELECT count(*) FROM 'data/ok.csv' a, range(1e12::BIGINT) b WHERE b.range % 7 = a.a",
    ],
)
def test_runaway_queries_hit_the_time_cap(ws: Path, sql: str) -> None:
    assert "time limit" in _refused(_engine(ws), sql, ToolTimeout)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT length(string_agg(repeat('x', 1000), ',')) FROM range(10000000)",
        "SELECT length(list(range)::VARCHAR) FROM range(100000000)",
        "SELECT count(DISTINCT range::VARCHAR || 'padding-padding') FROM range(100000000)",
    ],
)
def test_memory_hungry_queries_hit_the_memory_cap(ws: Path, sql: str) -> None:
    # a generous time cap so the memory cap is what stops them
    assert "64MB memory limit" in _refused(_engine(ws, timeout_s=30), sql, ToolExecutionError)


def test_hundred_million_rows_are_capped(ws: Path) -> None:
    out = _engine(ws, max_rows=50).query("SELECT * FROM range(100000000)")
    lines = out.splitlines()
    assert lines[0] == "100000000 rows (showing 50)"
    assert lines[1] == "range:BIGINT" and lines[-1] == "49" and len(lines) == 52


def test_wide_rows_are_capped_by_bytes(ws: Path) -> None:
    engine = _engine(ws, max_rows=100, max_bytes=2000)
    out = engine.query("SELECT repeat('x', 100000) AS big, range FROM range(100000000)")
    assert len(out) <= 2000
    assert out.startswith("100000000 rows (showing ") and "output cap reached" in out


def test_uncountable_totals_fall_back_to_a_bound(ws: Path) -> None:
    engine = _engine(ws, max_rows=5)
    sql = "SELECT a.range FROM range(1000000) a, range(1000000) b WHERE a.range + b.range > -1"
    assert engine.query(sql).startswith("more than 5 rows (showing 5)")
