"""The agent graph's state, and the per-run context its nodes receive.

State is what a checkpoint holds. ``messages`` is a LangGraph ``DeltaChannel``: a
checkpoint stores only the messages a step appended, not the whole history, so a
200-step run checkpoints in kilobytes where a plain ``add_messages`` list stores the
history again at every step (measured in ``bench/overhead.py``). Everything else in
the state is a handful of counters. Large tool outputs never enter the state: the
dispatcher caps them and keeps the full text as an artifact.

The context (:class:`RunContext`) holds what a run needs but a checkpoint must not:
the backend, the dispatcher, limits, and the tasks of calls dispatched early.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.channels import DeltaChannel

from agent.config import ApprovalRule, Limits, Sampling, ToolChoice
from agent.llm.base import Backend
from agent.types import LimitName, RunStatus, ToolResult

if TYPE_CHECKING:
    from tools.dispatch import Dispatcher
    from tools.registry import ToolRegistry

__all__ = ["AgentState", "RunContext", "recursion_limit"]


def _append(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    """Append-only reducer; batching-invariant as DeltaChannel requires."""
    out = list(state)
    for write in writes:
        out.extend(write if isinstance(write, list) else [write])
    return out


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], DeltaChannel(_append, snapshot_frequency=1000)]
    """The thread's whole conversation: every turn so far."""
    run_id: str
    """The run now (or last) going on this thread."""
    run_start: int
    """Index of the run's first message: what came before belongs to earlier turns."""
    steps: int
    """Model calls made."""
    tool_calls: int
    """Tool calls executed (reused results on resume count once)."""
    usage: dict[str, int]
    repairs: int
    """Consecutive steps that needed a repair; reset by a clean step."""
    output_retries: int
    awaiting_approval: bool
    """The last model turn has a call that must be approved before it runs."""
    denied: list[str]
    """Call ids the user refused at the approval step."""
    json_mode: bool
    """Next model call answers in JSON mode (structured outputs)."""
    constrain: bool
    """Next model call constrains tool calls to the tools' schemas (repair retry)."""
    limit: LimitName | None
    status: RunStatus | None
    answer: Any
    error: str | None


def recursion_limit(limits: Limits) -> int:
    """LangGraph supersteps for a run: ~3 nodes per model step, plus repairs and the end."""
    return 4 * (limits.max_steps + limits.max_repairs + 2) + 10


@dataclass
class RunContext:
    """Per-run resources handed to every node (LangGraph ``context``)."""

    run_id: str
    backend: Backend
    tools: ToolRegistry
    dispatcher: Dispatcher
    limits: Limits = field(default_factory=Limits)
    sampling: Sampling = field(default_factory=Sampling)
    output_schema: dict[str, Any] | None = None
    approval: ApprovalRule = "side_effects"
    constrained_tool_calls: bool = False
    constrained_repair: bool = False
    tool_choice: ToolChoice = "auto"
    """The run's choice; ``required`` or a name holds only until its first tool call."""
    early_dispatch: bool = True
    resumed: bool = False
    """The run continues from a checkpoint: completed tool results may be saved already."""
    deadline: float = field(default=0.0)
    """``time.monotonic()`` at which the wall-clock limit passes; set at run start."""
    inflight: dict[str, asyncio.Task[ToolResult]] = field(default_factory=dict)
    """Calls dispatched while the model was still generating, by call id."""
    saving: set[asyncio.Task[None]] = field(default_factory=set)
    """Tool results being written to the store; :meth:`settle` waits for them."""
    closing: bool = False
    """The run is shutting down: results from here on are not saved for resume."""
    writer: Callable[[Any], None] | None = None
    """The stream writer of the graph's current segment (each node sets it as it starts);
    None between segments: a pause for approval, or after the graph's last step."""
    held: list[Any] = field(default_factory=list)
    """Events of calls that finished between segments, for the run to yield next."""

    def emit(self, event: Any) -> None:
        """An event of a call, which may finish after the node that started it: to the
        graph's current segment, or held (:meth:`take_held`) while none is running."""
        if self.writer is None:
            self.held.append(event)
        else:
            self.writer(event)

    def take_held(self) -> list[Any]:
        held, self.held = self.held, []
        return held

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.limits.deadline_s

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    async def settle(self) -> None:
        """Let calls started early finish (each is bounded by its hard timeout; they are
        side-effect free and legitimately started), then wait for every save. Call before
        the run ends or pauses, so a resumed run finds their results."""
        while self.inflight:
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)
            # Their results stay saved for resume; the tasks themselves are done with.
            self.inflight = {k: t for k, t in self.inflight.items() if not t.done()}
        while self.saving:
            await asyncio.gather(*list(self.saving), return_exceptions=True)

    async def close(self) -> None:
        """Stop everything still running (the run is over, or its consumer went away)."""
        self.closing = True
        for task in self.inflight.values():
            task.cancel()
        self.inflight.clear()
