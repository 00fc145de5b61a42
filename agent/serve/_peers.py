"""Workers of one host hand each other the events they store.

``agent serve --workers N`` runs N processes on one listening socket; the kernel hands each
connection to one of them, so a run's event stream is often served by a worker that does
not run it. Such a listener would learn of new events by polling the store (``poll_s``).
Instead, each worker binds a UNIX datagram socket in a shared folder
(``<pid>-<random>.sock``) and, after each write of events, sends them to every other
socket there: a worker that receives them hands them to its listeners of those runs as
if it had written them. A run whose events do not fit in a datagram (a long answer, a
big tool result) is sent as its id alone: its listeners read the store at once.

Each worker also keeps a snapshot of its metrics there (``<name>.metrics.json``), so that
``/metrics`` answers for all of them (:meth:`PeerBus.write_metrics`,
:meth:`PeerBus.all_metrics`). The folder must be this user's and writable by no one else.

Only events already stored are sent (the hub writes, then publishes), so a listener
never sees an event a crash could lose; one that is lost on the way (a peer restarting)
costs only latency, since listeners still poll, and a listener that finds a gap reads
the store. A peer's socket holds few datagrams (Linux: ``net.unix.max_dgram_qlen``, 10
by default), so a busy peer soon refuses more: what is meant for it waits, merged, and
goes when it has read its queue (tried again after ``RETRY_S``, then less and less often
while it stays full). Replicas on other hosts are not reached (they poll).

>>> import tempfile; folder = tempfile.mkdtemp()
>>> a, b = PeerBus(folder), PeerBus(folder)
>>> a.send({"run-1": [StoredEvent("run-1", 1, "step", "{}", 0.0)]}); b.receive()
[('run-1', [StoredEvent(run_id='run-1', seq=1, kind='step', data='{}', ts=0.0)])]
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from agent.runs import StoredEvent

__all__ = ["PeerBus"]

MAX_DATAGRAM = 2048 if sys.platform == "darwin" else 16384
"""The largest datagram sent (under the sockets' size limit: ``net.local.dgram.maxdgram``
is 2048 on macOS)."""
RETRY_S = 0.002
"""How soon ids a peer's full queue refused are sent again (doubling, while it stays
full, up to ``_MAX_RETRY_S``)."""
_MAX_RETRY_S = 0.25
_GIVE_UP_S = 1.0
"""A peer that refuses for this long loses what waits for it (its listeners poll)."""
_MAX_PENDING = 100_000
"""Runs waiting for a peer that reads none: past this many they are dropped (it polls)."""
_MAX_EVENTS = 64
"""Events of one run waiting for a peer: past this many, only the run's id waits."""
_PEERS_TTL_S = 1.0
"""How long the list of peers' sockets is reused before the folder is read again."""


