"""One thread for database and trace writes, so they never run on the event loop and
never contend with each other.

SQLite allows one writer at a time and makes the others wait by sleeping (1, 2, 5, 10…
ms, up to its busy timeout): on the event loop, that wait would stall every run of the
process; calls spread over a thread pool would queue on the lock that way. Funnelled
through one thread, they run back to back, in the order they were submitted: a run's
trace lines, then its row's last update. For Postgres the same thread keeps calls in
order; each is a short round trip on loopback or a LAN.

The thread takes whatever is queued, runs it, and hands the results of that batch back to
the event loop in one call (every 2 ms in a long batch). Hundreds of concurrent runs make
~18 calls each (checkpoints, run rows, trace lines); with a ``concurrent.futures`` future
and a wake-up of the loop per call, as ``run_in_executor`` does, that plumbing and the
threads' hand-offs cost about a third of the CPU of a run (500 runs at once through the
Python API on the ``h200`` simulator, alternated: 9.7–16.4 ms a run, 7.1–10.7 batched).

:func:`io` awaits the call's result; :func:`io_soon` queues it and returns at once (a
trace line; a row update from a ``finally`` that cannot wait). A call whose caller was
cancelled before it started is skipped. Calls still queued when the interpreter exits
are run before it does.

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
        self._start_lock = threading.Lock()

    def put(self, call: tuple[Any, ...]) -> None:
        if self._thread is None:
            self._start()
        self._queue.put(call)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            # As concurrent.futures does: before the interpreter joins its threads, run
            # what is queued, then stop.
            threading._register_atexit(self._stop)  # type: ignore[attr-defined]
            thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            thread.start()
            self._thread = thread

    def _stop(self) -> None:
        if self._thread is not None:
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
                if call is _STOP:
                    self._hand_back(done)
                    return
                fn, args, kwargs, loop, future = call
                if future is not None and future.cancelled():  # its caller has gone
                    continue
                try:
                    outcome = (future, True, fn(*args, **kwargs))
                except BaseException as exc:
                    if future is None:
                        _log.error("a background write failed", exc_info=exc)
                        continue
                    outcome = (future, False, exc)
                if future is not None:
                    done.setdefault(loop, []).append(outcome)
                    if time.monotonic() - since > _HAND_BACK_S:  # a long batch: results so far
                        self._hand_back(done)
                        done, since = {}, time.monotonic()
            self._hand_back(done)

    @staticmethod
    def _hand_back(done: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]]) -> None:
        for loop, outcomes in done.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody awaits
                loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[Any, ...]]) -> None:
    for future, ok, value in outcomes:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)


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
