"""The page's conversation view: events folded into messages, escaped; traces replayed.

No Gradio here: :class:`agent.ui.view.ChatView` and :mod:`agent.ui.replay` are plain code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent.api import Agent
from agent.events import (
    ApprovalRequest,
    Final,
    RepairEvent,
    RunError,
    RunStarted,
    StepFinished,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
)
from agent.llm.base import Generation
from agent.runs import read_trace
from agent.sim import ScriptPolicy
from agent.types import Malformed, RunResult, Timings, ToolCall, ToolResult, Usage
from agent.ui.replay import trace_events
from agent.ui.screen import screen
from agent.ui.view import ChatView, escape
from tests.agent.ui.policy import INJECTION, call
from tools.policy import FilesPolicy, ToolPolicies

WRITE = ToolCall("write_file", {"path": "a.txt", "content": "x"}, id="c1")


def fold(*events: Any) -> ChatView:
    view = ChatView()
    for event in events:
        view.apply(event, 100.0)
    return view


def step(n: int, *, ttft: float = 0.1, total: float = 0.5, tokens: int = 20, **kw: Any) -> Any:
    usage = Usage(100, tokens, 80)
    timings = Timings(ttft_s=ttft, total_s=total)
    return StepFinished(n, Generation("", "", usage=usage, timings=timings, **kw))


def final(status: str = "done", answer: Any = "ok", **kw: Any) -> Final:
    return Final(RunResult("r1", status, answer=answer, steps=2, tool_calls=1, **kw))  # type: ignore[arg-type]


def test_a_turn_folds_into_user_text_tool_box_answer_and_metrics() -> None:
    listing = ToolCall("list_files", {"path": "."}, id="c0")
    view = fold(
        RunStarted("r1", input="What is here?"),
        TextDelta(1, "Let me "),
        TextDelta(1, "look."),
        ToolCallEvent(1, listing),
        step(1),
        ToolResultEvent(1, ToolResult("c0", "list_files", "ok", "notes.txt", duration_s=0.25)),
        TextDelta(2, "Only notes.txt."),
        step(2, ttft=0.05, total=0.25, tokens=10),
        final(usage=Usage(200, 30, 160)),
    )
    messages = view.messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant", "assistant"]
    assert messages[1]["content"] == "Let me look."
    box = messages[2]
    assert box["metadata"] == {
        "title": "Tool call: list_files",
        "status": "done",
        "log": "ok",
        "duration": 0.25,
    }
    assert '"path": "."' in box["content"] and "result (ok)\nnotes.txt" in box["content"]
    row = view.metrics_rows()[0]
    # turn, status, TTFT ms, tok/s (30 tokens over 0.6 s of decoding), prompt, compl., cached
    assert row[:7] == [1, "done", "100", "50.0", 200, 30, 160]
    assert row[7:9] == [2, 1]


def test_a_tool_box_is_pending_until_its_result() -> None:
    view = fold(RunStarted("r1", input="q"), ToolCallEvent(1, WRITE, early=True))
    meta = view.messages()[-1]["metadata"]
    assert (meta["status"], meta["log"]) == ("pending", "running (dispatched early)")


def test_a_failed_tool_call_reads_error_in_its_title_log_and_result() -> None:
    missing = ToolCall("read_file", {"path": "nope.txt"}, id="c2")
    reason = "File 'nope.txt' does not exist in the workspace; use list_files to see what does."
    failed = ToolResult("c2", "read_file", "error", reason, error="arguments", duration_s=0.004)
    view = fold(
        RunStarted("r1", input="q"),
        ToolCallEvent(1, missing),
        ToolResultEvent(1, failed),
        ToolCallEvent(2, dataclasses.replace(missing, id="c3")),
        ToolResultEvent(2, dataclasses.replace(failed, call_id="c3", status="ok", error=None)),
    )
    error_box, ok_box = [m for m in view.messages() if "metadata" in m]
    # Gradio's status is only pending or done: done, with the title and log saying error
    # (the page draws the log beside the title: "error: arguments (4.0ms)").
    assert error_box["metadata"] == {
        "title": "Tool call: read_file — error",
        "status": "done",
        "log": "error: arguments",
        "duration": 0.004,
    }
    assert error_box["content"].endswith("result (error: arguments)\n" + escape(reason))
    assert ok_box["metadata"]["title"] == "Tool call: read_file"
    assert ok_box["metadata"]["log"] == "ok"


def test_every_untrusted_text_is_escaped() -> None:
    evil = ToolCall(INJECTION, {"x": INJECTION}, id="c9")
    view = fold(
        RunStarted("r1", input=INJECTION),
        TextDelta(1, INJECTION),
        ToolCallEvent(1, evil),
        step(1, errors=[Malformed(INJECTION, INJECTION)]),
        ToolResultEvent(1, ToolResult("c9", INJECTION, "error", INJECTION, error="arguments")),
        RepairEvent(1, [INJECTION], 1),
        RunError("r1", "backend", "BackendError", INJECTION),
    )
    for message in view.messages():
        shown = message["content"] + str(message.get("metadata", {}).get("title", ""))
        assert "<" not in shown and ">" not in shown
        assert "&lt;img src=x" in shown or "&lt;" in shown


def test_malformed_calls_and_repairs_are_shown() -> None:
    view = fold(
        RunStarted("r1", input="q"),
        step(1, errors=[Malformed('{"name": "x", ', "the JSON is cut short")]),
        RepairEvent(1, ["malformed call: the JSON is cut short"], 1),
    )
    titles = [m["metadata"]["title"] for m in view.messages() if "metadata" in m]
    assert titles == ["Malformed tool call", "Repair: sent back to the model"]
    assert "the JSON is cut short" in view.messages()[1]["content"]


def test_approval_pauses_then_a_denied_call_reads_denied() -> None:
    view = fold(
        RunStarted("r1", input="write"),
        ToolCallEvent(1, WRITE),
        step(1),
        ApprovalRequest("r1", [WRITE]),
        final("awaiting_approval", None),
    )
    assert view.pending_calls() == [WRITE]
    approval = screen(view, "t", running=False).approval
    assert approval == 'write_file({"path": "a.txt", "content": "x"})'
    for event in (
        RunStarted("r1", resumed=True),
        ApprovalRequest("r1", [WRITE]),
        TextDelta(2, "Not written."),
        step(2),
        final(),
    ):
        view.apply(event, 101.0)
    box = next(m for m in view.messages() if "metadata" in m)
    assert box["metadata"]["log"] == "denied" and "The user denied" in box["content"]
    assert len(view.turns) == 1 and view.pending_calls() == []
    assert "Waiting for approval" not in str(view.messages()), "the note goes on resume"


def test_stop_leaves_a_resumable_turn() -> None:
    view = fold(RunStarted("r1", input="q"), ToolCallEvent(1, WRITE))
    view.interrupted()
    assert view.can_resume() and view.last is not None and view.last.status == "interrupted"
    assert view.messages()[1]["metadata"]["log"] == "stopped"
    view.refused("next", "thread 't' has an unfinished run")
    assert view.can_resume(), "a refused message does not hide the run to resume"
    assert screen(view, "t", running=False).status == "Not sent."


def test_a_json_answer_is_shown_formatted_and_valid() -> None:
    view = fold(RunStarted("r1", input="q"), TextDelta(1, '{"a": 1}'), final(answer={"a": 1}))
    assert view.messages()[-1]["content"] == '{\n  "a": 1\n}'
    s = screen(view, "t", running=False)
    assert s.json_text == '{\n  "a": 1\n}' and s.json_status.startswith("valid")


def test_an_invalid_json_answer_says_why() -> None:
    view = fold(
        RunStarted("r1", input="q"),
        TextDelta(1, "{}"),
        final("invalid_output", "{}", error="the final answer did not match: 'a' is required"),
    )
    s = screen(view, "t", running=False)
    assert s.json_status == "invalid: the final answer did not match: 'a' is required"
    assert "Run ended: invalid_output" in str(view.messages())


async def test_a_replayed_trace_shows_what_the_live_run_showed(sim: Any, tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    sim.policy = ScriptPolicy(
        [
            "Let me look.\n" + call("list_files") + call("write_file", path="a", content="b"),
            '<tool_call>\n{"name": "list_files", "arguments": {\n</tool_call>',
            "All " + INJECTION,
        ]
    )
    policies = ToolPolicies(workspace=tmp_path / "ws", files=FilesPolicy(allow_write=True))
    agent = Agent(
        sim.url,
        tools=["list_files", "write_file"],
        store=tmp_path / ".agent",
        policies=policies,
        approval="none",
    )
    live = ChatView()
    async for event in agent.stream("List " + INJECTION, thread_id="t1"):
        live.apply(event)
    await agent.aclose()
    trace = read_trace(live.turns[0].trace_path or "")
    replayed = ChatView()
    for event, ts in trace_events(trace):
        replayed.apply(event, ts)
    assert replayed.messages() == live.messages()
    titles = [m["metadata"]["title"] for m in live.messages() if "metadata" in m]
    assert titles[:3] == ["Tool call: list_files", "Tool call: write_file", "Malformed tool call"]
    assert [r[:2] + r[4:9] for r in replayed.metrics_rows()] == [
        r[:2] + r[4:9] for r in live.metrics_rows()
    ]
