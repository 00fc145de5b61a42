"""The run store (one SQLite row per run) and JSONL traces (one JSON object per event).

The store answers "what ran, how did it end, what did it cost"; the trace answers "what
exactly happened": every prompt sent, every raw output, every tool call and result.

Store: SQLite at ``.agent/runs.db`` by default (:func:`resolve_store_path`), or the
Postgres database of a ``postgresql://`` store (:func:`open_run_store`), so that several
hosts (``agent serve`` replicas) share runs; the SQL seam is :mod:`agent._db`. Numbered
migrations in :data:`_MIGRATIONS` are recorded in ``schema_version``. WAL mode and one
short transaction per call make SQLite safe for several processes (an eval runs many at
once). A database written by a newer version is refused rather than misread. Besides one
row per run, the store keeps a run's events by sequence number (:meth:`RunStore.append_events`),
for consumers that replay them (the HTTP service's ``Last-Event-ID``).

Traces: ``TraceWriter`` appends ``{"v", "ts", "run_id", "type", ...}`` lines and flushes
each, so a killed process keeps everything written before it died; a resumed run reopens
the same file and appends. Event types and their usual fields:

```
run_started   task, model_url, resumed, thread_id, input (the user's text; null on resume)
prompt        step, prefix_chars, text, chars: the prompt sent is the previous prompt's
              first prefix_chars characters + text (prompts are append-only, so this
              keeps traces linear in run length); chars is its whole length.
              prompt_texts() rebuilds every prompt whole
model_output  step, text (raw), content, tool_calls, errors, finish_reason, usage,
              timings, url (the step's Generation, less its prompt)
tool_call     step, call {name, arguments, id}, early
tool_result   step, result {call_id, name, status, content, error, artifact_id,
              truncated, duration_s, sandbox}, reused
repair        step, reasons, consecutive
approval      calls (each name, arguments, id)
final         result {run_id, status, answer, steps, tool_calls, usage, limit, error,
              error_kind, error_type, trace_path}
error         error_kind, error_type, message
```
(The ``agent.events`` dataclasses as ``agent.events.to_dict`` writes them; ``run_id`` is
on every line.) Readers ignore fields they do not know; a new *major* version means an
incompatible change and :func:`read_trace` refuses it. Version 1 traces (flat
``tool_call``/``tool_result``/``final`` fields) are still read.

>>> RunRecord("r1", task="t", status="done").usage.total_tokens
0
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from agent._db import Database, SqliteDatabase, open_database
from agent._owner import Owner
from agent.errors import ConfigError
from agent.types import RUN_STATUSES, Usage

__all__ = [
    "DEFAULT_STORE",
    "TRACE_EVENT_TYPES",
    "TRACE_SCHEMA_VERSION",
    "RunRecord",
    "RunStore",
    "StoredEvent",
    "TraceWriter",
    "open_run_store",
    "prompt_texts",
    "read_trace",
    "resolve_store_path",
]

DEFAULT_STORE = ".agent"
TRACE_SCHEMA_VERSION = "2.0"
_READABLE_MAJORS = ("1", "2")
TRACE_EVENT_TYPES = (
    "run_started",
    "prompt",
    "model_output",
    "tool_call",
    "tool_result",
    "repair",
    "approval",
    "final",
    "error",
)

# Numbered migrations: append, never edit one that has shipped.
_MIGRATIONS: list[str] = [
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        task_path TEXT,
        status TEXT NOT NULL,
        answer TEXT,
        started_at REAL NOT NULL,
        finished_at REAL,
        steps INTEGER NOT NULL DEFAULT 0,
        tool_calls INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER,
        model_url TEXT,
        trace_path TEXT,
        error TEXT
    )""",
    "CREATE INDEX runs_started ON runs (started_at DESC);"
    "CREATE INDEX runs_status ON runs (status, started_at DESC)",
    # The process running the run (agent._owner): a dead owner means `interrupted`.
    "ALTER TABLE runs ADD COLUMN host TEXT;"
    "ALTER TABLE runs ADD COLUMN pid INTEGER;"
    "ALTER TABLE runs ADD COLUMN pid_start INTEGER;"
    # The conversation a run is a turn of (NULL: a run of its own).
    "ALTER TABLE runs ADD COLUMN thread_id TEXT;"
    "CREATE INDEX runs_thread ON runs (thread_id, started_at)",
    # Events by run and sequence number (replay), and the run's OpenTelemetry trace id.
    """CREATE TABLE run_events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    ALTER TABLE runs ADD COLUMN trace_id TEXT""",
]
_COLUMNS = (
    "run_id",
    "task",
    "task_path",
    "status",
    "answer",
    "started_at",
    "finished_at",
    "steps",
    "tool_calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "model_url",
    "trace_path",
    "error",
    "host",
    "pid",
    "pid_start",
    "thread_id",
    "trace_id",
)
_UPDATABLE = frozenset(_COLUMNS) - {"run_id"} | {"usage"}


