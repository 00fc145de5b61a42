"""The agent graph's model-side nodes: model, approval, answer and final.

A node is ``(state, runtime) -> partial state``; limits and statuses are decided here and
recorded in the state, so the routers in ``graphs.react`` stay pure functions of it.
Events go out through LangGraph's custom stream (``runtime.stream_writer``). The calls'
side (planning, running, the tools and repair nodes) is ``graphs.calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agent import jsonmode
from agent.config import ToolChoice
from agent.events import RepairEvent, StepFinished, TextDelta, ToolCallEvent
from agent.hermes import TextDelta as ParsedText
from agent.hermes import ToolCallParsed
from agent.llm.base import Generation, GenerationDone, GenerationRequest
from agent.messages import (
    ai_message,
    malformed_messages,
    to_messages,
    tool_calls_of,
    tool_message,
)
from graphs.calls import (
    call_counts,
    executed,
    last_ai,
    may_dispatch_early,
    needs_approval,
    plan_turn,
    repair_node,
    repair_update,
    run_messages,
    skipped,
    start_call,
    tools_node,
)
from graphs.state import AgentState, RunContext

__all__ = [
    "answer_node",
    "approval_node",
    "final_node",
    "model_node",
    "repair_node",
    "tools_node",
]

_EMPTY_REPLY = "Your reply was empty. Answer the question, or call a tool if you need one."
_FINAL_PROMPT = (
    "The run has reached its {limit} limit, so no more tools will run. Do not call tools. "
    "Give your best final answer now from what you already know."
)


# --- model ----------------------------------------------------------------------------


async def model_node(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Call the model once, streaming its text and dispatching safe calls early."""
    ctx = runtime.context
    limit = _limit_before_call(state, ctx)
    if limit:
        return {"limit": limit}
    step = state.get("steps", 0) + 1
    request = _request(state, ctx, json_mode=state.get("json_mode", False))
    try:
        async with asyncio.timeout(max(ctx.remaining_s(), 0.001)):
            generation = await _generate(request, runtime, step, state, dispatch=True)
    except TimeoutError:
        # The turn is lost; calls it started are side-effect free and are cancelled by
        # the final node. The model never sees them.
        return {"limit": "deadline", "steps": step}
    runtime.stream_writer(StepFinished(step, generation))
    return _after_generation(state, ctx, generation, step)


def _limit_before_call(state: AgentState, ctx: RunContext) -> str | None:
    limits = ctx.limits
    if state.get("steps", 0) >= limits.max_steps:
        return "max_steps"
    if ctx.remaining_s() <= 0:
        return "deadline"
    if limits.max_tokens is not None and _total_tokens(state) >= limits.max_tokens:
        return "max_tokens"
    return None


def _request(state: AgentState, ctx: RunContext, *, json_mode: bool) -> GenerationRequest:
    return GenerationRequest(
        messages=to_messages(state["messages"]),
        tools=ctx.dispatcher.specs(),
        sampling=ctx.sampling,
        json_schema=ctx.output_schema if json_mode else None,
        constrain_tool_calls=ctx.constrained_tool_calls,
        tool_choice=_tool_choice(state, ctx),
        session_id=ctx.run_id,
    )


def _tool_choice(state: AgentState, ctx: RunContext) -> ToolChoice:
    """This step's choice: a constrained repair forces a valid call; ``required`` or a
    tool's name hold until the run's first call (after it the model must be free to
    answer); ``none`` holds throughout."""
    if ctx.tool_choice == "none":
        return "none"
    if state.get("constrain"):
        return "required"
    return ctx.tool_choice if state.get("tool_calls", 0) == 0 else "auto"


async def _generate(
    request: GenerationRequest,
    runtime: Runtime[RunContext],
    step: int,
    state: AgentState,
    *,
    dispatch: bool,
) -> Generation:
    """Stream one generation and emit its events; with ``dispatch``, start the calls that
    :func:`graphs.calls.plan_turn` would run and that are safe, as soon as each is parsed."""
    ctx, write = runtime.context, runtime.stream_writer
    prior, seen = call_counts(run_messages(state)), []
    async with contextlib.aclosing(ctx.backend.stream(request)) as events:
        async for event in events:
            if isinstance(event, ParsedText):
                write(TextDelta(step=step, text=event.text))
            elif isinstance(event, ToolCallParsed):
                seen.append(event.call)
                planned = plan_turn(
                    ctx.run_id, seen, prior, state.get("tool_calls", 0), ctx.limits
                )[-1]
                early = dispatch and may_dispatch_early(ctx, planned)
                if early:
                    start_call(runtime, planned.call, planned.key, step)
                write(ToolCallEvent(step, event.call, early=early))
            elif isinstance(event, GenerationDone):
                return event.generation
    raise RuntimeError("the backend's stream ended without GenerationDone")


def _after_generation(
    state: AgentState, ctx: RunContext, generation: Generation, step: int
) -> dict[str, Any]:
    usage = _add_usage(state.get("usage", {}), generation)
    update: dict[str, Any] = {
        "messages": [ai_message(generation)],
        "steps": step,
        "usage": usage,
        "json_mode": False,
        "constrain": False,
        "denied": [],
        "awaiting_approval": any(needs_approval(ctx, c) for c in generation.tool_calls),
    }
    tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
    budget = ctx.limits.max_tokens
    if generation.tool_calls and budget is not None and tokens >= budget:
        update["limit"] = "max_tokens"
    return update


# --- approval ---------------------------------------------------------------------------


