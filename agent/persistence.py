"""Where runs persist: the LangGraph checkpointer and key-value store of an agent.

A :class:`StoreLocation` says where. Its ``folder`` holds what is always local — run
records (``runs.db``), traces and tool artifacts — and, without a Postgres URL, the
checkpoints too. Three shapes:

- a folder (the embedded default, ``.agent``): SQLite files inside it;
- a ``postgresql://`` URL (deployments, several hosts sharing runs): checkpoints and tool
  results in Postgres via ``langgraph-checkpoint-postgres``, run records and events too
  (:func:`agent.runs.open_run_store`); traces and artifacts stay in the folder
  (``.agent`` unless given);
- ``None``: checkpoints in memory (no resume across processes) and nothing on disk.

The checkpointer keeps each step's state; the store keeps completed tool results under
their idempotency keys, so a resumed run does not repeat them. With SQLite they are two
files, ``checkpoints.db`` and ``store.db``; with Postgres, the ``checkpoint*`` and
``store`` tables. Both are created on first use under a lock (a file lock on
``.setup.lock`` in the folder; an advisory lock in Postgres), so many processes can start
at once on a fresh store: LangGraph's migrations are not safe to run side by side.

Checkpoints are read with a strict msgpack allowlist: a checkpoint database that an
attacker can write must not be able to run code when it is loaded. A Postgres password
never appears in a repr or an error message.

>>> store_location(".agent")
StoreLocation(folder=PosixPath('.agent'))
>>> store_location("postgresql://me:secret@db:5432/agent")
StoreLocation(folder=PosixPath('.agent'), postgres_url='postgresql://me:***@db:5432/agent')
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from agent._io import io
from agent.errors import ConfigError

__all__ = ["StoreLocation", "open_persistence", "redact_url", "store_location"]

DEFAULT_FOLDER = ".agent"
_POSTGRES_SCHEMES = ("postgres://", "postgresql://")
_BUSY_TIMEOUT_MS = 30_000
# Every SQLite connection of a store folder. NORMAL is durable against a killed process
# (the case resume is for); only an OS crash or power loss can drop the last transactions.
# FULL costs an fsync per commit. The busy timeout makes writes wait for other processes'.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}",
)
_CONNECT_TIMEOUT_S = 10
_POOL_MAX = 4
# pg_advisory_lock key serialising schema setup across processes ("hermes" in ASCII).
_SETUP_LOCK = 0x6865726D6573


@dataclass(frozen=True, repr=False)
class StoreLocation:
    """Where an agent's runs persist.

    ``folder``: runs.db, traces/ and artifacts/, plus the SQLite checkpoints when there is
    no ``postgres_url``; ``None`` keeps nothing on disk. ``postgres_url``: checkpoints and
    tool results go to this database instead.
    """

    folder: Path | None
    postgres_url: str | None = None

    @property
    def kind(self) -> Literal["memory", "sqlite", "postgres"]:
        """Which checkpointer: ``postgres`` with a URL, ``sqlite`` with a folder, else memory."""
        if self.postgres_url is not None:
            return "postgres"
        return "sqlite" if self.folder is not None else "memory"

    def __repr__(self) -> str:
        url = f", postgres_url={redact_url(self.postgres_url)!r}" if self.postgres_url else ""
        return f"StoreLocation(folder={self.folder!r}{url})"


def store_location(
    store: str | Path | StoreLocation | None, *, folder: str | Path = DEFAULT_FOLDER
) -> StoreLocation:
    """Parse a task file's or ``Agent(store=...)``'s value into a :class:`StoreLocation`.

    ``folder`` is where local things go when ``store`` is a Postgres URL.
    ``store_location(None).kind == "memory"``.
    """
    if store is None:
        return StoreLocation(None)
    if isinstance(store, StoreLocation):
        return store
    text = str(store)
    if text.startswith(_POSTGRES_SCHEMES):
        return StoreLocation(Path(folder), text)
    if "://" in text:
        raise ConfigError(
            f"store: {redact_url(text)!r}: not a folder or a postgresql:// URL "
            "(use a folder such as .agent, or postgresql://USER:PASSWORD@HOST:PORT/DB)"
        )
    return StoreLocation(Path(text))


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (in the user part and the query).

    >>> redact_url("postgresql://u:pw@h/db?password=pw")
    'postgresql://u:***@h/db?password=***'
    """
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    netloc = f"{user}{at}{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return parts._replace(netloc=netloc, query=query).geturl()


def _address(url: str) -> str:
    """``host:port`` of a Postgres URL, for messages (``localhost:5432`` by default)."""
    host = urlsplit(url).netloc.rpartition("@")[2] or "localhost"
    return host if ":" in host or "," in host else f"{host}:5432"


def _serde() -> Any:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer(allowed_msgpack_modules=None)


async def open_persistence(
    store: StoreLocation | Path | None, stack: AsyncExitStack
) -> tuple[Any, Any]:
    """A checkpointer and a store for ``store``: Postgres, SQLite files, or in memory.

    Connections are closed by ``stack``. Raises :class:`ConfigError` when the Postgres
    extra is missing or the database cannot be reached.
    """
    location = store_location(store)
    if location.postgres_url is not None:
        return await _postgres(location.postgres_url, stack)
    if location.folder is not None:
        return await _sqlite(location.folder, stack)
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    return InMemorySaver(serde=_serde()), InMemoryStore()


