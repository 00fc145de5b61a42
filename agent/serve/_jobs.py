"""The service's own rows, beside the run store in the same database (SQLite or Postgres).

``serve_jobs``: one row per run started over HTTP — who asked (a token's identity), the
request (task, input, vars, options: enough for any replica to continue the run), its
``Idempotency-Key`` (hashed with the identity, so keys are per token), and which replica
runs it: ``owner`` plus a lease (``lease_until``) that the owner renews. A run whose lease
has run out, or whose owner process is gone (same host: :class:`agent._owner.Owner`), is
taken over by a live replica. ``state``: ``active`` (a replica runs it, or will),
``paused`` (waiting for an approval: no owner), ``ended``, ``cancelled``.
``cancel_requested`` is the control bit a replica sets for a run another one owns.
``takeovers``: how often in a row the run was taken from an owner that died (or went
silent) before it made progress; a run that keeps killing its process is not resumed for
ever (``MAX_TAKEOVERS``).

``serve_threads``: conversations created with ``POST /v1/threads``, each bound to a task.

>>> Job.__dataclass_fields__["state"].type
'str'
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from agent._db import Database
from agent._owner import Owner

__all__ = ["Job", "JobStore", "idempotency_hash"]

_MIGRATIONS = [
    """CREATE TABLE serve_jobs (
        run_id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        idem_key TEXT,
        task TEXT NOT NULL,
        spec TEXT NOT NULL,
        thread_id TEXT,
        state TEXT NOT NULL,
        owner TEXT,
        owner_host TEXT,
        owner_pid INTEGER,
        owner_start INTEGER,
        lease_until REAL NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        error TEXT
    );
    CREATE UNIQUE INDEX serve_jobs_idem ON serve_jobs (idem_key);
    CREATE INDEX serve_jobs_state ON serve_jobs (state, lease_until);
    CREATE INDEX serve_jobs_owner ON serve_jobs (owner, state);
    CREATE INDEX serve_jobs_thread ON serve_jobs (thread_id, created_at);
    CREATE TABLE serve_threads (
        thread_id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        task TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    # takeovers of a run whose owner died (a release by a drain is not one)
    "ALTER TABLE serve_jobs ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0",
]


def idempotency_hash(identity: str, key: str) -> str:
    """Keys are scoped per token: the same key from two tokens names two runs."""
    return hashlib.sha256(f"{identity}\0{key}".encode()).hexdigest()


@dataclass
class Job:
    run_id: str
    identity: str
    task: str
    spec: dict[str, Any]
    state: str
    created_at: float
    thread_id: str | None = None
    idem_key: str | None = None
    owner: str | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_start: int | None = None
    lease_until: float = 0.0
    cancel_requested: int = 0
    error: str | None = None
    takeovers: int = 0

    @classmethod
    def _from_row(cls, row: dict[str, Any]) -> Job:
        # columns a newer version added are left out: replicas of both run side by side
        known = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "spec": json.loads(row["spec"])})

    def owner_dead(self) -> bool:
        """True when the owner ran on this host and its process is gone."""
        if self.owner_pid is None:
            return self.owner is None
        return Owner(self.owner_host or "", self.owner_pid, self.owner_start).alive() is False


