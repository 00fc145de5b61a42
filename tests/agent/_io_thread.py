"""Holding the I/O thread (:mod:`agent._io`) still, so that a test decides what runs when."""

from __future__ import annotations

import threading

from agent._io import io_soon


def hold_io_thread() -> threading.Event:
    """Occupy the I/O thread until the returned event is set: the calls queued meanwhile
    wait, then run as one batch."""
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(10)

    io_soon(hold)
    assert busy.wait(10)
    return release
