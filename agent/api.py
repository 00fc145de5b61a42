"""The Python API: ``Agent.from_task(...)`` or ``Agent(model=..., tools=...)``, then
``await agent.run(input)`` or ``async for event in agent.stream(input)``.

One agent is safe to share across concurrent runs in one event loop: the compiled graph,
the backend's connection pool and the checkpoint database are shared; each run gets its
own dispatcher (and sandbox worker), context, trace file and run-store row.

Persistence (``store`` defaults to ``.agent`` under the working directory): checkpoints
in ``STORE/checkpoints.db``, completed tool results in ``STORE/store.db``, run records in
``STORE/runs.db``, traces in ``STORE/traces/RUN_ID.jsonl`` and tool artifacts in
``STORE/artifacts/RUN_ID/``. ``store=None`` keeps checkpoints in memory (no resume).
``store="postgresql://..."`` keeps checkpoints, tool results and run records in Postgres
(the ``postgres`` extra) and traces and artifacts in ``.agent``; see
:mod:`agent.persistence`.

>>> agent = Agent("http://127.0.0.1:8000", tools=["read_file"], store=None)
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.types import Command, Durability

from agent._recorder import RunRecorder
from agent.config import ApprovalRule, Limits, Sampling, ToolChoice
from agent.errors import AgentError, ConfigError, error_kind
from agent.events import ApprovalRequest, Event, Final, RunError, RunStarted
from agent.llm.base import Backend
from agent.persistence import StoreLocation, store_location
from agent.task import Task, load_task
from agent.types import Message, RunResult, ToolCall
from graphs.state import recursion_limit
from tools.policy import ToolPolicies

__all__ = ["Agent", "Approver"]

_log = logging.getLogger(__name__)
_THREADS_KEPT = 10_000

Approver = Callable[[ApprovalRequest], "bool | dict[str, bool] | Awaitable[bool | dict[str, bool]]"]
"""Decides on calls waiting for approval: True/False for all, or ``{call_id: bool}``."""


class Agent:
    """A Hermes agent: a model, tools with their policies, limits, and where runs persist."""

    def __init__(
        self,
        model: Backend | str | Sequence[str],
        tools: Sequence[Any] = (),
        *,
        system: str | None = None,
        output_schema: dict[str, Any] | None = None,
        limits: Limits | None = None,
        policies: ToolPolicies | None = None,
        sampling: Sampling | None = None,
        approval: ApprovalRule | Sequence[str] = "side_effects",
        store: str | Path | StoreLocation | None = ".agent",
        constrained_tool_calls: bool = False,
        constrained_repair: bool = False,
        tool_choice: ToolChoice = "auto",
    ) -> None:
        from tools.registry import ToolRegistry

        self.backend = model if isinstance(model, Backend) else _http_backend(model)
        self.tools = ToolRegistry.default().select([t for t in tools if isinstance(t, str)])
        for obj in tools:
            if not isinstance(obj, str):
                self.tools.register(obj)
        self.system = system
        self.output_schema = output_schema
        self.limits = limits or Limits()
        self.policies = policies or ToolPolicies()
        self.sampling = sampling or Sampling()
        self.approval = approval if isinstance(approval, str) else tuple(approval)
        self.store = store_location(store)
        self.constrained_tool_calls = constrained_tool_calls
        self.constrained_repair = constrained_repair
        if tool_choice not in ("auto", "required", "none") and tool_choice not in self.tools:
            raise ConfigError(
                f"tool_choice={tool_choice!r}: use auto, required, none or the name of one of "
                f"the agent's tools ({', '.join(self.tools.names()) or 'none'})"
            )
        self.tool_choice = tool_choice
        self.task: Task | None = None
        self._vars: dict[str, str] = {}
        self.durability: Durability = "async"
        """LangGraph checkpoint durability: ``async`` writes a step's checkpoint while the
        next step runs. A crash loses at most the step in flight; completed tool calls are
        in the result store, so a resumed run does not repeat them. ``exit`` suits evals."""
        self._graph: Any = None
        self._resources: AsyncExitStack | None = None
        self._runs: Any = None
        # run id -> thread id, for runs of this process (the newest only: a long-lived
        # service must not grow it forever; older runs' threads are in the run store)
        self._threads: OrderedDict[str, str] = OrderedDict()
        self._open_lock = asyncio.Lock()
        self.tracer: Any = None
        """An OpenTelemetry ``Tracer``: each run becomes GenAI spans (:mod:`agent.tracing`;
        ``agent.tracing.tracer()`` gives the global provider's). None: no spans."""

    @classmethod
    def from_task(
        cls,
        task: str | Path | Task,
        *,
        vars: dict[str, str] | None = None,
        model_url: str | None = None,
        backend: Backend | None = None,
    ) -> Agent:
        """An agent configured by a task file (``model_url`` overrides the file's URLs)."""
        task = task if isinstance(task, Task) else load_task(task, vars)
        model = backend or _http_backend(task.model.urls(model_url), task.model)
        agent = cls(
            model,
            tools=task.tools.enabled,
            system=task.system,
            output_schema=task.output_schema,
            limits=task.limits,
            policies=task.tool_policies(),
            sampling=task.model.sampling,
            approval=task.approval.rule(),
            store=store_location(task.store),
            constrained_tool_calls=task.model.constrained_tool_calls,
            constrained_repair=task.model.constrained_repair,
            tool_choice=task.model.tool_choice,
        )
        agent.task = task
        agent._vars = dict(vars or {})
        return agent

    # --- running ----------------------------------------------------------------------

    async def run(
        self,
        input: str | None = None,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        resume: bool = False,
        approve: Approver | str | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> RunResult:
        """Run to the end and return the result. See :meth:`stream` for the arguments."""
        result: RunResult | None = None
        async for event in self.stream(
            input, thread_id=thread_id, run_id=run_id, resume=resume, approve=approve
        ):
            if on_event is not None:
                on_event(event)
            if isinstance(event, Final):
                result = event.result
        assert result is not None, "stream() always ends with a Final event"
        return result

    async def stream(
        self,
        input: str | None = None,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        resume: bool = False,
        approve: Approver | str | None = None,
    ) -> AsyncIterator[Event]:
        """Yield the run's events, always ending with one ``Final``.

        ``input`` defaults to the task's input. ``thread_id`` continues a conversation: the
        run answers ``input`` after the thread's earlier turns (a new thread by that id if
        there is none; without one, the run is a thread of its own). The ``run_id`` of an
        existing run continues it from its last checkpoint (tool calls that completed are
        not repeated); ``resume=True`` requires that it exists. ``approve``: ``"all"``,
        ``"none"`` or a callable; without one, a call that needs approval pauses the run
        (``Final`` with status ``awaiting_approval``).
        """
        if isinstance(approve, str) and approve not in ("all", "none"):
            raise ConfigError(f"approve={approve!r}: use 'all', 'none' or a callable")
        await self._open()
        plan = await self._plan(input, thread_id, run_id, resume)
        run_id, resumed = plan.run_id, plan.payload is None
        async with AsyncExitStack() as stack:
            # Queued until the server has room for its context (a no-op without a budget).
            await stack.enter_async_context(self.backend.admitted(run_id))
            ctx = await self._context(run_id, stack, resumed=resumed)
            rec = await stack.enter_async_context(
                RunRecorder(
                    run_id,
                    self.store.folder,
                    self._runs,
                    task=self._task_name(),
                    task_path=self.task.path.resolve() if self.task and self.task.path else None,
                    model_url=self._model_url(),
                    thread_id=plan.thread_id,
                    observer=self._observer(run_id),
                )
            )
            await rec.start(resumed)
            start = RunStarted(
                run_id,
                self._task_name(),
                self._model_url(),
                resumed,
                thread_id=plan.thread_id,
                input=None if resumed else plan.payload["messages"][-1].content,
            )
            rec.event(start)
            ended = False
            try:
                yield start
                # aclosing: a consumer that leaves early stops the graph's tasks now (a
                # model request in flight, say), not whenever the generators are collected.
                drive = self._drive(plan.payload, plan.config, ctx, approve, rec, plan.snapshot)
                async with contextlib.aclosing(drive) as events:
                    async for event in events:
                        ended = isinstance(event, Final)
                        yield event
            finally:
                if not ended:
                    rec.interrupted()

    async def _drive(
        self,
        payload: Any,
        config: dict[str, Any],
        ctx: Any,
        approve: Any,
        rec: RunRecorder,
        snapshot: Any,
    ) -> AsyncIterator[Event]:
        """Run the graph, answering approval pauses; every way out ends in one ``Final``."""
        run_id = ctx.run_id
        config = {**config, "recursion_limit": recursion_limit(self.limits)}
        pending = list(snapshot.interrupts)
        try:
            while True:
                if pending:
                    calls = [ToolCall(**c) for c in pending[0].value["calls"]]
                    request = ApprovalRequest(run_id, calls)
                    rec.event(request)
                    yield request
                    decision = await _decide(approve, request)
                    if decision is None:
                        await ctx.settle()
                        for event in _held(ctx, rec):
                            yield event
                        state = (await self._graph.aget_state(config)).values
                        yield await rec.final("awaiting_approval", None, state)
                        return
                    for event in _held(ctx, rec):  # calls that finished while it was asked
                        yield event
                    payload, pending = Command(resume=decision), []
                # Only our own events stream; whether the graph paused for approval is read
                # once from its state afterwards, rather than from an update per superstep.
                segment = self._graph.astream(
                    payload, config, context=ctx, stream_mode="custom", durability=self.durability
                )
                async with contextlib.aclosing(segment) as events:
                    async for event in events:
                        rec.event(event)
                        yield event
                ctx.writer = None  # until the next segment: events of calls are held
                snapshot = await self._graph.aget_state(config)
                pending = list(snapshot.interrupts)
                if not pending:
                    break
            await ctx.settle()
            for event in _held(ctx, rec):
                yield event
        except Exception as exc:  # every failure ends the run visibly, never silently
            async for event in self._fail(exc, config, ctx, rec):
                yield event
            return
        state = snapshot.values
        yield await rec.final(state.get("status") or "error", state.get("answer"), state)

    async def _fail(
        self, exc: Exception, config: dict[str, Any], ctx: Any, rec: RunRecorder
    ) -> AsyncIterator[Event]:
        """A ``RunError`` and a ``Final`` with the counters the run had reached."""
        if not isinstance(exc, AgentError):  # a bug or an unexpected failure: keep the trace
            _log.error("run %s failed", ctx.run_id, exc_info=exc)
        with contextlib.suppress(Exception):
            await ctx.settle()
        try:
            state = dict((await self._graph.aget_state(config)).values)
        except Exception:
            state = {}
        state["error"] = str(exc) or type(exc).__name__
        error = RunError(ctx.run_id, error_kind(exc), type(exc).__name__, state["error"])
        rec.event(error)
        yield error
        yield await rec.final("error", None, state, exc)

    # --- resources --------------------------------------------------------------------

    def derive(self, **changes: Any) -> Agent:
        """An agent sharing this one's model, databases and compiled graph, with some
        settings changed (``limits``, ``policies``, ``sampling``, ``system``,
        ``output_schema``, ``approval``, ``tools``…). Open this agent first (:meth:`open`);
        close only this one. ``agent.derive(limits=Limits(max_steps=2))``"""
        unknown = set(changes) - set(vars(self))
        if unknown or any(name.startswith("_") for name in changes):
            raise TypeError(f"cannot derive with {sorted(changes)}: unknown or private")
        clone = copy.copy(self)
        clone.__dict__.update(changes)
        return clone

    async def open(self) -> None:
        """Open the databases and compile the graph now (else the first run does)."""
        await self._open()

    def _observer(self, run_id: str) -> Any:
        if self.tracer is None:
            return None
        from agent.tracing import RunSpans

        record = self._runs.get(run_id) if self._runs is not None else None
        earlier = record.trace_id if record is not None else None
        return RunSpans(self.tracer, run_id, self._task_name(), self.backend, earlier)

    async def _open(self) -> None:
        """Open the checkpointer, store and run store once; compile the graph once."""
        async with self._open_lock:
            if self._graph is not None:
                return
            _check_store_is_hidden(self.store, self.policies, self.tools)
            from tools.sandbox import check_workspace

            check_workspace(Path(self.policies.workspace), self.tools)  # no code in reach
            from agent.persistence import open_persistence
            from graphs.react import build_graph

            stack = AsyncExitStack()
            checkpointer, store = await open_persistence(self.store, stack)
            self._graph = build_graph(checkpointer=checkpointer, store=store)
            from agent.runs import open_run_store

            self._runs = open_run_store(self.store)
            self._resources = stack

    async def _context(self, run_id: str, stack: AsyncExitStack, *, resumed: bool) -> Any:
        from graphs.state import RunContext
        from tools.dispatch import Dispatcher

        if self.store.folder is not None:
            artifacts = self.store.folder / "artifacts" / run_id
        else:  # nothing persists: artifacts live as long as the machine's temp files
            artifacts = Path(tempfile.gettempdir()) / "agent-artifacts" / run_id
        dispatcher = Dispatcher(self.tools, self.policies, run_id=run_id, artifacts_dir=artifacts)
        stack.push_async_callback(dispatcher.aclose)
        if self.task is not None and self.task.services:
            from agent.services import run_services

            await stack.enter_async_context(run_services(self.task.services, self.task.base_dir))
        ctx = RunContext(
            run_id=run_id,
            backend=self.backend,
            tools=self.tools,
            dispatcher=dispatcher,
            limits=self.limits,
            sampling=self.sampling,
            output_schema=self.output_schema,
            approval=self.approval,
            constrained_tool_calls=self.constrained_tool_calls,
            constrained_repair=self.constrained_repair,
            tool_choice=self.tool_choice,
            resumed=resumed,
        )
        # Runs before the dispatcher closes (LIFO): calls still running are cancelled, and
        # nothing they return from a closing sandbox is saved as a result to reuse.
        stack.push_async_callback(ctx.close)
        return ctx

    async def aclose(self) -> None:
        """Close the backend's connections and the databases."""
        await self.backend.aclose()
        if self._resources is not None:
            await self._resources.aclose()
            self._resources, self._graph = None, None

    async def __aenter__(self) -> Agent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def first_prompt(self, input: str | None = None) -> str:
        """The exact text of the run's first completions prompt (``agent prompt TASK``)."""
        from agent import chatml
        from agent.messages import to_messages

        text = input if input is not None else self._default_input()
        state = self._turn(text, "", [])
        return chatml.render(to_messages(state["messages"]), self.tools.specs())

    # --- small helpers ----------------------------------------------------------------

    async def _plan(
        self, input: str | None, thread_id: str | None, run_id: str | None, resume: bool
    ) -> _Plan:
        """Which thread the run belongs to, and whether it continues or starts a turn."""
        if run_id is not None:
            thread = self._thread_of(run_id)
            snapshot = await self._graph.aget_state(_config(thread))
            current = snapshot.values.get("run_id", thread)  # one-turn threads: the run's id
            if snapshot.values and current == run_id:
                self._check_same_task(run_id)
                return _Plan(run_id, thread, snapshot, None)
            if snapshot.values:
                raise ConfigError(
                    f"run {run_id!r} is over: its thread {thread!r} went on with run {current!r}"
                )
            if resume:
                raise ConfigError(f"no run {run_id!r} to resume in {self.store!r}")
        run_id = run_id or _new_run_id()
        thread = thread_id or run_id
        snapshot = await self._graph.aget_state(_config(thread))
        if snapshot.next or snapshot.interrupts:
            raise ConfigError(
                f"thread {thread!r} has an unfinished run {snapshot.values.get('run_id')!r}: "
                "continue it (run_id=...) before starting another"
            )
        if snapshot.values:
            self._check_same_task(snapshot.values.get("run_id", thread))
        self._threads[run_id] = thread
        if len(self._threads) > _THREADS_KEPT:
            self._threads.popitem(last=False)
        messages = snapshot.values.get("messages", [])
        text = input if input is not None else self._default_input()
        return _Plan(run_id, thread, snapshot, self._turn(text, run_id, messages))

    def _turn(self, input: str, run_id: str, history: list[Any]) -> dict[str, Any]:
        """The state that starts a run: its input after the thread's history, and every
        per-run counter and outcome reset (limits hold per run)."""
        messages: list[Any] = []
        if self.system and not history:
            messages.append(SystemMessage(content=self.system))
        messages.append(HumanMessage(content=input))
        return {
            "messages": messages,
            "run_id": run_id,
            "run_start": len(history),
            "steps": 0,
            "tool_calls": 0,
            "repairs": 0,
            "output_retries": 0,
            "usage": {},
            "denied": [],
            # With no tools, the answer is the first thing the model writes: JSON mode
            # (the schema in the system turn, structured outputs) from the first call.
            "json_mode": self.output_schema is not None and len(self.tools) == 0,
            "constrain": False,
            "awaiting_approval": False,
            "limit": None,
            "status": None,
            "answer": None,
            "error": None,
        }

    def _thread_of(self, run_id: str) -> str:
        if run_id in self._threads:
            return self._threads[run_id]
        record = self._runs.get(run_id) if self._runs is not None else None
        return (record.thread_id if record is not None else None) or run_id

    async def history(self, thread_id: str) -> list[Message]:
        """The conversation of a thread (or of a one-turn run, by its id) so far."""
        from agent.messages import to_messages

        await self._open()
        snapshot = await self._graph.aget_state(_config(self._thread_of(thread_id)))
        return to_messages(snapshot.values.get("messages", []))

    def _check_same_task(self, run_id: str) -> None:
        """A run continues only under the task that started it (its tools, its policies):
        the same name and, when both came from files, the same file."""
        record = self._runs.get(run_id) if self._runs is not None else None
        if record is None:
            return
        task = self.task
        path = task.path if task is not None else None
        if record.task_path is not None and task is not None and path is not None:
            same = Path(record.task_path).resolve() == path.resolve()
            same = same and task.name in (None, record.task)
        else:
            same = record.task == self._row_task()
        if not same:
            started = f" ({record.task_path})" if record.task_path else ""
            now = f" ({path})" if path else ""
            raise ConfigError(
                f"run {run_id!r} belongs to task {record.task!r}{started}, not "
                f"{self._row_task()!r}{now}: resume it with the task file that started it"
            )

    def _row_task(self) -> str:
        return self._task_name() or RunRecorder.API_TASK

    def _default_input(self) -> str:
        if self.task is None:
            raise ConfigError("no input: pass agent.run(input) (or build the agent from a task)")
        return self.task.render_input(self._vars)

    def _task_name(self) -> str | None:
        if self.task is None:
            return None
        return self.task.name or (str(self.task.path) if self.task.path else None)

    def _model_url(self) -> str | None:
        urls = getattr(self.backend, "urls", None)
        return ", ".join(urls) if urls else type(self.backend).__name__


@dataclass(frozen=True)
class _Plan:
    """A run about to go: its thread, the thread's state, and what to feed the graph
    (``None``: continue the run from its checkpoint)."""

    run_id: str
    thread_id: str
    snapshot: Any
    payload: dict[str, Any] | None

    @property
    def config(self) -> dict[str, Any]:
        return _config(self.thread_id)


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def _http_backend(urls: str | Sequence[str], model: Any = None) -> Backend:
    """A vLLM backend for ``urls``, configured by a task's ``model:`` section if given."""
    from agent.llm.vllm import VLLMBackend, VLLMConfig

    url_list = (urls,) if isinstance(urls, str) else tuple(urls)
    if model is None:
        return VLLMBackend(url_list)
    return VLLMBackend(
        url_list,
        config=VLLMConfig(
            urls=url_list,
            model=model.name,
            mode=model.mode,
            timeout_s=model.timeout_s,
            kv_budget=model.kv_budget,
        ),
    )


def _check_store_is_hidden(store: StoreLocation, policies: ToolPolicies, tools: Any) -> None:
    """Refuse a run store inside the workspace when file or SQL tools could read it.

    Traces hold every prompt of every run, and the checkpoint files a run's state: a
    model that can read (or write) them crosses from one run into another.
    """
    folder = store.folder
    if folder is None or not any(t.sandbox == "process" for t in tools):
        return
    workspace = Path(policies.workspace).resolve()
    if folder.resolve().is_relative_to(workspace):
        raise ConfigError(
            f"store: the run store {str(folder)!r} is inside the workspace {str(workspace)!r}, "
            "where the file and SQL tools could read other runs' traces and checkpoints; "
            "set store: to a folder outside the workspace, or workspace: to a subfolder "
            "(e.g. workspace: data)"
        )


def _held(ctx: Any, rec: RunRecorder) -> list[Event]:
    """Events of calls that finished between two segments of the graph, recorded, for the
    run to yield now (see ``RunContext.emit``)."""
    events = ctx.take_held()
    for event in events:
        rec.event(event)
    return events


async def _decide(approve: Approver | str | None, request: ApprovalRequest) -> Any:
    if approve is None:
        return None
    if approve in ("all", "none"):
        return approve == "all"
    decision = approve(request)  # type: ignore[operator]
    return await decision if inspect.isawaitable(decision) else decision


def _new_run_id() -> str:
    """Sortable by start time: ``run_20261126T143000_3f2a9c81d07e``. The random tail has 48
    bits: with 24, two of 500 runs started in one second shared an id about once in 130
    (an HTTP 500 from ``agent serve``; in-process, the second run would have continued the
    first's)."""
    return time.strftime("run_%Y%m%dT%H%M%S_", time.gmtime()) + uuid.uuid4().hex[:12]
