"""A run's trace, read back as the typed events the page showed when it ran.

Traces (:mod:`agent.runs`) keep every event as ``agent.events.to_dict`` wrote it, except
text deltas: a step's text is in its ``model_output`` line, whole. :func:`trace_events`
turns the lines back into events, putting each step's text first (where it streamed,
before the step's tool calls), so a reloaded page folds the same events as the live one
(:class:`agent.ui.view.ChatView`). Lines of kinds it does not know are skipped.

>>> lines = [{"type": "run_started", "ts": 1.0, "run_id": "r", "input": "Hi"},
...          {"type": "model_output", "ts": 2.0, "run_id": "r", "step": 1, "text": "Hello",
...           "content": "Hello"}]
>>> [e.kind for e, _ in trace_events(lines)]
['run_started', 'text', 'step']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent.events import (
    ApprovalRequest,
    Event,
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
from agent.types import Malformed, RunResult, Timings, ToolCall, ToolResult, Usage

__all__ = ["trace_events"]


def trace_events(lines: list[dict[str, Any]]) -> Iterator[tuple[Event, float]]:
    """``(event, ts)`` for each line of a trace that the page shows, in page order."""
    texts = {
        (line.get("run_id"), line.get("step")): line.get("content") or ""
        for line in lines
        if line.get("type") == "model_output"
    }
    shown: set[tuple[Any, Any]] = set()
    for line in lines:
        kind, ts = line.get("type"), float(line.get("ts") or 0.0)
        key = (line.get("run_id"), line.get("step"))
        if key in texts and key not in shown and kind in ("tool_call", "model_output"):
            shown.add(key)
            if texts[key]:
                yield TextDelta(int(line["step"]), texts[key]), ts
        event = _event(kind, line)
        if event is not None:
            yield event, ts


def _event(kind: Any, d: dict[str, Any]) -> Event | None:
    """One trace line as its event, or ``None`` for lines the page does not show."""
    if kind == "run_started":
        return RunStarted(
            d.get("run_id") or "",
            task=d.get("task"),
            model_url=d.get("model_url"),
            resumed=bool(d.get("resumed")),
            thread_id=d.get("thread_id"),
            input=d.get("input"),
        )
    if kind == "tool_call":
        return ToolCallEvent(d["step"], ToolCall(**d["call"]), early=bool(d.get("early")))
    if kind == "tool_result":
        return ToolResultEvent(d["step"], ToolResult(**d["result"]), reused=bool(d.get("reused")))
    if kind == "repair":
        return RepairEvent(d["step"], list(d.get("reasons") or []), d.get("consecutive", 1))
    if kind == "approval":
        return ApprovalRequest(d.get("run_id") or "", [ToolCall(**c) for c in d["calls"]])
    if kind == "model_output":
        return StepFinished(d["step"], _generation(d))
    if kind == "final":
        return Final(_result(d["result"]))
    if kind == "error":
        return RunError(d.get("run_id") or "", d["error_kind"], d["error_type"], d["message"])
    return None


def _generation(d: dict[str, Any]) -> Generation:
    return Generation(
        text=d.get("text") or "",
        content=d.get("content") or "",
        tool_calls=[ToolCall(**c) for c in d.get("tool_calls") or []],
        errors=[Malformed(**e) for e in d.get("errors") or []],
        finish_reason=d.get("finish_reason") or "stop",
        usage=Usage(**(d.get("usage") or {})),
        timings=Timings(**(d.get("timings") or {})),
        url=d.get("url"),
    )


def _result(d: dict[str, Any]) -> RunResult:
    fields = {k: v for k, v in d.items() if k in RunResult.__dataclass_fields__}
    fields["usage"] = Usage(**(d.get("usage") or {}))
    return RunResult(**fields)
