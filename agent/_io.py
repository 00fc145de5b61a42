"""One thread for database and trace writes, so they never run on the event loop and
never contend with each other.

SQLite allows one writer at a time and makes the others wait by sleeping (1, 2, 5, 10…
ms, up to its busy timeout): on the event loop, that wait would stall every run of the
process; calls spread over a thread pool would queue on the lock that way. Funnelled
through one thread, they run back to back, in the order they were submitted: a run's
trace lines, then its row's last update. For Postgres the same thread keeps calls in
order; each is a short round trip on loopback or a LAN.

:func:`io` awaits the call's result; :func:`io_soon` queues it and returns at once (a
trace line; a row update from a ``finally`` that cannot wait). Calls still queued when
the interpreter exits are run before it does (``concurrent.futures`` joins its workers).

>>> import asyncio; asyncio.run(io(sum, [1, 2]))
3
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["io", "io_soon"]

T = TypeVar("T")
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-io")
_log = logging.getLogger(__name__)


async def io(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the I/O thread, after everything queued before it."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, functools.partial(fn, *args, **kwargs))


def io_soon(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
    """Queue ``fn(*args, **kwargs)`` on the I/O thread; a failure is logged, not lost."""
    future = _EXECUTOR.submit(fn, *args, **kwargs)
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        _log.error("a background write failed", exc_info=exc)
