"""The HTTP bodies of ``agent serve``: pydantic models with ``extra="forbid"``.

They validate requests (a misspelt key is a 422 naming it) and feed ``/openapi.json``.
Responses are documented with the same models. The OpenAI-compatible bodies live in
:mod:`agent.serve._openai`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApprovalBody",
    "ErrorBody",
    "InlineTask",
    "PolicyOptions",
    "RunBody",
    "RunOptions",
    "RunView",
    "SamplingOptions",
    "TaskList",
    "TaskView",
    "ThreadBody",
    "ThreadView",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_TASK = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitOptions(_Body):
    """Per-run limits: each may only be lower than the task's (a higher one is a 403)."""

    max_steps: int | None = Field(None, gt=0, le=10_000)
    max_tool_calls: int | None = Field(None, ge=0, le=100_000)
    deadline_s: float | None = Field(None, gt=0, le=86_400)
    max_tokens: int | None = Field(None, gt=0, le=100_000_000)


class SamplingOptions(_Body):
    """Sampling for this run; ``max_tokens`` may only be lower than the task's."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, max_length=16, description="More strings that end a generation (the task's stay)."
    )


class PolicyOptions(_Body):
    """Narrower tool policies: hosts and methods must be subsets of the task's; writes can
    be switched off, never on. The workspace is never chosen by a client."""

    allowed_hosts: list[str] | None = Field(None, max_length=100)
    allowed_methods: list[str] | None = Field(None, max_length=10)
    allow_write: Literal[False] | None = Field(None, description="false: no file writes.")
    sql_read_only: Literal[True] | None = Field(None, description="true: SELECT only.")


class RunOptions(_Body):
    """What a client may change for one run: everything here narrows the task."""

    limits: LimitOptions | None = None
    sampling: SamplingOptions | None = None
    tools: list[str] | None = Field(
        None, max_length=100, description="A subset of the task's tools."
    )
    policies: PolicyOptions | None = None
    tool_choice: str | None = Field(
        None,
        max_length=64,
        description='"none" (no tools this run) on any task; "required" or one of the run\'s '
        "tools' names (a call before the answer) where the task's own choice is \"auto\".",
    )
    approve: Literal["pause", "all", "none"] = Field(
        "pause",
        description="Calls that need approval: pause (answer with POST .../approval), "
        "all (approve each), none (deny each).",
    )


class InlineTask(_Body):
    """A task given in the request: it extends a served task and can only narrow it."""

    extends: str = Field(pattern=_TASK, description="The served task it is based on.")
    system: str | None = Field(None, max_length=100_000)
    input: str | None = Field(None, max_length=1_000_000)
    output_schema: dict[str, Any] | None = None


class RunBody(_Body):
    """``POST /v1/runs``: which task, its input and variables, and narrowing options."""

    task: str | InlineTask = Field(description="A served task's name, or an inline task.")
    input: str | None = Field(None, max_length=1_000_000, description="Default: the task's.")
    vars: dict[str, str] = Field(default_factory=dict, max_length=100)
    thread_id: str | None = Field(
        None, pattern=_ID, description="Continue this thread's conversation (POST /v1/threads)."
    )
    options: RunOptions = Field(default_factory=RunOptions)


class ApprovalBody(_Body):
    """``POST /v1/runs/{id}/approval``: one decision for every waiting call, or per call."""

    approve: bool | None = Field(None, description="True/false for every waiting call.")
    decisions: dict[str, bool] | None = Field(
        None, max_length=1000, description="{call_id: true|false}; calls not named: denied."
    )


class ThreadBody(_Body):
    """``POST /v1/threads``: a conversation bound to one task."""

    task: str = Field(pattern=_TASK)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class ThreadView(BaseModel):
    thread_id: str
    task: str
    created_at: float
    metadata: dict[str, str] = Field(default_factory=dict)
    runs: list[str] = Field(default_factory=list)
    messages: list[dict[str, Any]] = Field(default_factory=list)


class RunView(BaseModel):
    """A run as ``GET /v1/runs/{id}`` shows it."""

    run_id: str
    status: str = Field(
        description="pending, running, done, limit, loop, invalid_output, "
        "error, interrupted, awaiting_approval or cancelled"
    )
    task: str
    thread_id: str | None = None
    answer: Any = None
    steps: int = 0
    tool_calls: int = 0
    usage: dict[str, Any] = Field(default_factory=dict)
    limit: str | None = None
    error: str | None = None
    error_kind: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    trace_id: str | None = None
    pending_approval: list[dict[str, Any]] | None = None
    last_event_id: int = 0


class TaskView(BaseModel):
    name: str
    description: str | None = None
    tools: list[str]
    vars: dict[str, str] = Field(default_factory=dict)
    input: str


class TaskList(BaseModel):
    tasks: list[TaskView]


class ErrorBody(BaseModel):
    """Every error: ``{"error": {"type", "message"}}`` (the OpenAI shape)."""

    error: dict[str, Any]