async def _sqlite(folder: Path, stack: AsyncExitStack) -> tuple[Any, Any]:
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    folder.mkdir(parents=True, exist_ok=True)
    # Two files, each with one connection used by one component under its own lock: two
    # connections on one file in WAL mode can deadlock on a read-to-write upgrade
    # (SQLITE_BUSY_SNAPSHOT, which busy_timeout does not wait out), and one shared
    # connection would interleave the two components' transactions.
    async with _setup_lock(folder / ".setup.lock"):
        saver = await io(_threaded_saver, folder / "checkpoints.db")
        stack.push_async_callback(io, saver.conn.close)
        kv = AsyncSqliteStore(await _connect(folder / "store.db", stack, isolation_level=None))
        await kv.setup()
    return saver, kv


@contextlib.asynccontextmanager
async def _setup_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting without blocking
    the loop; released on exit, or by the OS if the process dies. (No ``fcntl``, as on
    Windows: no lock.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _threaded_saver(path: Path) -> Any:
    """The checkpointer of a SQLite folder, made on the I/O thread (see ThreadedSqliteSaver)."""
    import sqlite3

    conn = sqlite3.connect(path, check_same_thread=False)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    saver = _saver_class()(conn, serde=_serde())
    saver.setup()
    return saver


@functools.cache
def _saver_class() -> type:
    from langgraph.checkpoint.sqlite import SqliteSaver

    class ThreadedSqliteSaver(SqliteSaver):
        """LangGraph's synchronous SQLite saver whose async methods each run whole on the
        I/O thread (:mod:`agent._io`): one hop per operation, where ``AsyncSqliteSaver``
        makes one per statement (cursor, execute, fetch, commit), each a thread handoff
        and an event-loop wake-up. Operations run in the order they were submitted."""

        async def aget_tuple(self, config: Any) -> Any:
            return await io(self.get_tuple, config)

        async def alist(self, config: Any, **kwargs: Any) -> Any:
            for item in await io(lambda: list(self.list(config, **kwargs))):
                yield item

        async def aput(self, config: Any, checkpoint: Any, metadata: Any, versions: Any) -> Any:
            return await io(self.put, config, checkpoint, metadata, versions)

        async def aput_writes(
            self, config: Any, writes: Any, task_id: str, task_path: str = ""
        ) -> None:
            await io(self.put_writes, config, writes, task_id, task_path)

        async def adelete_thread(self, thread_id: str) -> None:
            await io(self.delete_thread, thread_id)

        async def aget_delta_channel_history(self, *, config: Any, channels: Any) -> Any:
            return await io(self.get_delta_channel_history, config=config, channels=channels)

    return ThreadedSqliteSaver


async def _connect(path: Path, stack: AsyncExitStack, **options: Any) -> Any:
    """A connection whose writes wait for other processes' writes instead of failing."""
    import aiosqlite

    conn = aiosqlite.connect(path, **options)
    # aiosqlite's thread is not a daemon: an agent its user never closed would keep the
    # interpreter from exiting. Writes are committed as they go; nothing is lost.
    conn._thread.daemon = True
    await conn
    stack.push_async_callback(conn.close)
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn


async def _postgres(url: str, stack: AsyncExitStack) -> tuple[Any, Any]:
    """A saver and a store sharing one connection pool; tables created if missing."""
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.store.postgres.aio import AsyncPostgresStore
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise ConfigError(
            f"store {redact_url(url)!r}: Postgres needs the postgres extra "
            f"({exc.name} is not installed): pip install -e '.[postgres]' (in this checkout)"
        ) from None
    await _setup_tables(url, AsyncPostgresSaver, AsyncPostgresStore)
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=_POOL_MAX,
        open=False,
        kwargs=_connection_options(url),
        check=AsyncConnectionPool.check_connection,
        name="agent-persistence",
    )
    try:
        await pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
    except Exception as exc:
        await pool.close()
        raise _unreachable(url, exc) from None
    stack.push_async_callback(pool.close)
    return AsyncPostgresSaver(pool, serde=_serde()), AsyncPostgresStore(pool)


async def _setup_tables(url: str, saver_cls: Any, store_cls: Any) -> None:
    """Create or migrate the tables, one process at a time (concurrent DDL can collide)."""
    import psycopg

    try:
        conn = await psycopg.AsyncConnection.connect(url, **_connection_options(url))
    except psycopg.Error as exc:
        raise _unreachable(url, exc) from None
    async with conn:
        # Polled, not waited for: a statement blocked in pg_advisory_lock holds a snapshot,
        # and the other process's CREATE INDEX CONCURRENTLY (in langgraph's setup) waits
        # for every older snapshot: a deadlock PostgreSQL breaks by failing one start.
        while True:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", (_SETUP_LOCK,))
            row = await cursor.fetchone()
            if row is not None and row["locked"]:
                break
            await asyncio.sleep(0.05)
        try:
            await saver_cls(conn, serde=_serde()).setup()
            await store_cls(conn).setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))


def _connection_options(url: str) -> dict[str, Any]:
    """What langgraph's Postgres classes expect of a connection, plus a connect timeout."""
    from psycopg.rows import dict_row

    options: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    if "connect_timeout" not in url:
        options["connect_timeout"] = _CONNECT_TIMEOUT_S
    return options


def _unreachable(url: str, exc: BaseException) -> ConfigError:
    """A message naming host:port and the cause, with the password scrubbed out."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    password = urlsplit(url).password
    for secret in {password, unquote(password or "")} - {None, ""}:
        reason = reason.replace(secret, "***")
    return ConfigError(
        f"store: cannot reach Postgres at {_address(url)} ({redact_url(url)}): {reason}"
    )
