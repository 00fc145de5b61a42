"""One small SQL seam for the run store and the service's tables: SQLite or Postgres.

Callers write SQL once, with ``?`` placeholders and SQLite's type names; a
:class:`Database` runs it in one short transaction (:meth:`Database.tx`) and returns rows
as dicts. The Postgres flavour translates placeholders (``?`` → ``%s``) and the few type
names that differ (``REAL`` → ``DOUBLE PRECISION``: Postgres's REAL is 4 bytes and would
round Unix times to minutes; ``INTEGER`` → ``BIGINT``). Numbered migrations
(:meth:`Database.migrate`) are the same list for both, recorded in a version table of
their own, applied under a lock (``BEGIN IMMEDIATE`` in SQLite, an advisory lock in
Postgres) so that many processes can start at once against a fresh database.

Both flavours are synchronous and safe to call from several threads: SQLite keeps one
connection per thread (never shared across threads; opening one per transaction cost more
than the transaction); Postgres borrows one from a small pool.

>>> db = SqliteDatabase(":memory:")
>>> db.kind
'sqlite'
"""

from __future__ import annotations

import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from agent.errors import ConfigError

__all__ = ["Database", "PostgresDatabase", "SqliteDatabase", "Tx", "open_database"]

_POOL_MAX = 8
_CONNECT_TIMEOUT_S = 10
_MIGRATE_LOCK = 0x68726D5F6D6967  # pg_advisory_lock key of migrations ("hrm_mig")


class Tx:
    """One open transaction: ``tx.execute(sql, params)`` returns the rows as dicts."""

    def __init__(self, cursor: Any, translate: Any) -> None:
        self._cursor, self._translate = cursor, translate
        self.rowcount = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._cursor.execute(self._translate(sql), tuple(params))
        self.rowcount = cur.rowcount
        if cur.description is None:
            return []
        return [dict(row) for row in cur.fetchall()]

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run ``sql`` once per row; the rows it changed, over all of them."""
        done = self._cursor.executemany(self._translate(sql), [tuple(r) for r in rows])
        self.rowcount = (self._cursor if done is None else done).rowcount  # psycopg: None
        return self.rowcount


class Database(ABC):
    """Where rows live. ``with db.tx() as tx: tx.execute("SELECT 1")``."""

    kind: Literal["sqlite", "postgres"]
    name: str
    """For messages: a path, or a URL without its password."""

    @abstractmethod
    @contextmanager
    def tx(self, write: bool = True) -> Iterator[Tx]:
        """One short transaction, committed on exit, rolled back on an exception."""

    def close(self) -> None:  # noqa: B027 - SQLite holds nothing open
        """Release connections (Postgres); safe to call twice."""

    def migrate(self, table: str, migrations: Sequence[str]) -> None:
        """Apply the migrations not yet recorded in ``table`` (``;`` separates statements).

        A database written by a newer program (a higher version) is refused, not misread.
        """
        with self.tx() as tx:
            self._lock_migrations(tx)
            tx.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
            current = tx.execute(f"SELECT MAX(version) AS v FROM {table}")[0]["v"] or 0
            if current > len(migrations):
                raise ConfigError(
                    f"run store {self.name} has schema version {current}, newer than this "
                    f"program knows ({len(migrations)}): upgrade, or use another --store"
                )
            for version in range(current + 1, len(migrations) + 1):
                for statement in migrations[version - 1].split(";"):
                    if statement.strip():
                        tx.execute(statement)
                tx.execute(f"INSERT INTO {table} (version) VALUES (?)", (version,))

    def version(self, table: str) -> int:
        with self.tx(write=False) as tx:
            return tx.execute(f"SELECT MAX(version) AS v FROM {table}")[0]["v"] or 0

    def _lock_migrations(self, tx: Tx) -> None:  # noqa: B027 - SQLite: BEGIN IMMEDIATE locks
        """Serialise migrations across processes."""


class SqliteDatabase(Database):
    """A SQLite file in WAL mode; writers wait (``BEGIN IMMEDIATE``) rather than fail."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.name = str(path)
        self._timeout_s = timeout_s
        self._local = threading.local()
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")  # persistent; cannot run inside a tx
            finally:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._timeout_s, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process
        return conn

    @contextmanager
    def tx(self, write: bool = True) -> Iterator[Tx]:
        conn = getattr(self._local, "conn", None)
        own = conn is None or conn.in_transaction  # nested: a connection of its own
        if own:
            conn = self._connect()
            if getattr(self._local, "conn", None) is None and str(self.path) != ":memory:":
                self._local.conn, own = conn, False
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield Tx(conn, _same)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if own:
                conn.close()


class PostgresDatabase(Database):
    """A Postgres database through a small psycopg connection pool (the postgres extra)."""

    kind = "postgres"

    def __init__(self, url: str) -> None:
        from agent.persistence import _unreachable, redact_url

        try:
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise ConfigError(
                f"store {redact_url(url)!r}: Postgres needs the postgres extra "
                f"({exc.name} is not installed): pip install -e '.[postgres]'"
            ) from None
        self.name = redact_url(url)
        options: dict[str, Any] = {"row_factory": dict_row, "prepare_threshold": None}
        if "connect_timeout" not in url:
            options["connect_timeout"] = _CONNECT_TIMEOUT_S
        self._pool = ConnectionPool(
            url, min_size=1, max_size=_POOL_MAX, kwargs=options, open=False, name="agent-runs"
        )
        try:
            self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
        except Exception as exc:
            self._pool.close()
            raise _unreachable(url, exc) from None

    @contextmanager
    def tx(self, write: bool = True) -> Iterator[Tx]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield Tx(cur, _to_postgres)

    def close(self) -> None:
        self._pool.close()

    def _lock_migrations(self, tx: Tx) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATE_LOCK,))


def open_database(target: str | Path) -> Database:
    """A Postgres database for a ``postgres(ql)://`` URL, else a SQLite file."""
    text = str(target)
    if text.startswith(("postgres://", "postgresql://")):
        return PostgresDatabase(text)
    return SqliteDatabase(target)


def _same(sql: str) -> str:
    return sql


_TYPES = re.compile(r"\b(REAL|INTEGER)\b")


def _to_postgres(sql: str) -> str:
    """``?`` placeholders to ``%s`` (literal ``%`` doubled); SQLite type names mapped.

    >>> _to_postgres("SELECT a FROM t WHERE b LIKE '%x' AND c = ?")
    "SELECT a FROM t WHERE b LIKE '%%x' AND c = %s"
    """
    sql = sql.replace("%", "%%").replace("?", "%s")
    if sql.lstrip().upper().startswith(("CREATE", "ALTER")):
        sql = _TYPES.sub(lambda m: "DOUBLE PRECISION" if m[1] == "REAL" else "BIGINT", sql)
    return sql