async def approval_node(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Pause for a yes/no on calls with side effects (a LangGraph interrupt).

    The runner resumes with ``Command(resume={call_id: bool, ...})`` (or one bool for all).
    """
    ctx = runtime.context
    asks = [c for c in tool_calls_of(last_ai(state)) if needs_approval(ctx, c)]
    if not asks:
        return {}
    # The interrupt's value is checkpointed: plain dicts, which the runner turns back into
    # ToolCall values for the ApprovalRequest.
    decision = interrupt({"run_id": ctx.run_id, "calls": [dataclasses.asdict(c) for c in asks]})
    if isinstance(decision, bool):
        denied = [] if decision else [c.id for c in asks]
    else:
        denied = [c.id for c in asks if not decision.get(c.id, False)]
    return {"denied": denied}


# --- answer and final ---------------------------------------------------------------------


async def answer_node(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Accept the model's answer: text, or JSON valid against the output schema.

    Invalid JSON gets one retry in JSON mode with the validation errors, then the run
    ends with ``invalid_output``.
    """
    ctx = runtime.context
    content = last_ai(state).content
    if not content.strip() and ctx.output_schema is None:
        return _empty_answer(state, runtime)
    if ctx.output_schema is None:
        return {"status": "done", "answer": content}
    value, errors = _check_json(content, ctx.output_schema)
    if not errors:
        return {"status": "done", "answer": value}
    retries = state.get("output_retries", 0)
    if retries >= 1:
        return {
            "status": "invalid_output",
            "answer": content,
            "error": "the final answer did not match the output schema: " + "; ".join(errors),
        }
    runtime.stream_writer(RepairEvent(step=state.get("steps", 0), reasons=errors, consecutive=1))
    retry = HumanMessage(content=jsonmode.retry_message(errors, ctx.output_schema))
    return {"messages": [retry], "output_retries": retries + 1, "json_mode": True}


def _empty_answer(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """An empty reply is no answer: ask again, as a repair (past the budget: ``error``)."""
    update = repair_update(state, runtime, ["the reply was empty"], state.get("steps", 0))
    if update.get("status"):
        return {
            **update,
            "error": f"the model gave an empty answer {update['repairs']} times in a row",
        }
    return {**update, "constrain": False, "messages": [HumanMessage(content=_EMPTY_REPLY)]}


def _check_json(content: str, schema: dict[str, Any]) -> tuple[Any, list[str]]:
    try:
        value = jsonmode.extract_json(content)
    except Exception as exc:  # ModelOutputError: no JSON at all
        return None, [str(exc)]
    return value, jsonmode.validate(value, schema)


async def final_node(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """A limit was hit: answer any open calls, then one last model call, no tools run."""
    ctx = runtime.context
    limit = state.get("limit") or "unknown"
    opened, ran = await _close_open_calls(state, ctx, limit)
    messages = [*opened, HumanMessage(content=_FINAL_PROMPT.format(limit=limit))]
    final_state: AgentState = {**state, "messages": [*state["messages"], *messages]}
    request = _request(final_state, ctx, json_mode=ctx.output_schema is not None)
    if request.tool_choice != "none":  # the last call must be free to answer, not call
        request.tool_choice = "auto"
    grace = min(30.0, max(5.0, ctx.limits.deadline_s * 0.1))
    step = state.get("steps", 0) + 1
    update: dict[str, Any] = {
        "messages": messages,
        "tool_calls": state.get("tool_calls", 0) + ran,
        "status": "limit",
        "answer": None,
    }
    try:
        async with asyncio.timeout(grace):
            generation = await _generate(request, runtime, step, final_state, dispatch=False)
    except TimeoutError:
        return {**update, "error": f"no final answer within {grace:g} s after the limit"}
    runtime.stream_writer(StepFinished(step, generation))
    answer: Any = generation.content
    if ctx.output_schema is not None:
        value, errors = _check_json(generation.content, ctx.output_schema)
        answer = generation.content if errors else value
    return {
        **update,
        "messages": [*messages, ai_message(generation)],
        "steps": step,
        "usage": _add_usage(state.get("usage", {}), generation),
        "answer": answer,
    }


async def _close_open_calls(
    state: AgentState, ctx: RunContext, limit: str
) -> tuple[list[Any], int]:
    """Answer the last turn's calls if nothing did; return those messages and how many
    calls ran. Calls dispatched early keep their real results — waited for, unless the
    limit is the deadline, which leaves no time: then unfinished ones are cancelled."""
    last = state["messages"][-1]
    results = []
    if ctx.inflight and limit != "deadline":
        await asyncio.wait(ctx.inflight.values())  # each is bounded by its hard timeout
    if isinstance(last, AIMessage):
        for call in tool_calls_of(last):
            task = ctx.inflight.pop(call.id, None)
            if task is not None and task.done() and not task.cancelled():
                results.append(task.result())
            else:
                if task is not None:
                    task.cancel()
                results.append(skipped(call, f"Not run: the {limit} limit was reached."))
    for task in ctx.inflight.values():  # from a turn the deadline cut short
        task.cancel()
    ctx.inflight.clear()
    if not isinstance(last, AIMessage):
        return [], 0
    return [tool_message(r) for r in results] + malformed_messages(last), executed(results)


# --- small helpers ------------------------------------------------------------------------


def _add_usage(usage: dict[str, int], generation: Generation) -> dict[str, int]:
    u = generation.usage
    return {
        "prompt_tokens": usage.get("prompt_tokens", 0) + u.prompt_tokens,
        "completion_tokens": usage.get("completion_tokens", 0) + u.completion_tokens,
        "cached_tokens": usage.get("cached_tokens", 0) + (u.cached_tokens or 0),
    }


def _total_tokens(state: AgentState) -> int:
    usage = state.get("usage", {})
    return usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
