"""The agent loop end to end: Agent -> graph -> simulated vLLM over loopback -> real tools."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from langchain_core.messages import HumanMessage

from agent.events import RepairEvent, ToolCallEvent, ToolResultEvent
from agent.runs import RunStore, prompt_texts, read_trace
from tests.fakes import CALLS, add, call, launch, slow_echo


def prompts(sim: Any) -> list[str]:
    return [r["prompt"] for r in sim.requests if "prompt" in r]


async def test_text_answer_is_done(make_agent: Any, sim: Any) -> None:
    agent = make_agent(["Paris is the capital of France."])
    result = await agent.run("Capital of France?")
    assert (result.status, result.steps) == ("done", 1)
    assert result.answer == "Paris is the capital of France."
    assert "Capital of France?" in prompts(sim)[0]


async def test_tool_result_goes_back_to_the_model(make_agent: Any, sim: Any) -> None:
    agent = make_agent([call("add", a=2, b=40), "The sum is 42."], tools=(add,))
    result = await agent.run("What is 2 + 40?")
    assert result.status == "done" and result.tool_calls == 1
    second = prompts(sim)[1]
    assert '<tool_response>\n{"name": "add", "content": "42"}' in second.replace('42"', '42"')
    assert second.startswith(prompts(sim)[0]), "prompts must be append-only across steps"


async def test_malformed_call_is_repaired(make_agent: Any, sim: Any) -> None:
    events: list[Any] = []
    agent = make_agent(
        [
            '<tool_call>\n{"name": "add", "arguments": {"a": 1,,}}\n</tool_call>',
            call("add", a=1, b=2),
            "3",
        ],
        tools=(add,),
    )
    result = await agent.run("1+2?", on_event=events.append)
    assert result.status == "done" and result.answer == "3"
    repairs = [e for e in events if isinstance(e, RepairEvent)]
    assert len(repairs) == 1 and "malformed" in repairs[0].reasons[0]
    assert "could not be parsed" in prompts(sim)[1]


async def test_invalid_arguments_are_repaired(make_agent: Any, sim: Any) -> None:
    agent = make_agent([call("add", a="one", b=2), call("add", a=1, b=2), "3"], tools=(add,))
    events: list[Any] = []
    result = await agent.run("1+2?", on_event=events.append)
    assert result.status == "done"
    assert any(isinstance(e, RepairEvent) for e in events)
    assert "'one' is not of type 'integer'" in prompts(sim)[1]


async def test_repair_budget_ends_the_run(make_agent: Any) -> None:
    bad = "<tool_call>\nnot json at all\n</tool_call>"
    agent = make_agent([bad] * 6, tools=(add,), limits={"max_repairs": 2})
    result = await agent.run("go")
    assert result.status == "error" and "3 times in a row" in result.error


async def test_repeated_call_gets_a_notice_then_stops_as_loop(make_agent: Any, sim: Any) -> None:
    CALLS.clear()
    same = call("add", a=1, b=1)
    agent = make_agent([same] * 5, tools=(add,), limits={"loop_threshold": 3})
    result = await agent.run("loop")
    assert result.status == "loop"
    assert len(CALLS) == 2, "the third identical call is answered with a notice, not run"
    assert "same arguments 3 times" in prompts(sim)[3]


async def test_max_steps_forces_a_final_answer_without_tools(make_agent: Any, sim: Any) -> None:
    script = [call("add", a=i, b=1) for i in range(2)] + ["Best guess: 2."]
    agent = make_agent(script, tools=(add,), limits={"max_steps": 2})
    result = await agent.run("count")
    assert (result.status, result.limit, result.answer) == ("limit", "max_steps", "Best guess: 2.")
    assert "reached its max_steps limit" in prompts(sim)[-1]
    assert result.steps == 3  # two steps, then the one last call


async def test_max_tool_calls_limit(make_agent: Any) -> None:
    CALLS.clear()
    many = "\n".join(call("add", a=i, b=0) for i in range(3))
    agent = make_agent([many, "Stopped early."], tools=(add,), limits={"max_tool_calls": 2})
    result = await agent.run("sum")
    assert (result.status, result.limit) == ("limit", "max_tool_calls")
    assert CALLS == [("add", (0, 0)), ("add", (1, 0))], "calls past the budget never run"
    assert result.answer == "Stopped early." and result.tool_calls == 2


async def test_deadline_limit(make_agent: Any) -> None:
    script = [call("slow_echo", text="a", delay_s=0.6), "Out of time."]
    agent = make_agent(script, tools=(slow_echo,), limits={"deadline_s": 0.3})
    result = await agent.run("slow")
    assert (result.status, result.limit) == ("limit", "deadline")


async def test_token_budget_limit(make_agent: Any) -> None:
    agent = make_agent([call("add", a=1, b=1), "Stop."], tools=(add,), limits={"max_tokens": 50})
    result = await agent.run("x")
    assert (result.status, result.limit) == ("limit", "max_tokens")


SCHEMA = {
    "type": "object",
    "required": ["city", "population"],
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
}


async def test_json_output_valid(make_agent: Any) -> None:
    agent = make_agent(
        ['```json\n{"city": "Oslo", "population": 709000}\n```'], output_schema=SCHEMA
    )
    result = await agent.run("Oslo?")
    assert result.status == "done" and result.answer == {"city": "Oslo", "population": 709000}


async def test_json_output_invalid_then_fixed(make_agent: Any, sim: Any) -> None:
    agent = make_agent(
        ['{"city": "Oslo"}', '{"city": "Oslo", "population": 709000}'], output_schema=SCHEMA
    )
    result = await agent.run("Oslo?")
    assert result.status == "done" and result.answer["population"] == 709000
    retry = sim.requests[-1]
    assert retry["structured_outputs"] == {"json": SCHEMA}, "the retry uses structured outputs"
    assert "population" in retry["prompt"].split("<|im_start|>user")[-1]


async def test_json_output_invalid_twice(make_agent: Any) -> None:
    agent = make_agent(['{"city": "Oslo"}', "not json"], output_schema=SCHEMA)
    result = await agent.run("Oslo?")
    assert result.status == "invalid_output" and "output schema" in result.error


async def test_approval_granted(make_agent: Any) -> None:
    CALLS.clear()
    agent = make_agent([call("launch", target="rocket"), "Launched."], tools=(launch,))
    seen: list[Any] = []

    def approve(request: Any) -> bool:
        seen.append(request.calls)
        return True

    result = await agent.run("launch it", approve=approve)
    assert result.status == "done" and CALLS == [("launch", "rocket")]
    assert (seen[0][0].name, seen[0][0].arguments) == ("launch", {"target": "rocket"})


async def test_approval_denied_goes_back_to_the_model(make_agent: Any, sim: Any) -> None:
    CALLS.clear()
    agent = make_agent([call("launch", target="rocket"), "I was not allowed."], tools=(launch,))
    result = await agent.run("launch it", approve="none")
    assert result.status == "done" and CALLS == []
    assert "denied" in prompts(sim)[1]


async def test_approval_pauses_without_an_approver_and_resumes(make_agent: Any) -> None:
    CALLS.clear()
    agent = make_agent([call("launch", target="probe"), "Done."], tools=(launch,))
    paused = await agent.run("launch")
    assert paused.status == "awaiting_approval" and CALLS == []
    resumed = await agent.run(run_id=paused.run_id, approve="all")
    assert resumed.status == "done" and CALLS == [("launch", "probe")]


async def test_early_dispatch_keeps_call_order(make_agent: Any, sim: Any) -> None:
    CALLS.clear()
    turn = call("slow_echo", text="first", delay_s=0.3) + "\n" + call("slow_echo", text="second")
    agent = make_agent([turn, "ok"], tools=(slow_echo,))
    events: list[Any] = []
    result = await agent.run("echo", on_event=events.append)
    assert result.status == "done"
    assert all(e.early for e in events if isinstance(e, ToolCallEvent))
    finished = [e.result.content for e in events if isinstance(e, ToolResultEvent)]
    assert finished == ["second", "first"], "the fast call finishes first..."
    second_prompt = prompts(sim)[1]
    first_at, second_at = second_prompt.index('"first"'), second_prompt.index('"second"')
    assert first_at < second_at, "...but goes back first"


async def test_dead_backend_is_reported(make_agent: Any) -> None:
    from agent.api import Agent

    agent = Agent("http://127.0.0.1:9", store=None)
    result = await agent.run("hi")
    await agent.aclose()
    assert result.status == "error" and result.error_type == "BackendUnavailable"
    assert "127.0.0.1:9" in result.error


async def test_concurrent_runs_share_one_agent(make_agent: Any) -> None:
    agent = make_agent([call("add", a=1, b=2), "3"], tools=(add,))
    results = await asyncio.gather(*(agent.run(f"q{i}") for i in range(6)))
    assert {r.status for r in results} == {"done"}
    assert len({r.run_id for r in results}) == 6


async def test_trace_and_run_store(make_agent: Any, sim: Any, tmp_path: Any) -> None:
    agent = make_agent([call("add", a=2, b=2), "4"], tools=(add,))
    result = await agent.run("2+2")
    record = RunStore(tmp_path / ".agent" / "runs.db").get(result.run_id)
    assert record is not None and record.status == "done" and record.tool_calls == 1
    types = [line["type"] for line in read_trace(result.trace_path)]
    for expected in ("run_started", "prompt", "model_output", "tool_call", "tool_result", "final"):
        assert expected in types
    events = read_trace(result.trace_path)
    assert prompt_texts(events) == prompts(sim), "the trace holds every prompt sent, exactly"
    outputs = [e["text"] for e in events if e["type"] == "model_output"]
    assert outputs == [call("add", a=2, b=2), "4"], "the raw model outputs, in order"
    second = [e for e in events if e["type"] == "prompt"][1]
    assert second["prefix_chars"] == len(prompts(sim)[0]), "later prompts store only the delta"
    assert json.loads(json.dumps(events))  # JSON all the way


async def test_constrained_repair_retry(make_agent: Any, sim: Any) -> None:
    agent = make_agent(
        ["<tool_call>\n{oops\n</tool_call>", call("add", a=1, b=2), "3"],
        tools=(add,),
        constrained_repair=True,
    )
    result = await agent.run("1+2?")
    assert result.status == "done"
    first, retry, after = sim.requests
    assert "structured_outputs" not in first, "no constraint before anything went wrong"
    assert "structural_tag" in retry["structured_outputs"], "the repair retry is constrained"
    assert "structured_outputs" not in after, "and only the retry"


async def test_an_empty_answer_is_asked_again(make_agent: Any, sim: Any) -> None:
    events: list[Any] = []
    agent = make_agent(["", "  \n", "Paris."])
    result = await agent.run("Capital of France?", on_event=events.append)
    assert (result.status, result.answer, result.steps) == ("done", "Paris.", 3)
    assert [e.consecutive for e in events if isinstance(e, RepairEvent)] == [1, 2]
    assert "Your reply was empty" in prompts(sim)[1]


async def test_only_empty_answers_end_in_error(make_agent: Any) -> None:
    agent = make_agent([""] * 3, limits={"max_repairs": 2})
    result = await agent.run("Capital of France?")
    assert result.status == "error" and result.answer is None
    assert result.error == "the model gave an empty answer 3 times in a row"


async def test_a_graph_driven_directly_streams_its_events_through_langgraph(
    tmp_path: Any,
) -> None:
    """Without the Agent's queue (``RunContext.emit`` unset), the nodes' events take
    LangGraph's own custom stream, as for any graph driven with ``stream_mode="custom"``."""
    from agent.events import StepFinished, TextDelta
    from agent.testing import ScriptedBackend
    from graphs.react import build_graph
    from graphs.state import RunContext
    from tools.dispatch import Dispatcher
    from tools.policy import ToolPolicies
    from tools.registry import ToolRegistry

    graph = build_graph()
    registry = ToolRegistry([])
    async with Dispatcher(registry, ToolPolicies(), run_id="r", artifacts_dir=tmp_path) as d:
        ctx = RunContext("r", ScriptedBackend([["Hel", "lo."]]), registry, d)
        config = {"configurable": {"thread_id": "r"}}
        payload = {"messages": [HumanMessage("Hi")], "run_id": "r"}
        events = [
            e async for e in graph.astream(payload, config, context=ctx, stream_mode="custom")
        ]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo."]
    assert isinstance(events[-1], StepFinished)


async def test_a_consumer_that_leaves_stops_the_run(make_agent: Any) -> None:
    """Closing the event stream mid-run cancels the graph's task: nothing keeps running."""
    agent = make_agent([call("slow_echo", text="x", delay_s=30), "never"], tools=(slow_echo,))
    await agent.open()  # its store's own background task is not the run's
    before = asyncio.all_tasks()
    stream = agent.stream("Go")
    async for event in stream:
        if isinstance(event, ToolCallEvent):
            break
    await stream.aclose()
    await asyncio.sleep(0.1)
    left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()]
    assert not [t for t in left if not t.done()], left
