"""Review of 1a53045 (the graph ran in a task of its own; events went through a queue).

The first two tests pin what that change broke (it was reverted); the third a run stopped at
a step boundary that could not be resumed (LangGraph ran the routers in a thread: fixed by
async routers, `graphs.react._inline`); the last an event that was lost (fixed by
`RunContext.emit`: held between segments, yielded by the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path
from typing import Any

from agent.api import Agent
from agent.events import Final, StepFinished, TextDelta, ToolResultEvent
from agent.serve._runner import merge_text
from agent.testing import ScriptedBackend
from agent.types import ToolCall
from tests.fakes import add, launch, slow_echo
from tools.policy import ToolPolicies


def _agent(tmp_path: Path, turns: list[list[Any]], **kw: Any) -> Agent:
    workspace = tmp_path / "ws"
    workspace.mkdir(parents=True, exist_ok=True)
    kw.setdefault("policies", ToolPolicies(workspace=workspace))
    tools = (add, slow_echo, launch)
    return Agent(ScriptedBackend(turns), tools=tools, store=tmp_path / ".agent", **kw)


async def test_a_consumer_that_leaves_after_a_failure_leaves_no_unretrieved_exception(
    tmp_path: Path,
) -> None:
    """The graph fails while its consumer is still busy with an earlier event; the
    consumer then leaves (a break, the UI's Stop, serve's drain). The graph's task is
    already done, so ``_graph_events``' ``finally`` neither cancels nor awaits it, and
    its exception is never retrieved: asyncio logs 'Task exception was never retrieved'
    when the task is collected. Before, the failure stayed inside LangGraph's astream."""
    agent = _agent(tmp_path, [["Hel", RuntimeError("the backend broke")]])
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        async with agent:
            stream = agent.stream("Hi")
            async for event in stream:
                if isinstance(event, TextDelta):
                    await asyncio.sleep(0.2)  # a consumer busy with this event
                    break
            await stream.aclose()
            del stream
            for _ in range(3):
                gc.collect()
                await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    messages = [c.get("message") for c in reported]
    assert not messages, messages


async def test_events_of_checkpointed_steps_reach_the_consumer_or_a_resume(
    tmp_path: Path,
) -> None:
    """A consumer slower than the graph (one that sends each event over a network, say)
    stops after the first step, as serve's drain does (break on a ``step`` event) or a
    UI Stop. The graph no longer waits for its consumer (before, LangGraph's astream held
    it at the superstep boundary until the event was taken), so by then it has run and
    checkpointed the later steps too; their events sat in the queue and are dropped.
    Resuming continues after those checkpoints: steps 2 and 3 are in neither stream (nor
    in the run's trace), though the run's state counts them."""
    turns = [
        [ToolCall("add", {"a": 1, "b": 2}, "c1")],
        [ToolCall("add", {"a": 3, "b": 4}, "c2")],
        ["Done."],
    ]
    agent = _agent(tmp_path, turns)
    async with agent:
        seen: list[Any] = []
        stream = agent.stream("Add things")
        async for event in stream:
            seen.append(event)
            await asyncio.sleep(0.05)  # the consumer takes a moment per event
            if isinstance(event, StepFinished):
                break  # as RunManager._execute does when draining
        await stream.aclose()
        run_id = seen[0].run_id
        async for event in agent.stream(run_id=run_id, resume=True):
            seen.append(event)
    final = seen[-1]
    assert isinstance(final, Final)
    steps = sorted(e.step for e in seen if isinstance(e, StepFinished))
    assert steps == list(range(1, final.result.steps + 1)), (steps, final.result.steps)


