"""``agent serve --workers N``: N processes serving one listening socket.

One Python process runs one core's worth of runs (the GIL). With N workers the kernel
hands each new connection to one of them; each is a replica on the shared store
(:mod:`agent.serve._runner`), so any worker reads, streams, approves or cancels any run,
and workers tell each other of stored events (:mod:`agent.serve._peers`), so a stream
served by another worker than the run's is as prompt as one served by its own.

The parent binds the port, starts the workers (spawned: a fresh interpreter each, not a
copy of the parent's threads) and watches them:

- a worker that exits is replaced; its siblings take over its runs at once (their
  owner's process is gone) and resume them from their checkpoints. A worker that keeps
  exiting soon after it started is replaced after a growing pause (0.5 s, doubling, up
  to 30 s), so a crash loop does not burn the machine;
- a worker of the first start that cannot start (a port, a store, a task) stops them
  all: exit 1. A replacement that cannot start is retried as above;
- SIGTERM or Ctrl-C: every worker gets SIGTERM and drains as a single server does; the
  parent waits for them, up to ``grace_s``, then kills what is left (exit 1). A second
  signal kills them at once (exit 1; their runs resume on the next start, as after
  ``kill -9``). Workers get SIGTERM too if the parent dies (Linux).
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

__all__ = ["STARTUP_FAILURE", "die_with_parent", "supervise"]

_log = logging.getLogger("uvicorn.error")  # beside uvicorn's own lines
STARTUP_FAILURE = 3
"""A worker's exit code when it could not start serving (uvicorn's, too)."""
_PAUSE_S = (0.5, 30.0)
"""The pause before replacing a worker that exited soon after it started: first, most."""
_SOON_S = 60.0
"""A worker that lived less than this exited "soon": the next pause doubles."""


class _Slot:
    """One of the N workers, across its replacements."""

    def __init__(self) -> None:
        self.process: Any = None
        self.started_at = 0.0
        self.first = True  # the first start's worker: a failure to start is fatal
        self.pause_s = 0.0
        self.restart_at: float | None = None


def supervise(n: int, target: Callable[..., None], args: tuple[Any, ...], grace_s: float) -> int:
    """Run ``target(*args)`` in ``n`` worker processes until a signal; the exit code."""
    context = multiprocessing.get_context("spawn")
    signals: list[int] = []
    handlers = {
        sig: signal.signal(sig, lambda sig, frame: signals.append(sig))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def start(slot: _Slot) -> None:
        slot.process = context.Process(target=target, args=(*args, os.getpid()))
        slot.process.start()
        slot.started_at, slot.restart_at = time.monotonic(), None
        _log.info("worker %d started", slot.process.pid)

    slots = [_Slot() for _ in range(n)]
    code = 0
    try:
        for slot in slots:
            start(slot)
        while not signals and not code:
            running = [s.process.sentinel for s in slots if s.restart_at is None]
            waits = [s.restart_at - time.monotonic() for s in slots if s.restart_at is not None]
            multiprocessing.connection.wait(running, timeout=min([0.5, *waits]))
            for slot in slots:
                if signals or code:
                    break
                if slot.restart_at is not None:
                    if time.monotonic() >= slot.restart_at:
                        start(slot)
                    continue
                exitcode = slot.process.exitcode
                if exitcode is None:
                    continue
                if exitcode == STARTUP_FAILURE and slot.first:
                    _log.error("worker %d could not start; stopping", slot.process.pid)
                    code = 1
                    break
                slot.first = False
                lived = time.monotonic() - slot.started_at
                slot.pause_s = min(slot.pause_s * 2 or _PAUSE_S[0], _PAUSE_S[1])
                if lived >= _SOON_S:
                    slot.pause_s = 0.0
                _log.warning(
                    "worker %d exited (%s); starting another%s", slot.process.pid, exitcode,
                    f" in {slot.pause_s:g} s" if slot.pause_s else "",
                )  # fmt: skip
                slot.restart_at = time.monotonic() + slot.pause_s
    finally:
        if not _stop([s.process for s in slots if s.process is not None], signals, grace_s):
            code = 1
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code


def _stop(workers: list[Any], signals: list[int], grace_s: float) -> bool:
    """SIGTERM to every worker, then wait for them: whether they all stopped by themselves
    (else, after a second signal or ``grace_s``, they were killed)."""
    seen = len(signals)
    for worker in workers:
        if worker.exitcode is None:
            os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    clean = True
    while alive := [w for w in workers if w.exitcode is None]:
        if len(signals) > seen or time.monotonic() > deadline:
            _log.warning("killing the workers that are still running")
            for worker in alive:
                worker.kill()
            clean = False
            break
        multiprocessing.connection.wait([w.sentinel for w in alive], timeout=0.2)
    for worker in workers:
        worker.join()
    return clean


def die_with_parent(parent: int) -> None:
    """In a worker: get SIGTERM when the parent process dies (Linux; elsewhere nothing),
    so workers never keep serving the port with nobody to stop them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
