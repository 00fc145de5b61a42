"""Plain values shared by every layer: messages, tool calls, their results, outcomes.

Dataclasses inside, pydantic at the edges: these types carry no validation and no I/O.
The format core (`agent.chatml`, `agent.hermes`) turns them into prompt text and back;
the tools layer and the graph pass them around.

One shape per thing that flows. A tool call is a :class:`ToolCall` from the moment the
parser (or the server) produces it, through events, approval and the dispatcher; what it
returns is a :class:`ToolResult`; in a conversation both are turns of a :class:`Message`
(the graph's langchain-core messages convert to and from it in :mod:`agent.messages`
only). A block the model wrote that is not a usable call is a :class:`Malformed`.
Outcomes are typed literals (:data:`ToolStatus`, :data:`ToolErrorKind`,
:data:`RunStatus`), never exception class names.

>>> ToolCall("get_weather", {"city": "Paris"}).name
'get_weather'
"""

from __future__ import annotations

import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "RUN_STATUSES",
    "ErrorKind",
    "LimitName",
    "Malformed",
    "Message",
    "Role",
    "RunResult",
    "RunStatus",
    "Timings",
    "ToolCall",
    "ToolErrorKind",
    "ToolResult",
    "ToolSpec",
    "ToolStatus",
    "Usage",
    "new_call_id",
]

Role = Literal["system", "user", "assistant", "tool"]

RunStatus = Literal[
    "running",
    "done",
    "limit",
    "loop",
    "invalid_output",
    "error",
    "interrupted",
    "awaiting_approval",
    "cancelled",
]
"""How a run stands: ``running``; ended ``done`` (an answer), ``limit`` (a limit was hit,
best answer given), ``loop`` (the model repeated itself), ``invalid_output`` (the answer
never matched the output schema), ``error`` (a failure ended it); ``interrupted`` (its
process stopped: resumable); ``awaiting_approval`` (paused for a yes/no: resumable);
``cancelled`` (stopped on request, e.g. ``POST /v1/runs/{id}/cancel``: not resumed)."""
RUN_STATUSES: tuple[RunStatus, ...] = typing.get_args(RunStatus)

LimitName = Literal["max_steps", "max_tool_calls", "deadline", "max_tokens"]
"""The run limit that ended a run with status ``limit``."""

ErrorKind = Literal[
    "config", "backend_unavailable", "backend", "model_output", "tool", "limit", "internal"
]
"""Who must act on a failure: ``config`` (the user: a task file, option, tool definition),
``backend_unavailable`` (start the model server), ``backend`` (the server failed),
``model_output``, ``tool``, ``limit``, or ``internal`` (a bug). See
:func:`agent.errors.error_kind`."""

ToolStatus = Literal["ok", "error", "denied", "skipped"]
"""``ok``: the tool ran and answered; ``error``: it was refused or failed (see
:data:`ToolErrorKind`); ``denied``: the user said no; ``skipped``: the run did not run it
(tool-call budget, loop notice, deadline)."""

ToolErrorKind = Literal["arguments", "policy", "timeout", "execution"]
"""Why a call failed: ``arguments`` (unknown tool, or arguments that fail its schema: the
model can fix it, so it counts as a repair), ``policy`` (refused by a policy or the
sandbox), ``timeout`` (killed at its hard timeout), ``execution`` (the tool raised)."""


def new_call_id() -> str:
    """A fresh OpenAI-style call id, e.g. ``call_3f2a…`` (24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolSpec:
    """What the model sees of a tool: its name, description and JSON Schema of arguments.

    Kept apart from the callable (`tools.base.Tool`) so prompts can be rendered and
    calls validated without importing any tool code.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI/Hermes shape: ``{"type": "function", "function": {...}}``."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    @classmethod
    def from_openai(cls, data: dict[str, Any]) -> ToolSpec:
        """Accept either ``{"type": "function", "function": {...}}`` or the inner dict."""
        fn = data.get("function", data)
        return cls(
            name=fn["name"],
            description=fn.get("description", "") or "",
            parameters=fn.get("parameters") or {"type": "object", "properties": {}},
        )


@dataclass
class ToolCall:
    """One call the model asked for. ``arguments`` is always a decoded dict."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)


@dataclass
class Message:
    """One conversation turn in the framework's own shape.

    ``tool_calls`` is used on assistant turns; ``tool_call_id`` and ``name`` (the tool's
    name) on tool turns.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Malformed:
    """A ``<tool_call>`` block that could not be used, with a reason the model can act on."""

    raw: str
    reason: str


@dataclass
class ToolResult:
    """The outcome of one tool call, ready to go back to the model as a ``tool`` turn.

    >>> ToolResult("call_1", "add", "ok", "3").ok
    True
    """

    call_id: str
    name: str
    status: ToolStatus
    content: str
    """What the model sees (capped; errors explain what to change)."""
    error: ToolErrorKind | None = None
    """Why it failed, when ``status == "error"``."""
    artifact_id: str | None = None
    """Id of the full result on disk when ``truncated``."""
    truncated: bool = False
    duration_s: float = 0.0
    sandbox: Literal["bwrap", "process", "none"] = "none"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ran(self) -> bool:
        """The call was executed (or tried): it counts against the tool-call budget."""
        return self.status in ("ok", "error")


@dataclass
class Usage:
    """Token counts of one or more generations; ``cached_tokens`` only when reported."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        cached = (
            None
            if self.cached_tokens is None and other.cached_tokens is None
            else (self.cached_tokens or 0) + (other.cached_tokens or 0)
        )
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            cached,
        )


@dataclass
class Timings:
    """Seconds to the first token, in all, and decode speed (completion tokens / second)."""

    ttft_s: float = 0.0
    total_s: float = 0.0
    tokens_per_s: float = 0.0


@dataclass
class RunResult:
    """How a run ended: what ``Agent.run`` returns and the ``Final`` event carries.

    >>> RunResult("run_1", "done", answer="42").ok
    True
    """

    run_id: str
    status: RunStatus
    answer: Any = None
    """Text, or the decoded JSON value when the run has an output schema."""
    thread_id: str | None = None
    """The conversation the run is a turn of (its own id for a one-turn run)."""
    steps: int = 0
    tool_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    limit: LimitName | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    error_type: str | None = None
    """The exception's class, for people reading it (code reads ``error_kind``)."""
    trace_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"