async def test_a_run_left_at_a_step_boundary_as_serve_drains_resumes_to_its_answer(
    tmp_path: Path,
) -> None:
    """Pre-existing race, made more likely by 1a53045 (measured: about 1 run in 2 before,
    3 in 4 after). serve's drain leaves a run at its next ``step`` event (RunManager's
    ``_execute`` breaks out of ``merge_text(agent.stream(...))``) and releases it to be
    resumed. The consumer wakes on ``StepFinished``, which the model node emits just before
    it returns, when the node's task is between its state writes and its routing write
    (the sync router ``route_after_model`` runs in a thread executor). Closing the stream
    cancels that task there, and LangGraph saves a cancelled task's partial writes with
    the error: the checkpoint holds the model's turn but no ``branch:to:tools``. The
    resumed run has no next node and ends at once, status ``error`` with no error message,
    instead of running its tools and answering. Ten runs, so that the race shows."""
    outcomes = []
    for attempt in range(10):
        folder = tmp_path / str(attempt)
        turns = [
            [ToolCall("slow_echo", {"text": "x"}, "c1")],
            [ToolCall("slow_echo", {"text": "y"}, "c2")],
            ["Done."],
        ]
        async with _agent(folder, turns) as agent:
            run_id = None
            stream = merge_text(agent.stream("Echo twice"), 0.02)
            async with contextlib.aclosing(stream) as events:
                async for event in events:
                    run_id = run_id or event.run_id
                    if event.kind in ("step", "tool_result"):  # RunManager draining
                        break
            assert agent._runs.get(run_id).status == "interrupted"
            resumed = [e async for e in agent.stream(run_id=run_id, resume=True)]
        result = resumed[-1].result
        outcomes.append((result.status, result.answer))
    assert outcomes == [("done", "Done.")] * 10, outcomes


async def test_an_early_call_finishing_while_approval_is_asked_reports_its_result(
    tmp_path: Path,
) -> None:
    """Pre-existing (failed before 1a53045 too), in the area the change touches: a safe
    call dispatched early shares its turn with one that needs approval. It finishes
    while the approver (a person at ``agent run``'s prompt) decides: after the graph's
    segment ended, before the next one starts. Its ``ToolResultEvent`` went to the
    finished segment's stream and was never yielded: no line in the CLI, the trace or an
    OTel ``execute_tool`` span, though the model got its result. Now
    ``RunContext.emit`` holds it while no segment runs, and the run yields it after the
    decision."""
    turns = [
        [
            ToolCall("slow_echo", {"text": "x", "delay_s": 0.2}, "c1"),
            ToolCall("launch", {"target": "t"}, "c2"),
        ],
        ["Done."],
    ]
    agent = _agent(tmp_path, turns)

    async def approve(request: Any) -> bool:
        await asyncio.sleep(0.8)  # someone reads the prompt
        return True

    async with agent:
        events = [e async for e in agent.stream("Go", approve=approve)]
    assert events[-1].result.status == "done"
    results = sorted(e.result.call_id for e in events if isinstance(e, ToolResultEvent))
    assert results == ["c1", "c2"], [e.kind for e in events]


async def test_an_early_call_finishing_as_a_run_pauses_reports_its_result(
    tmp_path: Path,
) -> None:
    """The same call when nobody decides now (``agent serve``, a paused run): the run
    waits for it before pausing, and its result comes before the pause's ``Final``."""
    turns = [
        [
            ToolCall("slow_echo", {"text": "x", "delay_s": 0.2}, "c1"),
            ToolCall("launch", {"target": "t"}, "c2"),
        ],
        ["Done."],
    ]
    async with _agent(tmp_path, turns) as agent:
        events = [e async for e in agent.stream("Go", approve=None)]
    assert events[-1].result.status == "awaiting_approval"
    results = [e.result.call_id for e in events if isinstance(e, ToolResultEvent)]
    assert results == ["c1"], [e.kind for e in events]


async def test_a_consumer_that_leaves_early_stops_the_model_request_at_once(
    tmp_path: Path,
) -> None:
    """``break`` then ``aclose()`` (the UI's Stop, a caller that has seen enough): the
    generation in flight stops before ``aclose()`` returns — it held a model request
    open until the generators were garbage-collected."""
    stopped: list[bool] = []

    class Tracked(ScriptedBackend):
        async def stream(self, request: Any) -> Any:
            try:
                async for item in super().stream(request):
                    yield item
            finally:
                stopped.append(True)

    workspace = tmp_path / "ws"
    workspace.mkdir()
    agent = Agent(
        Tracked([["Hel", 30.0, "lo"]]),
        tools=(add,),
        store=tmp_path / ".agent",
        policies=ToolPolicies(workspace=workspace),
    )
    async with agent:
        stream = agent.stream("Hi")
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        await stream.aclose()
        assert stopped == [True]