class JobStore:
    """``serve_jobs`` and ``serve_threads`` in ``db``; every method is one transaction."""

    def __init__(self, db: Database, replica: str, lease_s: float) -> None:
        self.db, self.replica, self.lease_s = db, replica, lease_s
        self._me = Owner.current()
        db.migrate("serve_schema_version", _MIGRATIONS)

    def insert(self, job: Job) -> Job:
        """Record a new job owned by this replica: ``job``, or the earlier job with the same
        idempotency key when there is one (then nothing is inserted)."""
        try:
            with self.db.tx() as tx:
                tx.execute(
                    "INSERT INTO serve_jobs (run_id, identity, idem_key, task, spec, thread_id,"
                    " state, owner, owner_host, owner_pid, owner_start, lease_until, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?)",
                    (
                        job.run_id,
                        job.identity,
                        job.idem_key,
                        job.task,
                        json.dumps(job.spec),
                        job.thread_id,
                        *self._owner_values(),
                        job.created_at,
                    ),
                )
        except Exception:
            earlier = self.by_idempotency(job.idem_key) if job.idem_key else None
            if earlier is None:
                raise
            return earlier
        return job

    def _owner_values(self) -> tuple[Any, ...]:
        me = self._me
        return (self.replica, me.host, me.pid, me.start, time.time() + self.lease_s)

    def get(self, run_id: str) -> Job | None:
        with self.db.tx(write=False) as tx:
            rows = tx.execute("SELECT * FROM serve_jobs WHERE run_id = ?", (run_id,))
        return Job._from_row(rows[0]) if rows else None

    def by_idempotency(self, idem_key: str) -> Job | None:
        with self.db.tx(write=False) as tx:
            rows = tx.execute("SELECT * FROM serve_jobs WHERE idem_key = ?", (idem_key,))
        return Job._from_row(rows[0]) if rows else None

    def set_state(self, run_id: str, state: str, error: str | None = None) -> None:
        """End or pause a job this replica runs: it keeps no owner."""
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE serve_jobs SET state = ?, owner = NULL, owner_pid = NULL, "
                "lease_until = 0, error = COALESCE(?, error) WHERE run_id = ?",
                (state, error, run_id),
            )

    def claim(self, job: Job, from_state: str) -> bool:
        """Take ``job`` over if it is still as read (state, owner, lease): one winner.
        Taking it from an owner (that died, or whose lease ran out) counts in ``takeovers``."""
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE serve_jobs SET state = 'active', owner = ?, owner_host = ?, "
                "owner_pid = ?, owner_start = ?, lease_until = ?, "
                "takeovers = takeovers + CASE WHEN owner IS NULL THEN 0 ELSE 1 END "
                "WHERE run_id = ? AND state = ?"
                " AND COALESCE(owner, '') = ? AND lease_until = ? AND cancel_requested = 0",
                (
                    *self._owner_values(),
                    job.run_id,
                    from_state,
                    job.owner or "",
                    job.lease_until,
                ),
            )
            return tx.rowcount == 1

    def release(self, run_id: str) -> None:
        """Give a running job back (draining): any replica may take it at once."""
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE serve_jobs SET owner = NULL, owner_pid = NULL, lease_until = 0 "
                "WHERE run_id = ? AND owner = ?",
                (run_id, self.replica),
            )

    def heartbeat(self) -> None:
        """Extend the leases of every job this replica owns."""
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE serve_jobs SET lease_until = ? WHERE owner = ? AND state = 'active'",
                (time.time() + self.lease_s, self.replica),
            )

    def orphans(self) -> list[Job]:
        """Active jobs no live replica runs: released, lease over, or owner dead on this
        host. Each owner on this host is checked once (a worker may own hundreds of runs;
        checking each, every tick, cost a millisecond of CPU per run)."""
        me, now = self._me, time.time()
        with self.db.tx(write=False) as tx:
            owners = tx.execute(
                "SELECT DISTINCT owner_pid, owner_start FROM serve_jobs WHERE state = 'active'"
                " AND owner_host = ? AND owner <> ? AND lease_until >= ?",
                (me.host, self.replica, now),
            )
        dead = [
            o for o in owners
            if Owner(me.host, o["owner_pid"], o["owner_start"]).alive() is False
        ]  # fmt: skip
        where, params = "lease_until < ?", [now]
        for o in dead:
            if o["owner_start"] is None:  # not Linux
                where += " OR (owner_host = ? AND owner_pid = ? AND owner_start IS NULL)"
                params += [me.host, o["owner_pid"]]
            else:
                where += " OR (owner_host = ? AND owner_pid = ? AND owner_start = ?)"
                params += [me.host, o["owner_pid"], o["owner_start"]]
        with self.db.tx(write=False) as tx:
            rows = tx.execute(
                "SELECT * FROM serve_jobs WHERE state = 'active' AND COALESCE(owner, '') <> ?"
                f" AND ({where}) ORDER BY created_at LIMIT 200",
                (self.replica, *params),
            )
        return [Job._from_row(r) for r in rows]

    def fail_if(self, job: Job, error: str) -> bool:
        """End an orphaned ``job`` with ``error`` if it is still as read: one winner."""
        with self.db.tx() as tx:
            tx.execute(
                "UPDATE serve_jobs SET state = 'ended', error = ?, owner = NULL, "
                "owner_pid = NULL, lease_until = 0 WHERE run_id = ? AND state = 'active' "
                "AND COALESCE(owner, '') = ? AND lease_until = ? AND cancel_requested = 0",
                (error, job.run_id, job.owner or "", job.lease_until),
            )
            return tx.rowcount == 1

    def clear_takeovers(self, run_id: str) -> None:
        """The run made progress since it was taken over: its count starts again."""
        with self.db.tx() as tx:
            tx.execute("UPDATE serve_jobs SET takeovers = 0 WHERE run_id = ?", (run_id,))

    def request_cancel(self, run_id: str) -> None:
        with self.db.tx() as tx:
            tx.execute("UPDATE serve_jobs SET cancel_requested = 1 WHERE run_id = ?", (run_id,))

    def cancel_if(self, run_id: str, states: tuple[str, ...]) -> bool:
        """Mark a job cancelled if it is in one of ``states`` (no replica runs it)."""
        marks = ", ".join("?" for _ in states)
        with self.db.tx() as tx:
            tx.execute(
                f"UPDATE serve_jobs SET state = 'cancelled', cancel_requested = 1, owner = NULL"
                f" WHERE run_id = ? AND state IN ({marks})",
                (run_id, *states),
            )
            return tx.rowcount == 1

    def cancel_requests(self) -> list[str]:
        """Runs this replica owns that a client asked (through any replica) to cancel."""
        with self.db.tx(write=False) as tx:
            rows = tx.execute(
                "SELECT run_id FROM serve_jobs WHERE owner = ? AND cancel_requested = 1 "
                "AND state = 'active'",
                (self.replica,),
            )
        return [r["run_id"] for r in rows]

    # ---- threads ---------------------------------------------------------------------

    def create_thread(self, thread_id: str, identity: str, task: str, meta: dict) -> float:
        created = time.time()
        with self.db.tx() as tx:
            tx.execute(
                "INSERT INTO serve_threads (thread_id, identity, task, metadata, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (thread_id, identity, task, json.dumps(meta), created),
            )
        return created

    def thread(self, thread_id: str) -> dict[str, Any] | None:
        with self.db.tx(write=False) as tx:
            rows = tx.execute("SELECT * FROM serve_threads WHERE thread_id = ?", (thread_id,))
            if not rows:
                return None
            runs = tx.execute(
                "SELECT run_id FROM serve_jobs WHERE thread_id = ? ORDER BY created_at",
                (thread_id,),
            )
        row = dict(rows[0])
        row["metadata"] = json.loads(row["metadata"])
        row["runs"] = [r["run_id"] for r in runs]
        return row
