"""DuckDB behind ``sql_query`` and ``sql_tables``: one engine per sandbox worker.

Three walls, each enough on its own for the cases it covers:

1. **Statement types** (`tools._sqlcheck`): exactly one statement, of a type the policy
   allows; settings, extensions, ATTACH, secrets and transactions are always refused, and
   ``COPY … TO`` needs file writes (``tools.files.allow_write``) as well as SQL writes.
2. **DuckDB's own lock.** ``allowed_directories`` = the workspace (resolved; DuckDB resolves
   symlinks before checking, measured on 2.0.1), then ``enable_external_access=false``, then
   ``lock_configuration=true``: files outside the workspace, URLs, extension loading, secrets
   and every later SET are refused by DuckDB itself, whatever text reached it. Spilling to disk
   is off (``temp_directory=''``): a query over ``memory_limit`` fails instead of filling the
   disk. ``max_execution_time`` (DuckDB >= 1.4, set GLOBAL so every cursor has it, locked) is
   the time cap, so no watchdog thread.
3. **The file rule** (`tools._sqlfiles`): no query runs while the workspace holds a
   hard-linked or special file, checked before and after each query.

One call, one cursor: each call runs on its own ``cursor()`` of the one connection, closed
when the call ends. Concurrent calls each get their own result (a DuckDB connection serves
one statement at a time), tables of an in-memory database stay shared by every call of the
run, and whatever a failed call left open is rolled back with its cursor.

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

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
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
from tools._sqlcheck import check_statement, first_lines, writes
from tools._sqlfiles import FILE_SUFFIXES, data_files, file_problem, unsafe_files
from tools._sqlrender import render_table
from tools.policy import SqlPolicy

__all__ = ["FILE_SUFFIXES", "SqlEngine", "check_statement", "writes"]

_T = duckdb.StatementType
_MAX_FILES = 50
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*[KMGT]?i?B\s*$", re.I)


class SqlEngine:
    """One locked DuckDB connection confined to ``workspace``; see the module docstring.

    ``file_writes``: whether ``COPY … TO`` may write files (``tools.files.allow_write``).

    >>> SqlEngine(SqlPolicy(), tmp).query("SELECT * FROM 'data/sales.csv'")  # doctest: +SKIP
    """

    def __init__(self, policy: SqlPolicy, workspace: Path, *, file_writes: bool = False) -> None:
        self.policy = policy
        self.file_writes = file_writes
        self.root = Path(workspace).resolve(strict=True)
        self._cursors: set[duckdb.DuckDBPyConnection] = set()
        self._cursors_lock = threading.Lock()
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
        problem = file_problem(path.lstat()) if path.exists() else None
        if problem:
            raise ConfigError(f"sql.database {self.policy.database} is refused: {problem}")
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
            # GLOBAL: a plain SET is the session's, and every call runs on its own cursor.
            ("SET GLOBAL max_execution_time = ?", [max(1, round(self.policy.timeout_s * 1000))]),
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

    def query(
        self,
        query: str,
        params: list | dict | None = None,
        *,
        on_cursor: Callable[[Callable[[], None]], None] | None = None,
    ) -> str:
        """Run one statement and render its result for the model.

        >>> engine.query("SELECT $n + 1 AS m", {"n": 41})  # doctest: +SKIP
        '1 row\\nm:INTEGER\\n42'
        """
        if params is not None and not isinstance(params, list | dict):
            raise ToolArgumentError("params must be a list (for ? or $1) or an object (for $name)")
        statement = check_statement(
            query, read_only=self.policy.read_only, file_writes=self.file_writes
        )
        self._ensure_cwd()
        self._check_files()
        limit = self.policy.max_rows
        with self._cursor() as cur:
            if on_cursor is not None:  # how to stop this query alone, from another thread
                on_cursor(cur.interrupt)
            try:
                cur.execute(query, params)
                description = cur.description
                rows = cur.fetchmany(limit + 1) if description else []
                if len(rows) > limit:
                    cur.abort()  # 2.0.1: a partially fetched result must be aborted
            except duckdb.Error as exc:
                raise self._error(exc) from None
            total: int | str = len(rows)
            if len(rows) > limit and statement.type in (_T.SELECT, _T.EXPLAIN):
                total = self._count(cur, statement, params)
        self._check_files(after=True)  # a link made while the query ran: no result shown
        if not description:
            return "OK"
        if statement.type not in (_T.SELECT, _T.EXPLAIN):
            return self._scrub(_summary(description, rows))
        names = [str(d[0]) for d in description]
        types = [str(d[1]) for d in description]
        text = render_table(
            names, types, rows[:limit], total=total, max_bytes=self.policy.max_bytes
        )
        return self._scrub(text)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one call, closed (and rolled back) when the call ends."""
        with self._cursors_lock:
            cur = self._con.cursor()
            self._cursors.add(cur)
        try:
            yield cur
        finally:
            with self._cursors_lock:
                self._cursors.discard(cur)
            cur.close()

    def _check_files(self, *, after: bool = False) -> None:
        """Refuse to run (or to show a result) while the workspace holds unsafe files."""
        found = unsafe_files(self.root)
        if found:
            when = "appeared while the query ran, so its result is withheld" if after else ""
            raise ToolPolicyError(
                "the workspace holds files the SQL tool will not open"
                + (f" ({when})" if when else "")
                + ": "
                + ", ".join(found)
                + ". A file with more than one hard link may be a link to a file outside "
                "the workspace, and a special file can hang a query; no query runs until "
                "they are removed from the workspace (ask the user)"
            )

    def _count(
        self, cur: duckdb.DuckDBPyConnection, statement: duckdb.Statement, params: Any
    ) -> int | str:
        """Total rows of a capped SELECT; "more than N" when counting fails or times out."""
        body = statement.query.rstrip().rstrip(";")
        wrapped = f"SELECT count(*) FROM (\n{body}\n) AS _rows"
        try:
            check_statement(wrapped, read_only=True)
            cur.execute(wrapped, params)
            row = cur.fetchone()
        except (duckdb.Error, ToolError):
            row = None
        return int(row[0]) if row else f"more than {self.policy.max_rows}"

    def tables(self) -> str:
        """Tables and views with their columns, then the workspace's data files.

        >>> engine.tables()  # doctest: +SKIP
        "Tables and views:\\nsales(id:INTEGER, amount:DOUBLE)\\nFiles ...\\n'data/s.csv'(a:BIGINT)"
        """
        self._ensure_cwd()
        with self._cursor() as cur:
            try:
                lines = self._catalog_lines(cur)
            except duckdb.Error as exc:
                raise self._error(exc) from None
            files = self._file_lines(cur)
        out = ["Tables and views:", *lines] if lines else ["No tables or views."]
        if files:
            out += ["Files (query by relative path, e.g. SELECT * FROM 'data/x.csv'):", *files]
        text = self._scrub("\n".join(out))
        if len(text) > self.policy.max_bytes:
            text = text[: self.policy.max_bytes] + "\n… (cut at the output cap)"
        return text

    def _catalog_lines(self, cur: duckdb.DuckDBPyConnection) -> list[str]:
        default = cur.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        columns: dict[tuple[str, str, str], list[str]] = {}
        for db, schema, table, column, dtype in cur.execute(
            "SELECT database_name, schema_name, table_name, column_name, data_type "
            "FROM duckdb_columns() WHERE NOT internal ORDER BY column_index"
        ).fetchall():
            columns.setdefault((db, schema, table), []).append(f"{column}:{dtype}")
        lines = []
        for db, schema, name, kind in cur.execute(
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

    def _file_lines(self, cur: duckdb.DuckDBPyConnection) -> list[str]:
        """``'rel'(col:TYPE, …)`` per data file; unsafe files are named, never opened."""
        lines = []
        for rel in data_files(self.root, _MAX_FILES + 1):
            if len(lines) == _MAX_FILES:
                lines.append(f"… more than {_MAX_FILES} files; use glob('**/*.csv') to list them")
                break
            literal = "'" + rel.replace("'", "''") + "'"
            problem = self._file_problem(rel)
            if problem is None:
                try:
                    cols = cur.execute(f"DESCRIBE SELECT * FROM {literal}").fetchall()
                    described = f"{literal}({', '.join(f'{c[0]}:{c[1]}' for c in cols)})"
                except duckdb.Error as exc:
                    described = f"{literal}(unreadable: {first_lines(str(exc), 1)})"
                problem = self._file_problem(rel)  # swapped for a link while DuckDB read it?
            lines.append(f"{literal}(refused: {problem})" if problem else described)
        return lines

    def _file_problem(self, rel: str) -> str | None:
        try:
            return file_problem((self.root / rel).lstat())
        except OSError:
            return "vanished"

    def interrupt(self) -> None:
        """Stop the running queries from another thread; the connection stays usable.

        >>> threading.Timer(1, engine.interrupt).start()  # doctest: +SKIP
        """
        with self._cursors_lock:
            for cur in self._cursors:
                cur.interrupt()

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
        message = self._scrub(first_lines(str(exc)))
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
                "aggregate or filter more: " + first_lines(message, 1)
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
            with self._cursor() as cur:
                names = [line.split("(", 1)[0] for line in self._catalog_lines(cur)]
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
