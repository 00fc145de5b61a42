"""DuckDB behind ``sql_query`` and ``sql_tables``: one engine per sandbox worker.

Two walls, each enough on its own for the cases it covers:

1. **Statement types.** ``duckdb.extract_statements`` must find exactly one statement, and its
   type must be allowed: SELECT-like (SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN
   of those) when ``policy.read_only``; DML/DDL/COPY/transactions too otherwise. ATTACH,
   DETACH, INSTALL, LOAD, SET/RESET/USE, PRAGMA, CALL, EXPORT/IMPORT and CREATE/DROP SECRET
   are always refused. ``EXPLAIN ANALYZE`` runs its statement, so the inner one is checked.
2. **DuckDB's own lock.** ``allowed_directories`` = the workspace (resolved; DuckDB resolves
   symlinks before checking, measured on 2.0.1), then ``enable_external_access=false``, then
   ``lock_configuration=true``: files outside the workspace, URLs, extension loading, secrets
   and every later SET are refused by DuckDB itself, whatever text reached it. Spilling to disk
   is off (``temp_directory=''``): a query over ``memory_limit`` fails instead of filling the
   disk. ``max_execution_time`` (DuckDB >= 1.4, locked) is the time cap, so no watchdog thread.

Relative paths (``SELECT * FROM 'data/sales.csv'``): DuckDB resolves them against the process
working directory before its directory check (``file_search_path`` is applied after the check,
so it does not help under the lock). The engine therefore ``chdir``\\s into the workspace and
re-asserts it before each call. That is a process-wide side effect, acceptable because the
engine lives in a per-run worker process; tests restore the cwd themselves.

Row counts: at most ``max_rows + 1`` rows are fetched (then the result is aborted, as 2.0.1
requires). When there are more, the total comes from ``SELECT count(*) FROM (<query>)`` under
the same time cap; if that fails the model is told "more than N". The count re-runs the query,
so a capped call may cost up to twice the time limit; the worker's hard timeout sits above it.

Symlink races (swap a link between DuckDB's check and its open) are not stopped here; the OS
sandbox around the worker (bubblewrap) is the wall for those.

>>> engine = SqlEngine(SqlPolicy(), Path("."))  # doctest: +SKIP
>>> engine.query("SELECT 42 AS answer")  # doctest: +SKIP
'1 row\\nanswer:INTEGER\\n42'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import duckdb

from agent.errors import (
    ConfigError,
    ToolArgumentError,
    ToolError,
    ToolExecutionError,
    ToolPolicyError,
    ToolTimeout,
)
from tools._sqlrender import render_table
from tools.policy import SqlPolicy

__all__ = ["FILE_SUFFIXES", "SqlEngine", "check_statement", "writes"]

_T = duckdb.StatementType
FILE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".parquet", ".json", ".jsonl", ".ndjson", ".json.gz")
"""Workspace files ``tables()`` lists as queryable by relative path."""

_MAX_FILES = 50
_READ_TYPES = frozenset({_T.SELECT})
_WRITE_TYPES = _READ_TYPES | {
    _T.INSERT, _T.UPDATE, _T.DELETE, _T.MERGE_INTO, _T.CREATE, _T.DROP, _T.ALTER,
    _T.TRANSACTION, _T.MULTI, _T.COPY,
}  # fmt: skip
_HINTS = {
    _T.SET: "settings (SET/RESET/USE) are fixed by the tool's policy",
    _T.PRAGMA: "use DESCRIBE t or SELECT * FROM pragma_table_info('t')",
    _T.CALL: "call table functions as SELECT * FROM fn()",
    _T.ATTACH: "only the configured database is available; query files by relative path",
    _T.DETACH: "only the configured database is available",
    _T.LOAD: "extensions cannot be installed or loaded",
    _T.EXPORT: "exporting the database is not allowed",
}
_SECRET = re.compile(
    r"^\s*(CREATE|DROP)\s+(OR\s+REPLACE\s+)?((PERSISTENT|TEMPORARY|TEMP)\s+)?SECRET\b", re.I
)
# EXPLAIN's own words: keywords, or an option list without quotes or comments, so the rest
# of the original text is the inner statement exactly as DuckDB tokenises it.
_GAP = r"(?:\s|--[^\n]*|/\*.*?\*/)"
_EXPLAIN = re.compile(rf"EXPLAIN{_GAP}+(?:ANALYZE{_GAP}+|\([\w\s,]*\){_GAP}*)?", re.I | re.S)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_LEADING = re.compile(rf"{_GAP}*", re.S)
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*[KMGT]?i?B\s*$", re.I)


def check_statement(query: str, *, read_only: bool) -> duckdb.Statement:
    """The single statement of ``query`` if its type is allowed, else a ``ToolError``.

    >>> check_statement("SELECT 1", read_only=True).type.name
    'SELECT'
    """
    try:
        statements = duckdb.extract_statements(query)
        kinds = [statement.type for statement in statements]
    except duckdb.Error as exc:
        raise ToolExecutionError(f"SQL syntax error: {_first_lines(str(exc))}") from None
    except ValueError:  # the binding has no enum member for some types (UPDATE EXTENSIONS)
        raise ToolPolicyError("statement type not allowed: unknown to the tool") from None
    except TypeError:  # a lone surrogate: the binding cannot pass the text to DuckDB
        raise ToolArgumentError("the query is not valid Unicode (lone surrogate)") from None
    if not statements:
        raise ToolArgumentError("empty query: send one SQL statement")
    if len(statements) > 1:
        raise ToolPolicyError(
            f"one statement per call, got {len(statements)}; send them as separate calls"
        )
    statement = statements[0]
    _check_type(kinds[0], statement.query, read_only)
    return statement


def writes(query: str) -> bool:
    """Whether ``query`` may change data: anything a read-only engine would refuse.

    Judged by DuckDB's parse, not the first word: ``WITH x AS (…) INSERT …`` and
    ``EXPLAIN ANALYZE DELETE …`` write although they start like reads.

    >>> writes("SELECT 1"), writes("WITH x AS (SELECT 1) DELETE FROM t")
    (False, True)
    """
    try:
        check_statement(query, read_only=True)
    except ToolError:
        return True
    return False


def _check_type(kind: duckdb.StatementType, text: str, read_only: bool) -> None:
    if kind == _T.EXPLAIN:
        head = text[_LEADING.match(text).end() :]  # type: ignore[union-attr]
        prefix = _EXPLAIN.match(head)
        try:
            if prefix:
                check_statement(head[prefix.end() :], read_only=read_only)  # ANALYZE runs it
                return
        except (ToolExecutionError, ToolArgumentError):
            pass  # the rest did not parse alone: refuse rather than guess
        raise ToolPolicyError(
            "statement type not allowed: EXPLAIN in this form; use EXPLAIN SELECT …"
        )
    # Comments only blank out words here; a string cannot come before SECRET in CREATE/DROP.
    bare = _COMMENTS.sub(" ", text)
    allowed = _READ_TYPES if read_only else _WRITE_TYPES
    if _SECRET.match(bare):
        raise ToolPolicyError("statement type not allowed: secrets cannot be created or dropped")
    if kind not in allowed:
        what = (
            "SELECT-like statements only (SELECT, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
            if read_only
            else "SELECT, DML, DDL, COPY within the workspace and transactions"
        )
        hint = _HINTS.get(kind, "this tool is read-only" if read_only else "")
        raise ToolPolicyError(
            f"statement type not allowed: {kind.name}; allowed: {what}"
            + (f"; {hint}" if hint else "")
        )


class SqlEngine:
    """One locked DuckDB connection confined to ``workspace``; see the module docstring.

    >>> SqlEngine(SqlPolicy(), tmp).query("SELECT * FROM 'data/sales.csv'")  # doctest: +SKIP
    """

    def __init__(self, policy: SqlPolicy, workspace: Path) -> None:
        self.policy = policy
        self.root = Path(workspace).resolve(strict=True)
        self._aliases = sorted({str(self.root), str(Path(workspace).absolute())}, key=len)[::-1]
        database = self._database_path()
        self._ensure_cwd()
        try:
            self._con = duckdb.connect(
                str(database) if database else ":memory:",
                read_only=bool(database) and policy.read_only,
                config={
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "allow_community_extensions": False,
                    "allow_persistent_secrets": False,
                    "temp_directory": "",  # must precede the lock; no spilling to disk
                },
            )
        except duckdb.Error as exc:
            raise ConfigError(f"cannot open the SQL database: {self._scrub(str(exc))}") from None
        self._lock()

    def _database_path(self) -> Path | None:
        if self.policy.database is None:
            return None
        path = (self.root / self.policy.database).resolve()
        if not path.is_relative_to(self.root):
            raise ConfigError(f"sql.database must be inside the workspace: {self.policy.database}")
        if self.policy.read_only and not path.is_file():
            raise ConfigError(f"sql.database not found (read-only): {self.policy.database}")
        return path

    def _lock(self) -> None:
        """Set limits, confine file access to the workspace, then lock; order matters."""
        if not _MEMORY.match(self.policy.memory_limit):
            raise ConfigError(
                f"sql.memory_limit is not a size like '1GB': {self.policy.memory_limit!r}"
            )
        steps: list[tuple[str, list[Any]]] = [
            ("SET memory_limit = ?", [self.policy.memory_limit]),
            ("SET threads = ?", [self.policy.threads]),
            ("SET max_execution_time = ?", [max(1, round(self.policy.timeout_s * 1000))]),
            ("SET allowed_directories = ?", [[str(self.root) + os.sep]]),
            ("SET enable_external_access = false", []),
            ("SET lock_configuration = true", []),
        ]
        try:
            for sql, params in steps:
                self._con.execute(sql, params)
        except duckdb.Error as exc:
            self._con.close()
            raise ConfigError(f"cannot configure DuckDB ({sql}): {exc}") from None

    def query(self, query: str, params: list | dict | None = None) -> str:
        """Run one statement and render its result for the model.

        >>> engine.query("SELECT $n + 1 AS m", {"n": 41})  # doctest: +SKIP
        '1 row\\nm:INTEGER\\n42'
        """
        if params is not None and not isinstance(params, list | dict):
            raise ToolArgumentError("params must be a list (for ? or $1) or an object (for $name)")
        statement = check_statement(query, read_only=self.policy.read_only)
        self._ensure_cwd()
        limit = self.policy.max_rows
        try:
            self._con.execute(query, params)
            description = self._con.description
            rows = self._con.fetchmany(limit + 1) if description else []
            if len(rows) > limit:
                self._con.abort()  # 2.0.1: a partially fetched result must be aborted
        except duckdb.Error as exc:
            raise self._error(exc) from None
        if not description:
            return "OK"
        if statement.type not in (_T.SELECT, _T.EXPLAIN):
            return self._scrub(_summary(description, rows))
        total: int | str = len(rows)
        if len(rows) > limit:
            total = self._count(statement, params)
        names = [str(d[0]) for d in description]
        types = [str(d[1]) for d in description]
        text = render_table(
            names, types, rows[:limit], total=total, max_bytes=self.policy.max_bytes
        )
        return self._scrub(text)

    def _count(self, statement: duckdb.Statement, params: list | dict | None) -> int | str:
        """Total rows of a capped SELECT; "more than N" when counting fails or times out."""
        body = statement.query.rstrip().rstrip(";")
        wrapped = f"SELECT count(*) FROM (\n{body}\n) AS _rows"
        try:
            check_statement(wrapped, read_only=True)
            self._con.execute(wrapped, params)
            row = self._con.fetchone()
        except (duckdb.Error, ToolError):
            row = None
        return int(row[0]) if row else f"more than {self.policy.max_rows}"

    def tables(self) -> str:
        """Tables and views with their columns, then the workspace's data files.

        >>> engine.tables()  # doctest: +SKIP
        "Tables and views:\\nsales(id:INTEGER, amount:DOUBLE)\\nFiles ...\\n'data/s.csv'(a:BIGINT)"
        """
        self._ensure_cwd()
        try:
            lines = self._catalog_lines()
        except duckdb.Error as exc:
            raise self._error(exc) from None
        out = ["Tables and views:", *lines] if lines else ["No tables or views."]
        files = self._file_lines()
        if files:
            out += ["Files (query by relative path, e.g. SELECT * FROM 'data/x.csv'):", *files]
        text = self._scrub("\n".join(out))
        if len(text) > self.policy.max_bytes:
            text = text[: self.policy.max_bytes] + "\n… (cut at the output cap)"
        return text

    def _catalog_lines(self) -> list[str]:
        default = self._con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        columns: dict[tuple[str, str, str], list[str]] = {}
        for db, schema, table, column, dtype in self._con.execute(
            "SELECT database_name, schema_name, table_name, column_name, data_type "
            "FROM duckdb_columns() WHERE NOT internal ORDER BY column_index"
        ).fetchall():
            columns.setdefault((db, schema, table), []).append(f"{column}:{dtype}")
        lines = []
        for db, schema, name, kind in self._con.execute(
            "SELECT database_name, schema_name, table_name, 'table' FROM duckdb_tables() "
            "WHERE NOT internal UNION ALL SELECT database_name, schema_name, view_name, 'view' "
            "FROM duckdb_views() WHERE NOT internal ORDER BY ALL"
        ).fetchall():
            qualified = name if schema == "main" else f"{schema}.{name}"
            if db != default:
                qualified = f"{db}.{qualified}"
            prefix = "view " if kind == "view" else ""
            lines.append(f"{prefix}{qualified}({', '.join(columns.get((db, schema, name), []))})")
        return lines

    def _file_lines(self) -> list[str]:
        lines = []
        for rel in _data_files(self.root, _MAX_FILES + 1):
            if len(lines) == _MAX_FILES:
                lines.append(f"… more than {_MAX_FILES} files; use glob('**/*.csv') to list them")
                break
            literal = "'" + rel.replace("'", "''") + "'"
            try:
                cols = self._con.execute(f"DESCRIBE SELECT * FROM {literal}").fetchall()
                lines.append(f"{literal}({', '.join(f'{c[0]}:{c[1]}' for c in cols)})")
            except duckdb.Error as exc:
                lines.append(f"{literal}(unreadable: {_first_lines(str(exc), 1)})")
        return lines

    def interrupt(self) -> None:
        """Stop the running query from another thread; the connection stays usable.

        >>> threading.Timer(1, engine.interrupt).start()  # doctest: +SKIP
        """
        self._con.interrupt()

    def close(self) -> None:
        """Close the connection; later calls fail. Safe to call twice.

        >>> engine.close()  # doctest: +SKIP
        """
        self._con.close()

    def _ensure_cwd(self) -> None:
        """Relative paths resolve against the cwd (see the module docstring)."""
        try:
            if Path.cwd() == self.root:
                return
        except FileNotFoundError:
            pass
        os.chdir(self.root)

    def _error(self, exc: duckdb.Error) -> ToolError:
        """Map a DuckDB error to the tool error the model sees, paths scrubbed."""
        message = self._scrub(_first_lines(str(exc)))
        if isinstance(exc, duckdb.InterruptException):
            if "maximum execution time" in message:
                return ToolTimeout(
                    f"query exceeded the {self.policy.timeout_s:g}s time limit; "
                    "narrow it with WHERE, LIMIT or aggregates"
                )
            return ToolTimeout("query was interrupted")
        if isinstance(exc, duckdb.OutOfMemoryException):
            return ToolExecutionError(
                f"query exceeded the {self.policy.memory_limit} memory limit; "
                "aggregate or filter more: " + _first_lines(message, 1)
            )
        if isinstance(exc, duckdb.PermissionException):
            return ToolPolicyError(
                "refused by the sandbox (only files inside the workspace, by relative path; "
                f"no network, extensions or settings): {message}"
            )
        if isinstance(exc, duckdb.CatalogException) and "does not exist" in message:
            message = re.sub(r"\nDid you mean[^\n]*", "", message)
            return ToolExecutionError(f"{message}\n{self._known_tables()}")
        return ToolExecutionError(message)

    def _known_tables(self) -> str:
        try:
            names = [line.split("(", 1)[0] for line in self._catalog_lines()]
        except duckdb.Error:
            names = []
        listed = ", ".join(names[:30]) if names else "none"
        return (
            f"Existing tables and views: {listed}. Files are queried by relative path, "
            "e.g. SELECT * FROM 'data/x.csv'; sql_tables lists them."
        )

    def _scrub(self, text: str) -> str:
        """Host paths out: the workspace becomes relative, the home folder ``~``."""
        for alias in self._aliases:
            text = text.replace(alias + os.sep, "").replace(alias, ".")
        home = os.path.expanduser("~")
        if len(home) > 1:
            text = text.replace(home, "~")
        return text


def _summary(description: Any, rows: list[tuple[Any, ...]]) -> str:
    """Result of DML/DDL: ``OK, 3 rows affected`` rather than a one-cell table."""
    if len(description) == 1 and description[0][0] == "Count" and len(rows) == 1:
        return f"OK, {rows[0][0]} rows affected"
    names = [str(d[0]) for d in description]
    types = [str(d[1]) for d in description]
    return render_table(names, types, rows, total=len(rows), max_bytes=4000)


def _data_files(root: Path, limit: int) -> list[str]:
    """Relative paths of data files under ``root``: no hidden folders, no symlinks."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if name.lower().endswith(FILE_SUFFIXES) and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
                if len(found) >= limit:
                    return found
    return found


def _first_lines(text: str, n: int = 8) -> str:
    """DuckDB messages carry a caret diagram; keep it but not pages of hints."""
    return "\n".join(text.strip().splitlines()[:n])[:1500]
