"""``agent serve --workers N``: N processes serving one listening socket.

One Python process runs one core's worth of runs (the GIL). With N workers the kernel
hands each new connection to one of them; each is a replica on the shared store
(:mod:`agent.serve._runner`), so any worker reads, streams, approves or cancels any run,
and workers tell each other of stored events (:mod:`agent.serve._peers`), so a stream
served by another worker than the run's is as prompt as one served by its own.

The parent binds the port, starts the workers (spawned: a fresh interpreter each, not a
copy of the parent's threads) and watches them:

- a worker that exits is replaced; its siblings take over its runs at once (their
  owner's process is gone) and resume them from their checkpoints;
- a worker that fails while starting (a port, a store, a task) stops them all: exit 1;
- SIGTERM or Ctrl-C: every worker gets SIGTERM and drains as a single server does; the
  parent waits for them, up to ``grace_s``, then kills what is left. A second signal
  kills them at once (their runs resume on the next start, as after ``kill -9``).
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from typing import Any

__all__ = ["STARTUP_FAILURE", "supervise"]

_log = logging.getLogger("uvicorn.error")  # beside uvicorn's own lines
STARTUP_FAILURE = 3
"""A worker's exit code when it could not start serving (uvicorn's, too)."""


def supervise(n: int, target: Callable[..., None], args: tuple[Any, ...], grace_s: float) -> int:
    """Run ``target(*args)`` in ``n`` worker processes until a signal; the exit code."""
    context = multiprocessing.get_context("spawn")
    signals: list[int] = []
    handlers = {
        sig: signal.signal(sig, lambda sig, frame: signals.append(sig))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def start() -> Any:
        worker = context.Process(target=target, args=args, daemon=False)
        worker.start()
        _log.info("worker %d started", worker.pid)
        return worker

    code = 0
    try:
        workers = [start() for _ in range(n)]
        while not signals:
            multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.5)
            for i, worker in enumerate(workers):
                if worker.exitcode is None or signals:
                    continue
                if worker.exitcode == STARTUP_FAILURE:
                    _log.error("worker %d could not start; stopping", worker.pid)
                    code = 1
                    signals.append(signal.SIGTERM)
                    break
                _log.warning("worker %d exited (%s); starting another", worker.pid, worker.exitcode)
                workers[i] = start()
        _stop(workers, signals, grace_s)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code


def _stop(workers: list[Any], signals: list[int], grace_s: float) -> None:
    """SIGTERM to every worker; wait for them (a second signal, or ``grace_s``: kill)."""
    seen = len(signals)
    for worker in workers:
        if worker.exitcode is None:
            os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(w.exitcode is None for w in workers):
        if len(signals) > seen or time.monotonic() > deadline:
            _log.warning("killing the workers that are still running")
            for worker in workers:
                if worker.exitcode is None:
                    worker.kill()
            break
        multiprocessing.connection.wait(
            [w.sentinel for w in workers if w.exitcode is None], timeout=0.2
        )
    for worker in workers:
        worker.join()