class PeerBus:
    """This process's socket in ``folder``: :meth:`send` to every other one there,
    :meth:`receive` what they sent (or :meth:`attach` to a loop to be called back)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        info = self.folder.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise PermissionError(
                f"{self.folder} must belong to this user and not be writable by others "
                "(anyone who can write there can read run ids and forge metrics)"
            )
        self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(str(self.path))
        self._peers: list[str] = []
        self._peers_at = -_PEERS_TTL_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: dict[str, _Peer] = {}  # by socket path
        self._retry: asyncio.TimerHandle | None = None
        self._retry_s = RETRY_S

    def send(self, batch: Mapping[str, Sequence[StoredEvent]]) -> None:
        """Hand every peer these stored events, by run (best effort)."""
        for path in self._peer_paths():
            peer = self._out.get(path) or self._connect(path)
            if peer is None:
                continue
            for run_id, events in batch.items():
                peer.add(run_id, events)
            if peer.refused_since is None:  # else it waits for the retry, in order
                self._flush(peer)
        self._schedule_retry()

    def _connect(self, path: str) -> _Peer | None:
        """A socket of its own per peer: each has its own send buffer, so a peer that
        reads nothing (stopped, in a debugger) does not hold up the others."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            self._forget(path, exc)
            return None
        self._out[path] = peer = _Peer(sock)
        return peer

    def _flush(self, peer: _Peer) -> None:
        """Send what ``peer`` has pending, until its queue is full."""
        while peer.pending:
            payload, count = _datagram(peer.pending)
            try:
                peer.sock.send(payload)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS):  # dead, or broken
                    self._forget(next(p for p, q in self._out.items() if q is peer), exc)
                    return
                now = time.monotonic()
                if peer.refused_since is None:
                    peer.refused_since = now
                elif now - peer.refused_since > _GIVE_UP_S:  # its listeners poll instead
                    peer.pending.clear()
                    peer.sizes.clear()
                return
            for run_id in list(itertools.islice(peer.pending, count)):
                del peer.pending[run_id]
                peer.sizes.pop(run_id, None)
        peer.refused_since = None

    def _retry_refused(self) -> None:
        self._retry = None
        for peer in list(self._out.values()):
            if peer.refused_since is not None:
                self._flush(peer)
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        """While a peer refuses, try it again: after ``RETRY_S``, then less and less often."""
        if self._retry is not None or self._loop is None or self._loop.is_closed():
            return
        if not any(p.refused_since is not None and p.pending for p in self._out.values()):
            self._retry_s = RETRY_S
            return
        self._retry = self._loop.call_later(self._retry_s, self._retry_refused)
        self._retry_s = min(self._retry_s * 2, _MAX_RETRY_S)

    def _forget(self, path: str, exc: OSError) -> None:
        if (peer := self._out.pop(path, None)) is not None:
            peer.sock.close()
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):  # nobody reads it any more
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._peers_at = -_PEERS_TTL_S

    def receive(self) -> list[tuple[str, list[StoredEvent] | None]]:
        """What peers sent since the last call (without waiting): each run with its new
        events, or None (read them from the store)."""
        received: list[tuple[str, list[StoredEvent] | None]] = []
        while True:
            try:
                payload = self._sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return received
            if not payload:  # a peer that just started: read the folder at the next send
                self._peers_at = -_PEERS_TTL_S
                continue
            try:
                items = orjson.loads(payload)
            except ValueError:  # not from a peer of this version
                continue
            for item in items if isinstance(items, list) else ():
                if (checked := _checked(item)) is not None:
                    received.append(checked)

    def attach(
        self, on_events: Callable[[list[tuple[str, list[StoredEvent] | None]]], None]
    ) -> None:
        """Call ``on_events(received)`` on this loop whenever peers send some (as
        :meth:`receive` returns them); and say hello (an empty datagram), so that peers
        started earlier send to this one at once."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), lambda: on_events(self.receive()))
        for peer in self._peer_paths():
            with contextlib.suppress(OSError):
                self._sock.sendto(b"", peer)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for peer in self._out.values():
            peer.sock.close()
        self._out.clear()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def write_metrics(self, snapshot: dict[str, Any]) -> None:
        """Replace this process's metrics snapshot in the folder (blocking file I/O)."""
        path = self.path.with_suffix(".metrics.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(snapshot))
        os.replace(tmp, path)

    def all_metrics(self) -> list[dict[str, Any]]:
        """Every process's latest snapshot, this one's included, each with ``"live"``:
        whether its process still reads its socket (blocking file I/O). A file that is
        not a snapshot is skipped."""
        snapshots = []
        for path in self.folder.glob("*.metrics.json"):
            try:
                snapshot = json.loads(path.read_text())
            except (OSError, ValueError):  # gone, or being replaced
                continue
            if isinstance(snapshot, dict):
                sock = path.with_name(path.name.removesuffix(".metrics.json") + ".sock")
                snapshot["live"] = sock == self.path or _reads(sock)
                snapshots.append(snapshot)
        return snapshots

    def _peer_paths(self) -> list[str]:
        if time.monotonic() - self._peers_at > _PEERS_TTL_S:
            self._peers_at = time.monotonic()
            self._peers = [str(p) for p in self.folder.glob("*.sock") if p != self.path]
        return self._peers


def _reads(sock: Path) -> bool:
    """Whether a process has ``sock`` bound (else connecting is refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


class _Peer:
    """Another worker: a socket to it, and what waits for room in its queue (by run: its
    events as ``[seq, kind, data, ts]`` rows, or None when only its id waits)."""

    __slots__ = ("pending", "refused_since", "sizes", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending: dict[str, list[Any] | None] = {}
        self.sizes: dict[str, int] = {}  # about how many bytes each run's rows take
        self.refused_since: float | None = None

    def add(self, run_id: str, events: Sequence[StoredEvent]) -> None:
        kept = self.pending.get(run_id, [])
        size = self.sizes.get(run_id, 0) + sum(len(e.data) + 64 for e in events)
        if kept is None or size > MAX_DATAGRAM or len(kept) + len(events) > _MAX_EVENTS:
            self.pending[run_id] = None  # too much to carry: its listeners read the store
            self.sizes.pop(run_id, None)
        else:
            self.pending[run_id] = [*kept, *map(_row, events)]
            self.sizes[run_id] = size
        if len(self.pending) > _MAX_PENDING:
            self.pending.clear()
            self.sizes.clear()


def _checked(item: Any) -> tuple[str, list[StoredEvent] | None] | None:
    """A received ``[run_id, rows]`` as the hub takes it; None if it is malformed. Rows
    that are not well formed, or a ``final`` that does not say how the run ended, make it
    ``(run_id, None)``: its listeners read the store."""
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        return None
    run_id, rows = item
    if rows is None:
        return (run_id, None)
    try:
        events = [StoredEvent(run_id, *row) for row in rows]
        for e in events:
            if not (
                isinstance(e.seq, int) and isinstance(e.kind, str) and isinstance(e.data, str)
                and isinstance(e.ts, int | float)
            ):  # fmt: skip
                return (run_id, None)
            if e.kind == "final" and not isinstance(json.loads(e.data)["result"]["status"], str):
                return (run_id, None)
    except (TypeError, ValueError, KeyError):
        return (run_id, None)
    return (run_id, events)


def _row(event: StoredEvent) -> tuple[int, str, str, float]:
    return (event.seq, event.kind, event.data, event.ts)


def _datagram(pending: dict[str, list[Any] | None]) -> tuple[bytes, int]:
    """The first runs of ``pending`` (one at least), at most ``MAX_DATAGRAM`` bytes; and
    how many. A run whose events alone do not fit goes as its id: ``[run_id, null]``."""
    parts: list[bytes] = []
    size = 2
    for run_id, rows in pending.items():
        part = orjson.dumps([run_id, rows])
        if len(part) + 2 > MAX_DATAGRAM:
            part = orjson.dumps([run_id, None])
        if parts and size + len(part) + 1 > MAX_DATAGRAM:
            break
        parts.append(part)
        size += len(part) + 1
    return b"[" + b",".join(parts) + b"]", len(parts)
