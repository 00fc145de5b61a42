"""How one turn's tool calls are decided, run and answered.

:func:`plan_turn` is the single place that decides what each call of a turn gets: run
it, refuse it for the tool-call budget, answer it with a loop notice, or stop the run in a
loop. It is pure and a call's decision depends only on the calls before it, so the model
node can apply it while calls are still streaming in (early dispatch) and the tools node
applies it to the whole turn with the same result — an early call never runs where the
tools node would have refused it.

Budget: every call decided ``run`` takes one slot, in call order, even if the user later
denies it (denial is only known after the approval step). Loop notices take none.

Idempotency: a completed call's result is saved in the LangGraph store under its key
(:func:`idempotency_key`: run, tool, arguments, occurrence). A resumed run re-runs the
step it was killed in and reuses those results instead of calling the tools again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import AIMessage
from langgraph.runtime import Runtime

from agent.config import Limits
from agent.events import RepairEvent, ToolResultEvent
from agent.messages import malformed_messages, tool_calls_of, tool_message
from agent.types import ToolCall, ToolResult, ToolStatus
from graphs.state import AgentState, RunContext

__all__ = [
    "Planned",
    "call_counts",
    "executed",
    "idempotency_key",
    "last_ai",
    "may_dispatch_early",
    "needs_approval",
    "plan_turn",
    "repair_node",
    "repair_update",
    "run_call",
    "run_messages",
    "skipped",
    "start_call",
    "tools_node",
]

Decision = Literal["run", "over_budget", "loop_notice", "loop_stop"]

_RESULTS_NS = "tool_results"
_DENIED = "The user denied this call. Do not retry it."
_OVER_BUDGET = "Not run: the run's max_tool_calls limit was reached."
_LOOP_STOP = "Not run: the run stopped in a loop."


@dataclass(frozen=True)
class Planned:
    """One call of a turn and what it gets. ``key`` is its idempotency key."""

    call: ToolCall
    key: str
    decision: Decision
    seen: int
    """How many times this exact call (tool and arguments) has been made, this one included."""


def plan_turn(
    run_id: str,
    calls: Sequence[ToolCall],
    prior: dict[str, int],
    executed_before: int,
    limits: Limits,
) -> list[Planned]:
    """Decide every call of a turn, in order (``prior``: counts of earlier turns' calls).

    >>> from agent.config import Limits
    >>> [p.decision for p in plan_turn("r", [ToolCall("f", {}, "1")] * 2, {}, 0,
    ...                                Limits(max_tool_calls=1))]
    ['run', 'over_budget']
    """
    counts, slots, out = dict(prior), limits.max_tool_calls - executed_before, []
    for call in calls:
        sig = _signature(call)
        counts[sig] = seen = counts.get(sig, 0) + 1
        if seen > limits.loop_threshold:
            decision: Decision = "loop_stop"
        elif seen == limits.loop_threshold:
            decision = "loop_notice"
        elif slots <= 0:
            decision = "over_budget"
        else:
            decision, slots = "run", slots - 1
        out.append(Planned(call, idempotency_key(run_id, call, seen), decision, seen))
    return out


def idempotency_key(run_id: str, call: ToolCall, occurrence: int) -> str:
    """Stable key of the ``occurrence``-th identical call (same tool and arguments) of a
    run, counted from 1. ASCII-only JSON, so arguments holding lone surrogates hash too.

    >>> idempotency_key("r", ToolCall("f", {"b": 1, "a": 2}), 1) == \\
    ...     idempotency_key("r", ToolCall("f", {"a": 2, "b": 1}, id="other"), 1)
    True
    """
    payload = json.dumps(
        ["v2", run_id, call.name, call.arguments, occurrence],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def run_messages(state: AgentState) -> list[Any]:
    """The messages of the current run (a thread's earlier turns excluded)."""
    return state["messages"][state.get("run_start", 0) :]


def call_counts(messages: Iterable[Any]) -> dict[str, int]:
    """How often each (tool, arguments) signature was called in ``messages``.

    Derived from the conversation rather than kept in the state, so a checkpoint never
    re-stores a table that grows with the run.
    """
    counts: dict[str, int] = {}
    for message in messages:
        if isinstance(message, AIMessage):
            for call in tool_calls_of(message):
                sig = _signature(call)
                counts[sig] = counts.get(sig, 0) + 1
    return counts


def needs_approval(ctx: RunContext, call: ToolCall) -> bool:
    """Whether ``call`` waits for a yes/no under the run's approval policy."""
    if ctx.approval == "none":
        return False
    if ctx.approval == "all":
        return True
    if isinstance(ctx.approval, tuple):
        return call.name in ctx.approval
    return ctx.tools.has_side_effects(call)


def may_dispatch_early(ctx: RunContext, planned: Planned) -> bool:
    """Safe to start before the generation ends: planned to run, known, no approval."""
    return (
        ctx.early_dispatch
        and planned.decision == "run"
        and planned.call.name in ctx.tools
        and not needs_approval(ctx, planned.call)
    )


# --- the tools node -----------------------------------------------------------------------


async def tools_node(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Run the last turn's calls (reusing early or saved results), answers in call order."""
    ctx = runtime.context
    ai, step = last_ai(state), state.get("steps", 0)
    calls = tool_calls_of(ai)
    prior = call_counts(m for m in run_messages(state) if m is not ai)
    plan = plan_turn(ctx.run_id, calls, prior, state.get("tool_calls", 0), ctx.limits)
    denied = set(state.get("denied", []))
    pending = [_start(runtime, p, denied, step) for p in plan]
    results, timed_out = await _gather(ctx, plan, pending)
    messages = [tool_message(r) for r in results] + malformed_messages(ai)
    update: dict[str, Any] = {
        "messages": messages,
        "tool_calls": state.get("tool_calls", 0) + executed(results),
    }
    reasons = [f"{r.name}: {r.content}" for r in results if r.error == "arguments"]
    reasons += [f"malformed call: {c['error']}" for c in ai.invalid_tool_calls]
    update.update(repair_update(state, runtime, reasons, step))
    if any(p.decision == "loop_stop" for p in plan):
        update.update(status="loop", error="the model kept repeating the same call")
    elif timed_out:
        update["limit"] = "deadline"
    elif any(p.decision == "over_budget" for p in plan):
        update["limit"] = "max_tool_calls"
    return update


def _start(
    runtime: Runtime[RunContext], p: Planned, denied: set[str], step: int
) -> asyncio.Future[ToolResult] | ToolResult:
    ctx, call = runtime.context, p.call
    if p.decision == "over_budget":
        return skipped(call, _OVER_BUDGET)
    if p.decision == "loop_stop":
        return skipped(call, _LOOP_STOP)
    if p.decision == "loop_notice":
        return skipped(call, _loop_notice(call, p.seen))
    if call.id in denied:
        return skipped(call, _DENIED, status="denied")
    task = ctx.inflight.pop(call.id, None)
    return task or asyncio.ensure_future(run_call(runtime, call, p.key, step))


async def _gather(
    ctx: RunContext, plan: list[Planned], pending: list[asyncio.Future[ToolResult] | ToolResult]
) -> tuple[list[ToolResult], bool]:
    """Wait for the calls until the run's deadline; unfinished ones are cancelled."""
    tasks = [p for p in pending if not isinstance(p, ToolResult)]
    late: set[asyncio.Future[ToolResult]] = set()
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=max(ctx.remaining_s(), 0.0))
        for task in late:
            task.cancel()
    results = [
        p
        if isinstance(p, ToolResult)
        else skipped(planned.call, "Not run: the run's deadline passed.")
        if p in late
        else p.result()
        for planned, p in zip(plan, pending, strict=True)
    ]
    return results, bool(late)


def executed(results: Iterable[ToolResult]) -> int:
    """Calls that really ran (or were reused), not refused, denied or cancelled."""
    return sum(r.ran for r in results)


async def repair_node(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Send malformed calls back to the model as tool errors it can act on."""
    ai = last_ai(state)
    reasons = [f"malformed call: {c['error']}" for c in ai.invalid_tool_calls]
    update: dict[str, Any] = {"messages": malformed_messages(ai)}
    update.update(repair_update(state, runtime, reasons, state.get("steps", 0)))
    return update


def repair_update(
    state: AgentState, runtime: Runtime[RunContext], reasons: list[str], step: int
) -> dict[str, Any]:
    """Count a repair (or reset the count); past the budget the run ends with ``error``."""
    ctx = runtime.context
    if not reasons:
        return {"repairs": 0}
    repairs = state.get("repairs", 0) + 1
    runtime.stream_writer(RepairEvent(step=step, reasons=reasons, consecutive=repairs))
    if repairs > ctx.limits.max_repairs:
        return {
            "repairs": repairs,
            "status": "error",
            "error": f"the model produced unusable tool calls {repairs} times in a row: "
            + "; ".join(reasons),
        }
    return {"repairs": repairs, "constrain": ctx.constrained_repair}


# --- one call -----------------------------------------------------------------------------


def start_call(runtime: Runtime[RunContext], call: ToolCall, key: str, step: int) -> None:
    """Dispatch ``call`` now, while the model is still generating (see ``ctx.inflight``)."""
    runtime.context.inflight[call.id] = asyncio.ensure_future(run_call(runtime, call, key, step))


async def run_call(runtime: Runtime[RunContext], call: ToolCall, key: str, step: int) -> ToolResult:
    """One call: a result saved under its idempotency key is reused, else it runs."""
    ctx, store = runtime.context, runtime.store
    namespace = (_RESULTS_NS, ctx.run_id)
    # Only a resumed run can have results saved before this process started.
    saved = await store.aget(namespace, key) if store is not None and ctx.resumed else None
    if saved is not None:
        result = dataclasses.replace(_result_from(saved.value), call_id=call.id)
        _emit(runtime, result, step, reused=True)
        return result
    result = await ctx.dispatcher.call(call)
    if store is not None and not ctx.closing and result.error != "timeout":
        # Saved in the background: awaiting would not narrow the window in which a crash
        # loses a completed call (it ends when the write lands either way), it would only
        # hold up the next step. The run settles these before it ends.
        fields = {**dataclasses.asdict(result), "idempotency_key": key}
        task = asyncio.create_task(store.aput(namespace, key, fields))
        ctx.saving.add(task)
        task.add_done_callback(ctx.saving.discard)
    _emit(runtime, result, step, reused=False)
    return result


def _emit(runtime: Runtime[RunContext], r: ToolResult, step: int, *, reused: bool) -> None:
    # Not runtime.stream_writer: a call started early may finish after its segment ended.
    runtime.context.emit(ToolResultEvent(step, r, reused=reused))


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(ToolResult))


def _result_from(saved: dict[str, Any]) -> ToolResult:
    return ToolResult(**{k: v for k, v in saved.items() if k in _RESULT_FIELDS})


# --- messages -----------------------------------------------------------------------------


def skipped(call: ToolCall, content: str, *, status: ToolStatus = "skipped") -> ToolResult:
    """A result for a call that did not run: ``skipped`` by the run, or ``denied``."""
    return ToolResult(call_id=call.id, name=call.name, status=status, content=content)


def _loop_notice(call: ToolCall, seen: int) -> str:
    return (
        f"Not run: you have called {call.name} with these same arguments {seen} times and the "
        "result will not change. Use the results you already have, or try something "
        "different. Repeating it again stops the run."
    )


def last_ai(state: AgentState) -> AIMessage:
    """The latest assistant turn."""
    for message in reversed(state["messages"]):
        if isinstance(message, AIMessage):
            return message
    raise ValueError("the conversation has no assistant turn yet")


def _signature(call: ToolCall) -> str:
    return call.name + ":" + json.dumps(call.arguments, sort_keys=True, separators=(",", ":"))
