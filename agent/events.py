"""The one typed event stream every consumer reads: CLI, web UI, HTTP service, evals.

Events are frozen dataclasses with a literal ``kind`` tag, so a consumer can ``match`` on
the class or switch on ``event.kind`` after a JSON round trip (:func:`to_dict`).
The graph's nodes emit them through LangGraph's custom stream; :class:`agent.Agent`
adds the run-level ones (``RunStarted``, ``Final``, ``RunError``).

Events hold the core values themselves — a :class:`~agent.types.ToolCall`, a
:class:`~agent.types.ToolResult`, a :class:`~agent.llm.base.Generation`, a
:class:`~agent.types.RunResult` — never copies of their fields, so the JSON of an event
nests them as they are (``{"kind": "tool_call", "step": 1, "call": {"name", "arguments",
"id"}, "early": false}``).

>>> to_dict(TextDelta(step=1, text="Hi"))
{'kind': 'text', 'step': 1, 'text': 'Hi'}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from agent.llm.base import Generation
from agent.types import ErrorKind, RunResult, ToolCall, ToolResult

__all__ = [
    "ApprovalRequest",
    "Event",
    "Final",
    "RepairEvent",
    "RunError",
    "RunStarted",
    "StepFinished",
    "TextDelta",
    "ToolCallEvent",
    "ToolResultEvent",
    "to_dict",
]


@dataclass(frozen=True)
class RunStarted:
    """A run began (``resumed``: it continues from a checkpoint) on ``thread_id``;
    ``input`` is the user's text of the turn it answers (``None`` when it resumes)."""

    run_id: str
    task: str | None = None
    model_url: str | None = None
    resumed: bool = False
    thread_id: str | None = None
    input: str | None = None
    kind: Literal["run_started"] = "run_started"


@dataclass(frozen=True)
class TextDelta:
    """Text the model produced outside tool calls, as it streams."""

    step: int
    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ToolCallEvent:
    """A complete, parsed tool call. ``early``: dispatched before the generation ended."""

    step: int
    call: ToolCall
    early: bool = False
    kind: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True)
class ToolResultEvent:
    """A tool call's result. ``reused``: taken from a completed call on resume, not rerun."""

    step: int
    result: ToolResult
    reused: bool = False
    kind: Literal["tool_result"] = "tool_result"


@dataclass(frozen=True)
class RepairEvent:
    """Malformed calls, invalid arguments or an invalid final answer sent back for repair."""

    step: int
    reasons: list[str]
    consecutive: int
    kind: Literal["repair"] = "repair"


@dataclass(frozen=True)
class ApprovalRequest:
    """Calls with side effects wait for a yes/no (answer by call id)."""

    run_id: str
    calls: list[ToolCall]
    kind: Literal["approval"] = "approval"


@dataclass(frozen=True)
class StepFinished:
    """One model call finished: its whole generation (prompt and raw text, for traces)."""

    step: int
    generation: Generation
    kind: Literal["step"] = "step"


@dataclass(frozen=True)
class Final:
    """The run ended (every run's last event): how, in ``result``."""

    result: RunResult
    kind: Literal["final"] = "final"


@dataclass(frozen=True)
class RunError:
    """The run failed with an exception (backend unreachable, configuration, …).

    ``error_kind`` says who must act; ``error_type`` names the exception for people."""

    run_id: str
    error_kind: ErrorKind
    error_type: str
    message: str
    kind: Literal["error"] = "error"


Event = (
    RunStarted
    | TextDelta
    | ToolCallEvent
    | ToolResultEvent
    | RepairEvent
    | ApprovalRequest
    | StepFinished
    | Final
    | RunError
)


def to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with ``kind`` first; nested values become dicts too."""
    data = dataclasses.asdict(event)
    return {"kind": data.pop("kind"), **data}
