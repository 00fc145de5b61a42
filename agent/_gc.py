"""Garbage-collector settings for a process that runs many agent runs at once.

CPython collects its youngest generation every 700 net allocations and, every hundred of
those, the whole heap. Hundreds of concurrent runs keep millions of objects alive
(messages, checkpoints, tasks, the imported libraries' own), and each full collection
walks them all: at 512 concurrent runs that was 2.5–3 ms of CPU per model step out of
12–15 (``bench/scale.py``, alternated runs). :func:`tune_gc` is what ``agent serve`` and
``agent eval`` apply; a service that embeds the Python API may call it once, after its
imports.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

THRESHOLDS = (50_000, 20, 100)
"""Generation thresholds: a young collection every 50,000 allocations, the whole heap
every 100,000 of those. Cycles are still collected; the memory they hold between
collections stays small next to a run's."""


def tune_gc() -> None:
    """Collect less often, and leave what is loaded so far (imported code, its caches) out
    of every collection (``gc.freeze``). It changes the whole process: call it from the
    program, not from a library.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
