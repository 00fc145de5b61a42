"""Edge cases of early dispatch, limits, pauses and failures (from a review of the loop).

Each test names the rule it holds. ``ScriptedBackend`` stages precise timing and failures;
the simulator stands in where real HTTP behaviour matters.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.api import Agent
from agent.config import Limits
from agent.errors import BackendError, ConfigError
from agent.events import Final, RunStarted, ToolResultEvent
from agent.runs import RunStore
from agent.sim import Faults
from agent.testing import ScriptedBackend
from agent.types import ToolCall
from tests.fakes import CALLS, add, call, launch, slow_echo


def _tasks_left() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "run_call" in repr(t.get_coro())]


async def test_early_dispatch_never_runs_a_call_over_the_budget(make_agent: Any) -> None:
    CALLS.clear()
    turn = call("nosuch", x=1) + "\n" + call("add", a=1, b=2)
    agent = make_agent([turn, "final"], tools=(add,), limits={"max_tool_calls": 1})
    result = await agent.run("go")
    assert (result.status, result.limit) == ("limit", "max_tool_calls")
    assert CALLS == [], "the unknown tool took the only slot; add must not run"


async def test_calls_needing_approval_take_budget_slots_too(make_agent: Any) -> None:
    CALLS.clear()
    turn = call("launch", target="x") + "\n" + call("add", a=1, b=2)
    agent = make_agent([turn, "final"], tools=(add, launch), limits={"max_tool_calls": 1})
    await agent.run("go", approve="all")
    assert CALLS == [("launch", "x")]


async def test_the_forced_final_turn_runs_no_tools(make_agent: Any) -> None:
    CALLS.clear()
    script = [call("add", a=1, b=1), call("add", a=5, b=5)]
    agent = make_agent(script, tools=(add,), limits={"max_steps": 1})
    result = await agent.run("go")
    assert result.status == "limit" and CALLS == [("add", (1, 1))]


async def test_a_stream_cut_after_early_dispatch_leaves_nothing_running(
    make_agent: Any, sim: Any
) -> None:
    CALLS.clear()
    agent = make_agent(
        [call("slow_echo", text="t", delay_s=0.2) + "\nand then more text"], tools=(slow_echo,)
    )
    sim.faults = Faults(disconnect_after_tokens=30)
    result = await agent.run("go")
    assert (result.status, result.error_type) == ("error", "StreamInterrupted")
    assert not _tasks_left()


async def test_a_backend_error_keeps_the_counters_reached(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        [
            [ToolCall("add", {"a": 1, "b": 1}, "c1")],
            [BackendError("connection lost")],
        ]
    )
    async with Agent(backend, tools=(add,), store=tmp_path / "s") as agent:
        result = await agent.run("go")
    assert (result.status, result.steps, result.tool_calls) == ("error", 1, 1)
    record = RunStore(tmp_path / "s" / "runs.db").get(result.run_id)
    assert record is not None and (record.status, record.steps) == ("error", 1)


async def test_an_unexpected_exception_still_ends_in_final(tmp_path: Path) -> None:
    backend = ScriptedBackend([[RuntimeError("a bug somewhere")]])
    async with Agent(backend, store=tmp_path / "s") as agent:
        events = [e async for e in agent.stream("go")]
    final = events[-1]
    assert isinstance(final, Final) and final.result.status == "error"
    assert "a bug somewhere" in final.result.error
    assert (final.result.error_kind, final.result.error_type) == ("internal", "RuntimeError")
    record = RunStore(tmp_path / "s" / "runs.db").get(final.result.run_id)
    assert record is not None and record.status == "error"


async def test_a_consumer_that_stops_early_marks_the_run_interrupted(tmp_path: Path) -> None:
    async with Agent(ScriptedBackend([["hi"]]), store=tmp_path / "s") as agent:
        stream = agent.stream("go")
        first = await anext(stream)
        await stream.aclose()
    assert isinstance(first, RunStarted)
    record = RunStore(tmp_path / "s" / "runs.db").get(first.run_id)
    assert record is not None and record.status == "interrupted"


async def test_a_safe_call_started_before_a_pause_runs_once(make_agent: Any) -> None:
    CALLS.clear()
    turn = call("slow_echo", text="safe", delay_s=0.1) + "\n" + call("launch", target="x")
    agent = make_agent([turn, "done"], tools=(slow_echo, launch))
    paused = await agent.run("go")
    assert paused.status == "awaiting_approval"
    resumed = await agent.run(run_id=paused.run_id, approve="all")
    assert resumed.status == "done"
    assert CALLS == [("slow_echo", "safe"), ("launch", "x")]


async def test_the_final_call_timing_out_is_a_limit_with_a_reason(
    make_agent: Any, sim: Any
) -> None:
    agent = make_agent(
        [call("slow_echo", text="t", delay_s=0.6), "late"],
        tools=(slow_echo,),
        limits={"deadline_s": 0.3},
    )
    sim.faults = Faults(stall_s=6.0, stall_after_tokens=0)
    result = await agent.run("go")
    assert (result.status, result.limit) == ("limit", "deadline")
    assert result.error is not None and "no final answer" in result.error


async def test_the_deadline_cuts_a_running_tool(make_agent: Any) -> None:
    CALLS.clear()
    agent = make_agent(
        [call("slow_echo", text="slow", delay_s=30), "late"],
        tools=(slow_echo,),
        limits={"deadline_s": 0.3},
    )
    events: list[Any] = []
    result = await agent.run("go", on_event=events.append)
    assert (result.status, result.limit, result.tool_calls) == ("limit", "deadline", 0)
    assert CALLS == [("slow_echo", "slow")], "it started"
    assert not any(isinstance(e, ToolResultEvent) and e.status == "ok" for e in events)


async def test_a_budget_hit_keeps_the_results_of_calls_already_started(
    make_agent: Any, sim: Any
) -> None:
    CALLS.clear()
    agent = make_agent(
        [call("slow_echo", text="kept", delay_s=0.2), "stop"],
        tools=(slow_echo,),
        limits={"max_tokens": 50},
    )
    result = await agent.run("go")
    assert (result.status, result.limit, result.tool_calls) == ("limit", "max_tokens", 1)
    assert '"content": "kept"' in sim.requests[-1]["prompt"], "the model sees the real result"


async def test_resuming_an_unknown_run_is_refused(tmp_path: Path) -> None:
    async with Agent(ScriptedBackend([["hi"]]), store=tmp_path / "s") as agent:
        with pytest.raises(ConfigError, match="no run 'nope' to resume"):
            await agent.run(run_id="nope", resume=True)


async def test_approve_must_be_all_none_or_callable(tmp_path: Path) -> None:
    async with Agent(ScriptedBackend([["hi"]]), store=tmp_path / "s") as agent:
        with pytest.raises(ConfigError, match="approve='ask'"):
            await agent.run("go", approve="ask")


def test_one_idempotency_key_per_call_occurrence() -> None:
    from graphs.calls import idempotency_key, plan_turn

    call = ToolCall("wait", {"seconds": 0, "tag": "a"}, "c1")
    same = ToolCall("wait", {"tag": "a", "seconds": 0}, "c2")
    plan = plan_turn("run-1", [call, same], {}, 0, Limits())
    # The key the graph saves a result under is the key a resumed run looks up: one
    # function, occurrences counted from 1 (the dispatcher keeps no keys of its own).
    assert [p.key for p in plan] == [
        idempotency_key("run-1", call, 1),
        idempotency_key("run-1", call, 2),
    ]
    assert len({p.key for p in plan}) == 2
    assert idempotency_key("run-2", call, 1) != plan[0].key
    # Arguments that cannot be encoded as UTF-8 still have a key (no exception).
    assert len(idempotency_key("r", ToolCall("sql_query", {"query": "SELECT 'x\ud800'"}), 1)) == 32