def resolve_store_path(store: str | Path | None = None) -> Path:
    """The run store's database file: ``store``, else ``$AGENT_STORE``, else ``.agent``.

    A ``.db``/``.sqlite`` path is the file itself; anything else is a folder holding
    ``runs.db``. ``resolve_store_path(".agent") == Path(".agent/runs.db")``.
    """
    value = str(store or os.environ.get("AGENT_STORE") or DEFAULT_STORE)
    if value.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            f"run store {value.split('@')[-1]!r}: a postgres URL has no SQLite file "
            "(open it with open_run_store)"
        )
    path = Path(value).expanduser()
    return path if path.suffix in (".db", ".sqlite", ".sqlite3") else path / "runs.db"


@dataclass
class RunRecord:
    """One run as the store knows it. Times are Unix seconds."""

    run_id: str
    task: str
    status: str
    task_path: str | None = None
    answer: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    steps: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    model_url: str | None = None
    trace_path: str | None = None
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    thread_id: str | None = None
    trace_id: str | None = None
    """The OpenTelemetry trace of the run, when tracing is on (32 hex digits)."""

    @property
    def short_id(self) -> str:
        """The random tail of the id, which ``agent runs`` and ``--resume`` accept:
        ``RunRecord("run_20261130T062412_ccc2ad", "t", "done").short_id == "ccc2ad"``."""
        return self.run_id.rsplit("_", 1)[-1]

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish; None while running."""
        return None if self.finished_at is None else self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``json.dumps(record.to_dict())``."""
        out = dataclasses.asdict(self)
        out["duration_s"] = self.duration_s
        return out

    @classmethod
    def _from_row(cls, row: dict[str, Any]) -> RunRecord:
        d = dict(row)
        usage = Usage(d.pop("prompt_tokens"), d.pop("completion_tokens"), d.pop("cached_tokens"))
        return cls(usage=usage, **d)


