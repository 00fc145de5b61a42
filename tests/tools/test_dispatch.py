"""The dispatcher with in-process tools: validation, order, concurrency, timeouts, caps."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

from agent.types import ToolCall
from tools.base import Tool, tool
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies


class Line(pydantic.BaseModel):
    sku: str
    qty: int


@tool
def order(lines: list[Line], note: str = "") -> str:
    """Place an order.

    Args:
        lines: Order lines.
        note: Free text.
    """
    return ",".join(f"{x.qty}x{x.sku}" for x in lines)


@tool
async def wait(seconds: float, tag: str) -> str:
    """Sleep, then return the tag."""
    await asyncio.sleep(seconds)
    return tag


@tool
async def hang() -> str:
    """Never return."""
    await asyncio.Event().wait()
    return ""


_release = threading.Event()


@tool
def hang_sync() -> str:
    """Block a thread until released."""
    _release.wait(30)
    return "late"


@tool
def flood(n: int) -> str:
    """Return n characters."""
    return "x" * (n - 1) + "!"


@tool
def fail(message: str) -> str:
    """Raise with the message."""
    raise ValueError(message)


def _dispatcher(tmp_path: Path, tools: list[Any], **policy: Any) -> Dispatcher:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    policies = ToolPolicies(workspace=ws, **policy)
    return Dispatcher(tools, policies, run_id="run-1", artifacts_dir=tmp_path / "artifacts")


async def test_results_in_call_order_and_pydantic_arguments(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, [wait, order]) as d:
        results = await d.dispatch(
            [
                ToolCall("wait", {"seconds": 0.2, "tag": "slow"}),
                ToolCall("wait", {"seconds": 0.0, "tag": "fast"}),
                ToolCall("order", {"lines": [{"sku": "pen", "qty": 2}]}),
            ]
        )
    assert [r.content for r in results] == ["slow", "fast", "2xpen"]
    assert all(r.ok and r.sandbox == "none" and r.duration_s >= 0 for r in results)


async def test_unknown_tool_names_the_closest_and_its_schema(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, [wait, order]) as d:
        result = await d.call(ToolCall("ordr", {}, id="c1"))
    assert (result.status, result.error) == ("error", "arguments")
    assert result.call_id == "c1"
    assert "Unknown tool 'ordr'. Did you mean 'order'?" in result.content
    assert '"sku"' in result.content and "Available tools: wait, order" in result.content


@pytest.mark.parametrize(
    ("arguments", "where"),
    [
        ({"lines": [{"sku": "p", "qty": "2"}]}, "at arguments.lines[0].qty: '2' is not of type"),
        ({"lines": [{"qty": 1}]}, "at arguments.lines[0]: 'sku' is a required property"),
        ({}, "at arguments: 'lines' is a required property"),
        ({"lines": [], "note": 5}, "at arguments.note: 5 is not of type 'string'"),
    ],
)
async def test_invalid_arguments_name_the_field_and_schema(
    tmp_path: Path, arguments: dict[str, Any], where: str
) -> None:
    ran: list[int] = []

    @tool
    def spy() -> str:
        """Record that something ran."""
        ran.append(1)
        return ""

    async with _dispatcher(tmp_path, [order, spy]) as d:
        bad, _ = await d.dispatch([ToolCall("order", arguments), ToolCall("spy", {})])
    assert bad.error == "arguments" and where in bad.content
    assert "Expected arguments schema:" in bad.content and ran == [1]


async def test_concurrency_is_capped(tmp_path: Path) -> None:
    active, peak = 0, 0

    @tool
    async def probe() -> str:
        """Count concurrent calls."""
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return "ok"

    async with _dispatcher(tmp_path, [probe], max_concurrency=2) as d:
        results = await d.dispatch([ToolCall("probe", {}) for _ in range(6)])
    assert all(r.ok for r in results) and peak == 2


async def test_hung_async_tool_is_cancelled_and_others_finish(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, [hang, wait], sandbox={"call_timeout_s": 0.3}) as d:
        calls = [ToolCall("hang", {}), ToolCall("wait", {"seconds": 0, "tag": "t"})]
        hung, ok = await d.dispatch(calls)
    assert hung.error == "timeout" and "cancelled" in hung.content
    assert ok.content == "t"


async def test_hung_sync_tool_is_abandoned(tmp_path: Path) -> None:
    try:
        async with _dispatcher(tmp_path, [hang_sync], sandbox={"call_timeout_s": 0.3}) as d:
            result = await d.call(ToolCall("hang_sync", {}))
        assert result.error == "timeout" and "discarded" in result.content
    finally:
        _release.set()


async def test_flood_is_truncated_and_kept_as_artifact(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, [flood], max_result_chars=1000) as d:
        result = await d.call(ToolCall("flood", {"n": 50_000}))
        assert result.truncated and result.artifact_id and len(result.content) <= 1000
        assert (
            f"[truncated: showing {result.content.index(chr(10))} of 50000 characters; "
            f"full result saved as artifact {result.artifact_id}]"
        ) in result.content
        full = d.read_artifact(result.artifact_id)
        assert len(full) == 50_000 and full.endswith("!")
        for bad in ("../../etc/passwd", "art_0000000000000000"):
            with pytest.raises(KeyError):
                d.read_artifact(bad)
        small = await d.call(ToolCall("flood", {"n": 10}))
    assert not small.truncated and small.artifact_id is None


async def test_errors_leak_no_secrets_or_host_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-live-abcdef123456")
    ws = tmp_path / "ws"
    message = (
        f"cannot open /home/alice/.ssh/id_rsa or {ws}/data/in.csv "
        "with key sk-live-abcdef123456 (see https://example.com/docs/a) "
        "nor file:///home/alice/notes.txt"
    )
    async with _dispatcher(tmp_path, [fail]) as d:
        result = await d.call(ToolCall("fail", {"message": message}))
    assert result.error == "execution"
    assert result.content == (
        "ToolExecutionError: ValueError: cannot open <path> or data/in.csv with key [redacted] "
        "(see https://example.com/docs/a) nor file://<path>"
    )
    assert "Traceback" not in result.content


async def test_langchain_tool_runs_through_the_dispatcher(tmp_path: Path) -> None:
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def shout(text: str) -> str:
        """Shout the text."""
        return text.upper()

    async with _dispatcher(tmp_path, [shout]) as d:
        assert [s.name for s in d.specs()] == ["shout"]
        result = await d.call(ToolCall("shout", {"text": "hi"}))
    assert result.content == "HI"


async def test_side_effects_and_context(tmp_path: Path) -> None:
    @tool(side_effects=lambda a: a["op"] != "read")
    def store(op: str, ctx) -> str:
        """Count calls per run."""
        n = ctx.resource("count", lambda: [0])
        n[0] += 1
        return f"{ctx.run_id}:{n[0]}"

    async with _dispatcher(tmp_path, [store]) as d:
        assert d.registry.has_side_effects(ToolCall("store", {"op": "write"}))
        assert not d.registry.has_side_effects(ToolCall("store", {"op": "read"}))
        # An unknown tool never runs, so it changes nothing and never asks for approval.
        assert not d.registry.has_side_effects(ToolCall("unknown", {}))
        results = await d.dispatch([ToolCall("store", {"op": "read"})] * 2)
    assert sorted(r.content for r in results) == ["run-1:1", "run-1:2"]
    assert isinstance(store, Tool)
