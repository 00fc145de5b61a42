"""``build_graph()``: the agent's LangGraph state machine, wired in one place.

```
START ─► model ─┬─► approval ─► tools ─┐
   ▲            ├─► tools ─────────────┤ (status? END : limit? final : model)
   │            ├─► repair ────────────┤
   │            ├─► answer ─► END | model (one JSON retry)
   │            └─► final ─► END        (a limit was hit: one last call, no tools)
   └────────────────────────────────────┘
```
Routers are pure functions of the state and return ``Literal`` node names. The model
node records limits and statuses; routers only read them. The stock ``tools_condition``
is not used: it ignores ``invalid_tool_calls``, so a malformed call would silently end
the run, where here it goes to ``repair``.

>>> graph = build_graph()
>>> sorted(graph.get_graph().nodes)[:3]
['__end__', '__start__', 'answer']
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from graphs.nodes import (
    answer_node,
    approval_node,
    final_node,
    model_node,
    repair_node,
    tools_node,
)
from graphs.state import AgentState, RunContext

__all__ = ["build_graph", "route_after_model", "route_after_tools"]

AfterModel = Literal["approval", "tools", "repair", "answer", "final", "__end__"]


def route_after_model(state: AgentState) -> AfterModel:
    """Where the model's turn goes next."""
    if state.get("status"):
        return END
    if state.get("limit"):
        return "final"
    last = state["messages"][-1]
    if not isinstance(last, AIMessage):  # pragma: no cover - the model node always appends one
        return "final"
    if last.tool_calls:
        return "approval" if state.get("awaiting_approval") else "tools"
    if last.invalid_tool_calls:
        return "repair"
    return "answer"


def route_after_tools(state: AgentState) -> Literal["model", "final", "__end__"]:
    """Back to the model, unless a status ended the run or a limit asks for the end."""
    if state.get("status"):
        return END
    return "final" if state.get("limit") else "model"


def _inline(router: Callable[[AgentState], str]) -> Callable[[AgentState], Awaitable[str]]:
    """``router`` as a coroutine function. LangGraph runs a plain function in a thread: a
    hop per superstep, and a moment in which a run stopped right after a node (``agent
    serve`` draining at a step) kept the node's writes but not where to go next, so that it
    could not be resumed."""

    @functools.wraps(router)
    async def route(state: AgentState) -> str:
        return router(state)

    return route


def _segment(node: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``node``, first pointing the run's :meth:`RunContext.emit` at the stream of the
    graph's segment it runs in (the graph runs in segments split by approval pauses)."""

    @functools.wraps(node)
    async def run(state: AgentState, runtime: Runtime[RunContext]) -> Any:
        runtime.context.writer = runtime.stream_writer
        return await node(state, runtime)

    return run


def build_graph(
    *, checkpointer: Any = None, store: Any = None, approval: bool = True
) -> CompiledStateGraph:
    """Compile the agent graph. Run it with ``context=RunContext(...)``.

    ``approval=False`` leaves out the approval node (no call can wait for a human).
    """
    graph = StateGraph(AgentState, context_schema=RunContext)
    graph.add_node("model", _segment(model_node))
    graph.add_node("tools", _segment(tools_node))
    graph.add_node("repair", _segment(repair_node))
    graph.add_node("answer", _segment(answer_node))
    graph.add_node("final", _segment(final_node))
    graph.add_edge(START, "model")
    targets = ["tools", "repair", "answer", "final", END]
    if approval:
        graph.add_node("approval", _segment(approval_node))
        graph.add_edge("approval", "tools")
        targets.append("approval")
    graph.add_conditional_edges("model", _inline(route_after_model), targets)
    for node in ("tools", "repair", "answer"):
        graph.add_conditional_edges(node, _inline(route_after_tools), ["model", "final", END])
    graph.add_edge("final", END)
    return graph.compile(checkpointer=checkpointer, store=store)
