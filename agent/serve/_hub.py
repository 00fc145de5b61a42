"""Events of runs: stored first, then handed to live listeners; replayed by number.

Write-then-publish: :meth:`EventHub.emit` queues an event; one background task writes
whatever is queued in a single transaction (off the event loop), and only then hands the
batch to this process's listeners. So a listener never sees an event that a crash could
lose, and a client that reconnects with ``Last-Event-ID: N`` gets exactly the events
after N — from this replica, another one, or this one after a restart.

A listener (:meth:`EventHub.follow`) registers for live events first, then reads what is
stored after its position, then takes live events (a batch per write, so a burst of text
deltas is one socket write), dropping numbers it has seen; a gap
(events written by another replica) sends it back to the store. Runs that no task of this
process is running are polled in the store (``poll_s``), so a listener follows a run
wherever it runs; workers of one host (:class:`~agent.serve._peers.PeerBus`) also hand
each other the events they stored, which go to those listeners as live events.

A run running here (between :meth:`EventHub.open_run` and :meth:`EventHub.close_run`)
keeps its latest published events in memory too (at most ``RECENT``): a listener whose
position they cover reads them there instead of the store — the usual case of a client
that starts a run and then opens its stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from agent._io import io
from agent.runs import RunStore, StoredEvent
from agent.serve._peers import PeerBus

__all__ = ["EventHub", "is_last"]

_log = logging.getLogger(__name__)
_KEEPALIVE_S = 15.0
RECENT = 256
"""Published events kept in memory per run running here (older ones: from the store)."""
_READ_STORE: list[StoredEvent] = []
"""Put in a listener's queue: new events are in the store (:meth:`EventHub.stored_elsewhere`)."""


def is_last(event: StoredEvent) -> bool:
    """The run's stream ends here: a ``final`` event that is not a pause for approval."""
    return (
        event.kind == "final" and json.loads(event.data)["result"]["status"] != "awaiting_approval"
    )


