"""One thread for database and trace writes, so they never run on the event loop and
never contend with each other.

SQLite allows one writer at a time and makes the others wait by sleeping (1, 2, 5, 10…
ms, up to its busy timeout): on the event loop, that wait would stall every run of the
process; calls spread over a thread pool would queue on the lock that way. Funnelled
through one thread, they run back to back, in the order they were submitted: a run's
trace lines, then its row's last update. For Postgres the same thread keeps calls in
order; each is a short round trip on loopback or a LAN.

The thread takes whatever is queued, runs it, and hands the results of that batch back to
the event loop in one call; in a long batch, every 2 ms, before its next call starts (so
a long call, such as a wait for SQLite's write lock, also delays the results of the quick
calls just before it in its batch). Hundreds of concurrent runs make ~18 calls each
(checkpoints, run rows, trace lines); with a ``concurrent.futures`` future and a wake-up
of the loop per call, as ``run_in_executor`` does, that plumbing and the threads'
hand-offs cost about a third of the CPU of a run (500 runs at once through the
Python API on the ``h200`` simulator, alternated: 9.7–16.4 ms a run, 7.1–10.7 batched).

:func:`io` awaits the call's result; :func:`io_soon` queues it and returns at once (a
trace line; a row update from a ``finally`` that cannot wait). A call whose caller was
cancelled before it started is skipped. Calls still queued when the interpreter exits
are run before it does; one queued after that (from a thread still running) raises
``RuntimeError``, as with ``concurrent.futures``.

>>> import asyncio; asyncio.run(io(sum, [1, 2]))
3
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["io", "io_soon"]

T = TypeVar("T")
_log = logging.getLogger(__name__)
_STOP: Any = object()
_HAND_BACK_S = 0.002
"""A batch that runs longer hands back the results it has so far, then goes on."""


class _Lane:
    """The I/O thread: calls in submission order; results back to each loop per batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the thread is not in the child

    def _reset(self) -> None:
        # (fn, args, kwargs, loop, future): loop and future None for io_soon
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._lock = threading.Lock()  # nothing is queued behind _STOP

    def put(self, call: tuple[Any, ...]) -> None:
        with self._lock:
            if self._stopped:  # as concurrent.futures: an error, not a call that never runs
                raise RuntimeError("cannot queue an I/O call after interpreter shutdown")
            if self._thread is None:
                self._start()
            self._queue.put(call)

    def _start(self) -> None:
        # As concurrent.futures does: before the interpreter joins its threads, run what is
        # queued, then stop.
        threading._register_atexit(self._stop)  # type: ignore[attr-defined]
        thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        thread.start()
        self._thread = thread

    def _stop(self) -> None:
        with self._lock:
            if self._thread is None or self._stopped:
                return
            self._stopped = True
            self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            while True:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            done: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
            since = time.monotonic()
            for call in batch:
                if done and time.monotonic() - since > _HAND_BACK_S:  # a long batch: results so far
                    self._hand_back(done)
                    done, since = {}, time.monotonic()
                if call is _STOP:
                    self._hand_back(done)
                    return
                if (outcome := _outcome(call)) is not None:
                    done.setdefault(call[3], []).append(outcome)
            self._hand_back(done)
            del batch, done, call, outcome  # as concurrent.futures: none kept while it waits

    @staticmethod
    def _hand_back(done: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]]) -> None:
        for loop, outcomes in done.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody awaits
                loop.call_soon_threadsafe(_settle, outcomes)


def _outcome(call: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``(future, ok, result or exception)`` to hand back; None for io_soon and skipped calls."""
    fn, args, kwargs, _, future = call
    if future is not None and future.cancelled():  # its caller has gone
        return None
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        if future is None:
            _log.error("a background write failed", exc_info=exc)
            return None
        return future, False, exc
    return None if future is None else (future, True, value)


def _settle(outcomes: list[tuple[Any, ...]]) -> None:
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        elif isinstance(value, StopIteration):  # a Future refuses it (a TypeError)
            error = RuntimeError("an I/O call raised StopIteration")
            error.__cause__ = value
            future.set_exception(error)
        else:
            future.set_exception(value)


_LANE = _Lane("agent-io")


async def io(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the I/O thread, after everything queued before it."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    _LANE.put((fn, args, kwargs, loop, future))
    return await future


def io_soon(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Queue ``fn(*args, **kwargs)`` on the I/O thread; a failure is logged, not lost."""
    _LANE.put((fn, args, kwargs, None, None))
