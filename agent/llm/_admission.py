"""KV-aware admission: start runs only while their live contexts fit the server's KV cache.

Many runs sharing one vLLM server each keep a growing context, and between two steps (a
tool is running) that context waits in the server's prefix cache. When the live contexts
outgrow the cache, LRU eviction throws away prefixes that the next step needs again, and
every step pays a full prefill: admitting every run at once is not the fastest schedule.

:class:`Admission` admits runs first come, first served, each reserving its expected peak
context (the median peak of recent runs; a configured guess until some have ended). A run
once admitted is never held back: its reservation grows with its real context (the
backend reports each step's prompt + completion tokens), and new runs wait for the room.
With several replicas, a run is admitted to the first replica in its session's affinity
order that has room, and stays there (its prefix is cached there).

>>> import asyncio
>>> gate = Admission({"http://a": 10_000}, reserve_tokens=4_000)
>>> async def demo():
...     async with gate.admitted("r1", ["http://a"]) as url:
...         return url, gate.used("http://a")
>>> asyncio.run(demo())
('http://a', 4000)
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["Admission", "parse_kv_capacity"]

_RECENT = 64  # ended runs whose peak contexts set the next reservation


@dataclass
class _Ticket:
    session: str
    order: list[str]
    reserved: int = 0
    url: str | None = None
    admitted: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Admission:
    """Admit runs while the tokens they hold fit each server's budget (see the module)."""

    def __init__(self, budgets: dict[str, int], *, reserve_tokens: int = 4096) -> None:
        self.budgets = dict(budgets)
        self.reserve_tokens = reserve_tokens
        self._used = dict.fromkeys(budgets, 0)
        self._live: dict[str, _Ticket] = {}
        self._waiting: deque[_Ticket] = deque()
        self._peaks: deque[int] = deque(maxlen=_RECENT)

    def used(self, url: str) -> int:
        """Tokens the runs admitted to ``url`` hold (their reservations)."""
        return self._used[url]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def reservation(self) -> int:
        """What a new run reserves: the median peak context of recent runs."""
        return int(statistics.median(self._peaks)) if self._peaks else self.reserve_tokens

    @asynccontextmanager
    async def admitted(self, session: str, order: Sequence[str]) -> AsyncIterator[str]:
        """Wait for room, hold it for the block, yield the server the run is admitted to."""
        ticket = _Ticket(session, [u for u in order if u in self.budgets] or list(self.budgets))
        self._waiting.append(ticket)
        self._wake()
        try:
            yield await ticket.admitted
        finally:
            self._leave(ticket)

    def observe(self, session: str, context_tokens: int) -> None:
        """A step of ``session`` held ``context_tokens``: its reservation grows to that."""
        ticket = self._live.get(session)
        if ticket is not None and ticket.url is not None and context_tokens > ticket.reserved:
            self._used[ticket.url] += context_tokens - ticket.reserved
            ticket.reserved = context_tokens

    def _leave(self, ticket: _Ticket) -> None:
        if ticket.url is None:  # cancelled while waiting
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            ticket.admitted.cancel()
        else:
            self._used[ticket.url] -= ticket.reserved
            self._peaks.append(ticket.reserved)
            self._live.pop(ticket.session, None)
        self._wake()

    def _wake(self) -> None:
        """Admit waiting runs in arrival order while the first of them fits somewhere."""
        while self._waiting:
            ticket = self._waiting[0]
            need = self.reservation()
            url = next((u for u in ticket.order if self._fits(u, need)), None)
            if url is None:
                return  # first come, first served: later runs wait behind it
            self._waiting.popleft()
            ticket.url, ticket.reserved = url, need
            self._used[url] += need
            self._live[ticket.session] = ticket
            ticket.admitted.set_result(url)

    def _fits(self, url: str, need: int) -> bool:
        # An idle server always takes one run, even one bigger than its whole budget.
        return self._used[url] == 0 or self._used[url] + need <= self.budgets[url]


def parse_kv_capacity(metrics: str) -> int | None:
    """KV cache capacity in tokens from vLLM's Prometheus text (``vllm:cache_config_info``:
    ``num_gpu_blocks`` × ``block_size``; CPU servers report ``num_cpu_blocks``).

    >>> parse_kv_capacity('vllm:cache_config_info{block_size="16",num_gpu_blocks="100"} 1.0')
    1600
    """
    for line in metrics.splitlines():
        if not line.startswith("vllm:cache_config_info{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",")
        )
        values = {k.strip(): v.strip().strip('"') for k, v in labels.items()}
        blocks = values.get("num_gpu_blocks") or values.get("num_cpu_blocks")
        size = values.get("block_size")
        if blocks and size and blocks.isdigit() and size.isdigit() and int(blocks) > 0:
            return int(blocks) * int(size)
    return None