class RunStore:
    """The run store. ``RunStore(".agent/runs.db").list(limit=5)``; for a Postgres store,
    :func:`open_run_store` (or ``RunStore(PostgresDatabase(url))``)."""

    def __init__(self, path: str | Path | Database, *, timeout_s: float = 30.0) -> None:
        self.db = path if isinstance(path, Database) else SqliteDatabase(path, timeout_s=timeout_s)
        self.path = self.db.name
        # Ties in start time: SQLite's insertion order; Postgres has no rowid.
        self._tiebreak = "rowid" if self.db.kind == "sqlite" else "run_id"
        self.db.migrate("schema_version", _MIGRATIONS)

    def _tx(self, write: bool = True) -> Any:
        return self.db.tx(write)

    def schema_version(self) -> int:
        """The highest migration applied: ``RunStore(p).schema_version() == 4``."""
        return self.db.version("schema_version")

    def create(
        self,
        run_id: str,
        *,
        task: str,
        model_url: str | None = None,
        trace_path: str | Path | None = None,
        task_path: str | Path | None = None,
        thread_id: str | None = None,
    ) -> RunRecord:
        """Record a new run as ``running`` by this process; ValueError if ``run_id`` exists."""
        owner = Owner.current()
        try:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO runs (run_id, task, task_path, status, started_at, model_url,"
                    " trace_path, host, pid, pid_start, thread_id) VALUES (?, ?, ?, "
                    "'running', ?, ?, ?, ?, ?, ?, ?)",
                    (
                        run_id,
                        task,
                        _str(task_path),
                        time.time(),
                        model_url,
                        _str(trace_path),
                        owner.host,
                        owner.pid,
                        owner.start,
                        thread_id,
                    ),
                )
        except Exception as exc:
            if "unique" not in str(exc).lower() and "duplicate" not in str(exc).lower():
                raise
            raise ValueError(f"run {run_id!r} already exists in {self.path}") from None
        record = self.get(run_id)
        assert record is not None
        return record

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        answer: str | None = None,
        steps: int = 0,
        tool_calls: int = 0,
        usage: Usage | None = None,
        error: str | None = None,
    ) -> RunRecord:
        """Record how a run ended (``finished_at`` = now); KeyError if unknown."""
        return self.update(
            run_id,
            status=status,
            answer=answer,
            steps=steps,
            tool_calls=tool_calls,
            usage=usage or Usage(),
            error=error,
            finished_at=time.time(),
        )

    def update(self, run_id: str, **fields: Any) -> RunRecord:
        """Set some fields: ``store.update(rid, steps=3, usage=Usage(10, 2))``."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f"unknown run field(s): {', '.join(sorted(unknown))}")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"status {fields['status']!r} is not one of {RUN_STATUSES}")
        if "usage" in fields:
            usage: Usage = fields.pop("usage")
            fields |= {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cached_tokens": usage.cached_tokens,
            }
        fields = {k: _str(v) if k == "trace_path" else v for k, v in fields.items()}
        with self._tx() as conn:
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)  # keys checked against _COLUMNS
                conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", (*fields.values(), run_id))
                if conn.rowcount == 0:
                    raise KeyError(run_id)
        record = self.get(run_id)
        if record is None:
            raise KeyError(run_id)
        return record

    def resume(self, run_id: str) -> RunRecord:
        """Mark a run ``running`` again, owned by this process; KeyError if unknown."""
        owner = Owner.current()
        return self.update(
            run_id, status="running", host=owner.host, pid=owner.pid, pid_start=owner.start
        )

    def get(self, run_id: str) -> RunRecord | None:
        """The run, or None. A ``running`` run whose process died reads ``interrupted``."""
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return self._settle([RunRecord._from_row(rows[0])])[0] if rows else None

    def find(self, ref: str) -> RunRecord:
        """The one run that ``ref`` names: its id, the start of its id, or the start of its
        short id (:attr:`RunRecord.short_id`). ConfigError if none or several match."""
        pattern = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT * FROM runs WHERE run_id = ? OR run_id LIKE ? ESCAPE '\\' "
                "OR run_id LIKE ? ESCAPE '\\' ORDER BY started_at DESC LIMIT 6",
                (ref, pattern, "%\\_" + pattern),
            )
        records = [RunRecord._from_row(r) for r in rows]
        exact = [r for r in records if r.run_id == ref]
        if exact or len(records) == 1:
            return self._settle(exact or records)[0]
        if not records:
            raise ConfigError(f"no run {ref!r} in {self.path} (see: agent runs list)")
        ids = ", ".join(r.run_id for r in records[:5])
        raise ConfigError(
            f"{ref!r} matches several runs ({ids}{', …' if len(records) > 5 else ''})"
            "; give more of the id"
        )

    def list(self, limit: int = 20, status: str | None = None) -> list[RunRecord]:
        """The newest runs first, optionally only those with ``status``."""
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        if status == "interrupted":  # include running rows whose process is gone
            where, args = ("WHERE status IN ('interrupted', 'running')", [])
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"SELECT * FROM runs {where} ORDER BY started_at DESC, {self._tiebreak} DESC "
                "LIMIT ?",
                (*args, limit),
            )
        records = self._settle([RunRecord._from_row(r) for r in rows])
        return [r for r in records if status is None or r.status == status]

    def _settle(self, records: list[RunRecord]) -> list[RunRecord]:
        """Mark ``running`` runs whose owner process is gone as ``interrupted`` (persisted:
        the row is only changed if it still names that dead process)."""
        dead = [
            r
            for r in records
            if r.status == "running"
            and r.pid is not None
            and Owner(r.host or "", r.pid, r.pid_start).alive() is False
        ]
        if dead:
            with self._tx() as conn:
                for r in dead:
                    conn.execute(
                        "UPDATE runs SET status = 'interrupted' WHERE run_id = ? AND "
                        "status = 'running' AND pid = ?",
                        (r.run_id, r.pid),
                    )
                    r.status = "interrupted"
        return records

    # ---- events ------------------------------------------------------------------------

    def append_events(self, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Store events (any runs) in one transaction; a (run, seq) pair is written once.
        The events this call wrote: not one whose number another writer had stored first
        (a run taken over while its owner still ran), whose stored event stands."""
        with self._tx() as conn:
            written = conn.executemany(
                "INSERT INTO run_events (run_id, seq, kind, data, ts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, seq) DO NOTHING",
                [(e.run_id, e.seq, e.kind, e.data, e.ts) for e in events],
            )
            if written == len(events):  # the usual case: no read-back
                return list(events)
            return self._stored_as_given(conn, events)

    @staticmethod
    def _stored_as_given(conn: Any, events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Of ``events``, those stored as given (in this transaction, so nobody else wrote
        them in between); of a number given twice, the first."""
        stored: dict[tuple[str, int], str] = {}
        for run_id in {e.run_id for e in events}:
            seqs = [e.seq for e in events if e.run_id == run_id]
            rows = conn.execute(
                "SELECT seq, data FROM run_events WHERE run_id = ? AND seq BETWEEN ? AND ?",
                (run_id, min(seqs), max(seqs)),
            )
            stored |= {(run_id, row["seq"]): row["data"] for row in rows}
        out = []
        for event in events:
            if stored.get(key := (event.run_id, event.seq)) == event.data:
                del stored[key]
                out.append(event)
        return out

    def events(
        self, run_id: str, after: int = 0, limit: int = 1000, kind: str | None = None
    ) -> list[StoredEvent]:
        """A run's events with ``seq > after`` (only ``kind`` ones if given), in order, at
        most ``limit``; ``after=-1, limit=1`` with a kind: the last one of that kind."""
        where, order = ("AND kind = ?", (kind,)) if kind else ("", ())
        newest = after < 0
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT run_id, seq, kind, data, ts FROM run_events WHERE run_id = ? AND seq > ?"
                f" {where} ORDER BY seq {'DESC' if newest else ''} LIMIT ?",
                (run_id, max(after, 0), *order, limit),
            )
        return [StoredEvent(**row) for row in rows]

    def last_seq(self, run_id: str) -> int:
        """The sequence number of a run's last stored event (0: none)."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                "SELECT MAX(seq) AS seq FROM run_events WHERE run_id = ?", (run_id,)
            )
        return rows[0]["seq"] or 0


