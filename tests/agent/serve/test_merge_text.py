"""Text deltas merged per time window, everything else passed at once, in order."""

from __future__ import annotations

import asyncio

from agent.events import RepairEvent, TextDelta
from agent.serve._runner import merge_text


async def _events(items, closed: list[bool]):
    try:
        for item in items:
            if isinstance(item, float):
                await asyncio.sleep(item)
            else:
                yield item
    finally:
        closed.append(True)


async def _merged(items, window_s: float) -> list:
    closed: list[bool] = []
    out = [e async for e in merge_text(_events(items, closed), window_s)]
    assert closed == [True]
    return out


async def test_merges_within_a_step_and_keeps_order() -> None:
    repair = RepairEvent(step=1, reasons=["x"], consecutive=1)
    items = [TextDelta(1, "a"), TextDelta(1, "b"), repair, TextDelta(1, "c"), TextDelta(2, "d")]
    assert await _merged(items, 10.0) == [
        TextDelta(1, "ab"),
        repair,
        TextDelta(1, "c"),
        TextDelta(2, "d"),
    ]


async def test_a_window_bounds_how_long_text_waits() -> None:
    items = [TextDelta(1, "a"), 0.03, TextDelta(1, "b"), TextDelta(1, "c")]
    assert await _merged(items, 0.01) == [TextDelta(1, "ab"), TextDelta(1, "c")]


async def test_closing_early_closes_the_source() -> None:
    closed: list[bool] = []
    merged = merge_text(_events([TextDelta(1, "a"), RepairEvent(1, [], 1)], closed), 1.0)
    assert await anext(merged) == TextDelta(1, "a")
    await merged.aclose()
    assert closed == [True]