class EventHub:
    """Stores and fans out events of every run of this process."""

    def __init__(self, events: RunStore, *, poll_s: float = 0.3, batch_s: float = 0.002) -> None:
        self.events, self.poll_s, self.batch_s = events, poll_s, batch_s
        self.peers: PeerBus | None = None
        """The other workers of this host, once the service starts (``ServeConfig.peers``)."""
        self._queued: list[StoredEvent] = []
        self._wake = asyncio.Event()
        self._listeners: dict[str, set[asyncio.Queue[StoredEvent]]] = {}
        self._recent: dict[str, _Recent] = {}  # runs running here
        self._unstored: dict[str, int] = {}  # run -> its last event number not yet stored
        self._told: set[asyncio.Queue[list[StoredEvent]]] = set()  # holding a _READ_STORE
        self._flushed = asyncio.Event()
        self.closing = False

    def open_run(self, run_id: str, first_seq: int) -> None:
        """``run_id`` runs here from now on; its next event is number ``first_seq``."""
        self._recent[run_id] = _Recent(first_seq)

    def close_run(self, run_id: str) -> None:
        """``run_id`` no longer runs here (its listeners poll the store from now on)."""
        self._recent.pop(run_id, None)

    def emit(self, run_id: str, seq: int, data: dict[str, Any]) -> None:
        """Queue event number ``seq`` of ``run_id`` (its JSON form) for storing."""
        text = json.dumps(data, ensure_ascii=False, default=str)
        self._queued.append(StoredEvent(run_id, seq, data["kind"], text, time.time()))
        self._unstored[run_id] = seq
        self._wake.set()

    async def last_seq(self, run_id: str) -> int:
        """The number of ``run_id``'s last event: stored, or given to :meth:`emit` and not
        stored yet (a run continued right after it paused here must not reuse it)."""
        stored = await io(self.events.last_seq, run_id)
        return max(stored, self._unstored.get(run_id, 0))

    async def run(self) -> None:
        """Write and publish queued events until cancelled."""
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.batch_s)  # gather a batch: one write for many events
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued now, then publish it."""
        self._wake.clear()
        batch, self._queued = self._queued, []
        if not batch:
            return
        try:
            stored = await io(self.events.append_events, batch)
        except Exception:  # keep the events: the next flush tries again
            _log.exception("storing %d events failed", len(batch))
            self._queued[:0] = batch
            await asyncio.sleep(0.5)
            self._wake.set()
            return
        for event in batch:
            if self._unstored.get(event.run_id) == event.seq:
                del self._unstored[event.run_id]
        if len(stored) < len(batch):
            self._lost(batch, stored)
        by_run: dict[str, list[StoredEvent]] = {}
        for event in stored:
            by_run.setdefault(event.run_id, []).append(event)
        for run_id, events in by_run.items():
            if (recent := self._recent.get(run_id)) is not None:
                recent.events.extend(events)
            for queue in self._listeners.get(run_id, ()):
                queue.put_nowait(events)
        if self.peers is not None:
            self.peers.send(by_run)

    def _lost(self, batch: list[StoredEvent], stored: list[StoredEvent]) -> None:
        """Another writer stored some of these event numbers first (its run was taken over
        while this process still ran it): the store's events stand, so the runs' listeners
        here read the store from now on, and only the events stored here are published."""
        kept = {(e.run_id, e.seq) for e in stored}
        for run_id in {e.run_id for e in batch if (e.run_id, e.seq) not in kept}:
            _log.warning("run %s: another replica stored its events first", run_id)
            self._recent.pop(run_id, None)

    def stored_elsewhere(self, received: list[tuple[str, list[StoredEvent] | None]]) -> None:
        """Another worker stored these events (by run; None: some, read the store): they
        go to this process's listeners of those runs as live events."""
        for run_id, events in received:
            if run_id in self._recent:  # running here now: its events come from here
                continue
            for queue in self._listeners.get(run_id, ()):
                if events is not None:
                    queue.put_nowait(events)
                elif queue not in self._told:  # one is enough until it is taken
                    self._told.add(queue)
                    queue.put_nowait(_READ_STORE)

    async def follow(self, run_id: str, after: int) -> AsyncIterator[list[StoredEvent]]:
        """Events of ``run_id`` numbered above ``after``, in batches, until its last one;
        an empty batch now and then while nothing happens (for keep-alives)."""
        queue: asyncio.Queue[list[StoredEvent]] = asyncio.Queue()
        self._listeners.setdefault(run_id, set()).add(queue)
        last, quiet_since = after, time.monotonic()
        try:
            while not self.closing:
                recent = self._recent.get(run_id)
                if recent is not None and recent.covers(last):
                    stored = [e for e in recent.events if e.seq > last]
                else:
                    stored = await io(self.events.events, run_id, last)
                if stored:
                    events = _until_last(stored)
                    yield events
                    last, quiet_since = events[-1].seq, time.monotonic()
                    if is_last(events[-1]):
                        return
                    if len(stored) == 1000:  # a full page: read the next one
                        continue
                async for events in self._live(run_id, queue, last):
                    yield events
                    last, quiet_since = events[-1].seq, time.monotonic()
                    if is_last(events[-1]):
                        return
                if time.monotonic() - quiet_since > _KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield []
        finally:
            self._told.discard(queue)
            listeners = self._listeners.get(run_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[run_id]

    async def _live(
        self, run_id: str, queue: asyncio.Queue[list[StoredEvent]], last: int
    ) -> AsyncIterator[list[StoredEvent]]:
        """Consecutive live events after ``last``, in batches; returns on a gap, a quiet
        spell or closing, so the caller reads the store again (the store is polled rarely
        while the run runs here)."""
        while not self.closing:
            timeout = 5.0 if run_id in self._recent else self.poll_s
            try:
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for
                    events = await queue.get()
            except TimeoutError:
                return
            if events is _READ_STORE:
                self._told.discard(queue)
                return
            events = [e for e in events if e.seq > last]
            if not events:
                continue
            if events[0].seq != last + 1:
                return
            events = _until_last(events)
            yield events
            last = events[-1].seq
            if is_last(events[-1]):
                return

    def begin_close(self) -> None:
        """End every listener now (the server is going away; clients reconnect)."""
        self.closing = True
        for run_id, queues in self._listeners.items():
            for queue in queues:
                queue.put_nowait([StoredEvent(run_id, -1, "closing", "{}", time.time())])

    async def aclose(self) -> None:
        """Write what is left; listeners end."""
        self.begin_close()
        with contextlib.suppress(Exception):
            await self.flush()


class _Recent:
    """The latest published events of a run running here, from number ``first`` on."""

    __slots__ = ("events", "first")

    def __init__(self, first: int) -> None:
        self.first = first
        self.events: deque[StoredEvent] = deque(maxlen=RECENT)

    def covers(self, last: int) -> bool:
        """Whether every published event after number ``last`` is here."""
        return (self.events[0].seq if self.events else self.first) <= last + 1


def _until_last(events: list[StoredEvent]) -> list[StoredEvent]:
    for i, event in enumerate(events):
        if is_last(event):
            return events[: i + 1]
    return events