@dataclass(frozen=True)
class StoredEvent:
    """One stored event: ``data`` is the JSON of ``agent.events.to_dict(event)``."""

    run_id: str
    seq: int
    kind: str
    data: str
    ts: float


_SHARED: dict[str, RunStore] = {}
_SHARED_LOCK = threading.Lock()


def open_run_store(store: Any) -> RunStore | None:
    """The run store of a :class:`~agent.persistence.StoreLocation` (or its value):
    ``runs.db`` in its folder, or its Postgres database. ``None`` without either.

    Postgres stores are shared per URL within a process (one connection pool).
    """
    from agent.persistence import store_location

    location = store_location(store)
    if location.postgres_url is not None:
        with _SHARED_LOCK:
            if location.postgres_url not in _SHARED:
                _SHARED[location.postgres_url] = RunStore(open_database(location.postgres_url))
            return _SHARED[location.postgres_url]
    if location.folder is None:
        return None
    return RunStore(location.folder / "runs.db")


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# ---- traces ---------------------------------------------------------------------------


class TraceWriter:
    """Append-only JSONL trace. ``TraceWriter(p, run_id="r1").write("final", answer="42")``.

    Reopening an existing file appends (a resumed run continues its trace). A last line cut
    short by a crash is closed with a newline first, so the next event stays readable.
    """

    def __init__(self, path: str | Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        # A lone surrogate (from a model's JSON "\\ud800") can only sit inside a JSON string,
        # where backslashreplace writes it as the escape json.loads reads back: valid UTF-8.
        self._file: IO[str] | None = self.path.open(
            "a", encoding="utf-8", errors="backslashreplace"
        )
        if needs_newline:
            self._file.write("\n")
            self._file.flush()

    def write(self, type: str, **fields: Any) -> None:
        """Append one event and flush it."""
        if self._file is None:
            raise ValueError(f"trace {self.path} is closed")
        event = {
            "v": TRACE_SCHEMA_VERSION,
            "ts": time.time(),
            "run_id": fields.pop("run_id", self.run_id),
            "type": type,
            **fields,
        }
        line = json.dumps(event, ensure_ascii=False, default=_jsonable)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(value: Any) -> Any:
    """Dataclasses (Usage, ToolCall, Generation…), pydantic models, paths and sets."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def prompt_texts(events: list[dict[str, Any]]) -> list[str]:
    """The exact prompts of a trace, whole, in order (see the ``prompt`` event above).

    >>> prompt_texts([{"type": "prompt", "prefix_chars": 0, "text": "ab"},
    ...               {"type": "prompt", "prefix_chars": 2, "text": "c"}])
    ['ab', 'abc']
    """
    prompts: list[str] = []
    for event in events:
        if event.get("type") == "prompt":
            previous = prompts[-1] if prompts else ""
            prompts.append(previous[: event.get("prefix_chars", 0)] + (event.get("text") or ""))
    return prompts


def read_trace(path: str | Path) -> list[dict[str, Any]]:
    """All events of a trace file, in order. ``read_trace(p)[0]["type"] == "run_started"``.

    A last line cut short (the writer was killed mid-line) is skipped; a broken line
    elsewhere, or an event of an unknown major version, raises ConfigError.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read trace: {exc.strerror or exc}") from None
    lines = text.split("\n")
    events = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # no trailing newline: an interrupted write
                break
            raise ConfigError(f"{path}:{n}: not a JSON trace event ({exc.msg})") from None
        version = str(event.get("v", "?")) if isinstance(event, dict) else "?"
        if version.split(".")[0] not in _READABLE_MAJORS:
            raise ConfigError(
                f"{path}:{n}: trace format version {version} is not supported (this program "
                f"reads {' and '.join(m + '.x' for m in _READABLE_MAJORS)}): read it with "
                "the version that wrote it"
            )
        events.append(event)
    return events
