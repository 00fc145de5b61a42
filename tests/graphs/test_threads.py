"""Threads: a conversation of several runs, each a turn answering one input.

The UI and the HTTP service continue conversations through ``thread_id``; limits, loop
detection and outcomes hold per run, while the prompt keeps growing append-only.
"""

from __future__ import annotations

from typing import Any

import pytest

from agent.errors import ConfigError
from tests.fakes import CALLS, add, call, launch


def prompts(sim: Any) -> list[str]:
    return [r["prompt"] for r in sim.requests if "prompt" in r]


async def test_a_second_turn_continues_the_conversation(make_agent: Any, sim: Any) -> None:
    agent = make_agent(
        [call("add", a=1, b=2), "3.", "Then 3 + 4 is 7."], tools=(add,), system="You add numbers."
    )
    first = await agent.run("What is 1 + 2?", thread_id="chat-1")
    second = await agent.run("And plus 4?", thread_id="chat-1")
    assert (first.status, first.answer, first.thread_id) == ("done", "3.", "chat-1")
    assert (second.status, second.steps, second.thread_id) == ("done", 1, "chat-1")
    assert second.tool_calls == 0 and second.usage.prompt_tokens > 0, "counters are per run"
    turn2 = prompts(sim)[-1]
    assert turn2.startswith(prompts(sim)[-2]), "append-only across turns (prefix cache)"
    assert turn2.count("You add numbers.") == 1 and "And plus 4?" in turn2
    history = await agent.history("chat-1")
    assert [m.role for m in history] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    assert history[-1].content == "Then 3 + 4 is 7."


async def test_a_one_turn_run_id_is_its_thread(make_agent: Any) -> None:
    agent = make_agent(["Paris.", "About 2.1 million people."])
    first = await agent.run("Capital of France?")
    assert first.thread_id == first.run_id
    second = await agent.run("How many live there?", thread_id=first.run_id)
    assert second.answer == "About 2.1 million people."
    assert len(await agent.history(second.run_id)) == 4, "a run id names its thread too"


async def test_loop_detection_counts_only_the_current_run(make_agent: Any) -> None:
    same = call("add", a=1, b=1)
    agent = make_agent([same, "2.", same, "Still 2."], tools=(add,), limits={"loop_threshold": 2})
    await agent.run("1 + 1?", thread_id="t")
    again = await agent.run("Again: 1 + 1?", thread_id="t")
    assert again.status == "done" and again.tool_calls == 1, "no loop notice from turn 1"


async def test_an_unfinished_run_blocks_the_next_turn_until_it_ends(make_agent: Any) -> None:
    CALLS.clear()
    agent = make_agent(
        [call("launch", target="probe"), "Launched.", "Nothing else."], tools=(launch,)
    )
    paused = await agent.run("Launch it", thread_id="ops")
    assert paused.status == "awaiting_approval"
    with pytest.raises(ConfigError, match=r"thread 'ops' has an unfinished run"):
        await agent.run("Anything else?", thread_id="ops")
    done = await agent.run(run_id=paused.run_id, approve="all")
    assert done.status == "done" and CALLS == [("launch", "probe")]
    later = await agent.run("Anything else?", thread_id="ops")
    assert later.answer == "Nothing else."
    with pytest.raises(ConfigError, match=r"is over: its thread 'ops' went on"):
        await agent.run(run_id=paused.run_id)


async def test_a_turn_resumes_in_another_agent_by_its_run_id(make_agent: Any, sim: Any) -> None:
    CALLS.clear()
    first = make_agent(
        [call("launch", target="a"), "ok", call("launch", target="b"), "ok2"], tools=(launch,)
    )
    await first.run("one", thread_id="t2", approve="all")
    paused = await first.run("two", thread_id="t2")
    assert paused.status == "awaiting_approval"
    second = make_agent(None, tools=(launch,))  # same store: finds the thread from the run
    result = await second.run(run_id=paused.run_id, approve="all")
    assert (result.status, result.answer, result.thread_id) == ("done", "ok2", "t2")
    assert CALLS == [("launch", "a"), ("launch", "b")]


async def test_run_started_carries_the_turns_input(make_agent: Any) -> None:
    agent = make_agent(["Paris.", "About 2.1 million people."])
    turn1 = [e async for e in agent.stream("Capital of France?", thread_id="t-in")]
    turn2 = [e async for e in agent.stream("How many live there?", thread_id="t-in")]
    first, second = turn1[0], turn2[0]
    assert (first.kind, first.input, second.input) == (
        "run_started",
        "Capital of France?",
        "How many live there?",
    )
