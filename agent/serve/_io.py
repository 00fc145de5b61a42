"""One thread for the service's database calls, so they never run on the event loop and
never contend with each other.

SQLite allows one writer at a time and makes the others wait by sleeping (1, 2, 5, 10…
ms); calls spread over a thread pool would queue on the lock that way, and the run
recorder's writes on the event loop would wait behind them. Funnelled through one thread,
they run back to back. For Postgres the same thread keeps calls in order; each is a
short round trip on loopback or a LAN.

>>> import asyncio; asyncio.run(io(sum, [1, 2]))
3
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["io"]

T = TypeVar("T")
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-serve-db")


async def io(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the database thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_EXECUTOR, functools.partial(fn, *args, **kwargs))
