"""The page's server side: agents, running turns and conversations, on the async API.

The page has no agent loop of its own. A turn is one ``Agent.stream`` (a new input, a
resumed run, or an approval decision) consumed by an asyncio task that folds each event
into the conversation's :class:`~agent.ui.view.ChatView`; page handlers only watch it
(:meth:`Turn.updates`), so a reloaded or second page can watch the same turn, and a page
that goes away does not stop the run. Stop cancels the task: the core marks the run
``interrupted`` and it can be resumed.

One :class:`~agent.Agent` serves every session that uses the same configuration
(:func:`agent.ui.settings.task_for`): its graph, connections and checkpoint database are
shared. Conversations are LangGraph threads in the same run store as ``agent run`` and
``agent runs``; a conversation not in memory is rebuilt from its runs' traces. Reading
the run store or a trace happens in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.api import Agent
from agent.errors import AgentError
from agent.events import RunStarted
from agent.llm.base import Backend
from agent.persistence import store_location
from agent.task import Task
from agent.ui.replay import trace_events
from agent.ui.settings import Settings, task_for
from agent.ui.view import ChatView

__all__ = ["Conversation", "Engine", "Turn", "new_thread_id"]


def new_thread_id() -> str:
    """A fresh conversation id, sortable by start: ``ui_20261130T071200_3f2a9c1b``."""
    return time.strftime("ui_%Y%m%dT%H%M%S_", time.gmtime()) + uuid.uuid4().hex[:8]


class Turn:
    """One ``Agent.stream`` folding into a view; watch it with :meth:`updates`."""

    def __init__(self, thread_id: str, view: ChatView, agent_key: str) -> None:
        self.thread_id, self.view, self.agent_key = thread_id, view, agent_key
        self.done = False
        self.notice: str | None = None
        """Why the turn did not start, when the conversation was busy (its view is
        left as it was)."""
        self.started_at = time.time()
        self._tick = asyncio.Event()
        self._over = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, stream: AsyncIterator[Any], input: str | None) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(stream, input))

    async def _run(self, stream: AsyncIterator[Any], input: str | None) -> None:
        started = False
        try:
            async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
                async for event in events:
                    started = started or isinstance(event, RunStarted)
                    self.view.apply(event)
                    self._notify()
        except asyncio.CancelledError:
            if started:
                self.view.interrupted()
            else:
                self.view.refused(input, "Stopped before the run started.")
        except Exception as exc:  # before the run started (after, the core reports it)
            message = str(exc) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"
            self.view.refused(input, message)
        finally:
            self.done = True
            self._over.set()
            self._notify()

    def _notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def updates(self) -> AsyncIterator[None]:
        """Yield once now, then after each change (changes in between coalesce), until
        the turn is over. A slow watcher skips states, never the last one."""
        while True:
            tick = self._tick
            yield
            if self.done:
                return
            await tick.wait()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the turn ends meanwhile."""
        if not self.done and seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._over.wait(), seconds)

    def cancel(self) -> bool:
        """Stop the run (it ends ``interrupted``); False if it was already over."""
        if self._task is None or self.done:
            return False
        self._task.cancel()
        return True

    async def wait(self) -> None:
        """Until the turn is over."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)


@dataclass(frozen=True)
class Conversation:
    """A thread in the run store, for the side panel."""

    thread_id: str
    title: str
    started_at: float
    turns: int
    status: str

    def label(self) -> str:
        when = time.strftime("%m-%d %H:%M", time.localtime(self.started_at))
        title = " ".join(self.title.split())
        title = title if len(title) <= 48 else title[:47] + "…"
        return f"{when} · {self.turns} turn{'s' if self.turns != 1 else ''} · {title}"


class Engine:
    """Agents by configuration, turns by conversation, views of conversations."""

    def __init__(
        self,
        base: Task,
        *,
        model_url: str = "",
        backend: Callable[[str], Backend] | None = None,
        max_agents: int = 8,
        max_views: int = 64,
    ) -> None:
        self.base = base
        self.defaults = _defaults(base, model_url)
        """Settings for a turn that brings none and whose conversation has none in memory
        (Resume / Approve after a restart): the server's task, its model URL."""
        self.store_folder = store_location(base.store).folder
        self._backend = backend
        self._max_agents, self._max_views = max_agents, max_views
        self._agents: OrderedDict[str, Agent] = OrderedDict()
        self._turns: dict[str, Turn] = {}
        self._views: OrderedDict[str, ChatView] = OrderedDict()
        self._settings: dict[str, Settings] = {}  # thread -> settings of its last turn
        self._tmp = Path(tempfile.mkdtemp(prefix="agent-ui-"))
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's, once it is used

    # --- turns ------------------------------------------------------------------------

    async def start(
        self,
        thread_id: str,
        settings: Settings | None,
        *,
        input: str | None = None,
        run_id: str | None = None,
        approve: bool | None = None,
        new: bool = False,
    ) -> Turn:
        """Start a turn: answer ``input``, or continue ``run_id`` (``approve``: the
        decision on its waiting calls). ``settings=None`` reuses the thread's last;
        ``new``: the conversation was just made (nothing to rebuild)."""
        view = await self.view(thread_id, new=new)
        settings = settings or self._settings.get(thread_id) or self.defaults
        turn = Turn(thread_id, view, "")
        if self.running(thread_id) is not None:
            turn.notice = "Not sent: this conversation has a turn running (in another tab?)."
            turn.done = True
            return turn
        self._turns[thread_id] = turn  # before any await: a second start sees it
        try:
            agent, turn.agent_key = await self._agent(settings)
        except (AgentError, ValueError) as exc:  # a bad setting (pydantic's errors too)
            view.refused(input, str(exc))
            turn.done = True
            return turn
        self._settings[thread_id] = settings
        stream = agent.stream(
            input,
            thread_id=None if run_id else thread_id,
            run_id=run_id,
            resume=run_id is not None,
            approve=None if approve is None else ("all" if approve else "none"),
        )
        turn.start(stream, input)
        return turn

    def running(self, thread_id: str) -> Turn | None:
        """The conversation's turn in progress, if any."""
        turn = self._turns.get(thread_id)
        return turn if turn is not None and not turn.done else None

    def stop(self, thread_id: str) -> bool:
        """Cancel the conversation's running turn; False when none was running."""
        turn = self._turns.get(thread_id)
        return turn is not None and turn.cancel()

    async def _agent(self, settings: Settings) -> tuple[Agent, str]:
        task = task_for(self.base, settings)
        key = json.dumps(task.model_dump(mode="json"), sort_keys=True, default=str)
        agent = self._agents.get(key)
        if agent is None:
            backend = self._backend(settings.check_url()) if self._backend else None
            agent = Agent.from_task(task, backend=backend)
            self._agents[key] = agent
            await self._evict()
        self._agents.move_to_end(key)
        return agent, key

    async def _evict(self) -> None:
        busy = {t.agent_key for t in self._turns.values() if not t.done}
        for key in list(self._agents)[: -self._max_agents]:
            if key not in busy:
                await self._agents.pop(key).aclose()

    # --- conversations ----------------------------------------------------------------

    async def view(self, thread_id: str, *, new: bool = False) -> ChatView:
        """The conversation as shown: in memory, else rebuilt from its runs' traces
        (``new``: a conversation just made, with nothing to rebuild)."""
        self._loop = asyncio.get_running_loop()
        view = self._views.get(thread_id)
        if view is None:
            view = ChatView() if new else await asyncio.to_thread(self._replay, thread_id)
            self._views[thread_id] = view
            busy = {t for t, turn in self._turns.items() if not turn.done}
            for old in list(self._views)[: -self._max_views]:
                if old not in busy:
                    self._views.pop(old)
        self._views.move_to_end(thread_id)
        return view

    def _replay(self, thread_id: str) -> ChatView:
        view = ChatView()
        records = [r for r in self._records(1000) if (r.thread_id or r.run_id) == thread_id]
        for record in sorted(records, key=lambda r: r.started_at):
            try:
                from agent.runs import read_trace

                for event, ts in trace_events(read_trace(record.trace_path or "")):
                    view.apply(event, ts)
            except Exception as exc:  # an unreadable trace still shows the others
                view.refused(None, f"run {record.run_id}: trace unreadable ({exc})")
            last = view.last
            if (
                last is not None
                and last.run_id == record.run_id
                and (record.status, last.status) == ("interrupted", "running")
            ):
                view.interrupted("Interrupted")
        return view

    def _records(self, limit: int) -> list[Any]:
        if self.store_folder is None or not (self.store_folder / "runs.db").is_file():
            return []
        from agent.runs import RunStore

        return RunStore(self.store_folder / "runs.db").list(limit=limit)

    async def runs(self, limit: int = 50) -> list[Any]:
        """The newest runs of the store (``RunRecord``), as ``agent runs list`` shows them."""
        return await asyncio.to_thread(self._records, limit)

    async def conversations(self, limit: int = 30) -> list[Conversation]:
        """Past conversations, newest first."""
        return await asyncio.to_thread(self._conversations, limit)

    def _conversations(self, limit: int) -> list[Conversation]:
        threads: dict[str, list[Any]] = {}
        for record in self._records(1000):
            threads.setdefault(record.thread_id or record.run_id, []).append(record)
        out = []
        for thread_id, records in list(threads.items())[:limit]:
            first, last = records[-1], records[0]
            out.append(
                Conversation(
                    thread_id, _first_input(first), first.started_at, len(records), last.status
                )
            )
        return out

    async def trace_file(self, trace_path: str | None) -> str | None:
        """A copy of a run's trace to download (the run's own file keeps growing)."""
        if not trace_path or not Path(trace_path).is_file():
            return None
        target = self._tmp / Path(trace_path).name
        await asyncio.to_thread(shutil.copyfile, trace_path, target)
        return str(target)

    def close_from_thread(self, timeout_s: float = 30.0) -> None:
        """:meth:`aclose` on the server's event loop, from another thread (shutdown)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout_s)
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def aclose(self) -> None:
        """Stop running turns, close every agent, remove downloads."""
        for turn in list(self._turns.values()):
            turn.cancel()
            await turn.wait()
        while self._agents:
            await self._agents.popitem()[1].aclose()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _defaults(task: Task, model_url: str) -> Settings:
    s = task.model.sampling
    mode = "json" if task.output_schema else ("tools" if task.tools.enabled else "chat")
    return Settings(
        mode=mode,  # type: ignore[arg-type]
        system=task.system or "",
        tools=tuple(task.tools.enabled),
        schema=json.dumps(task.output_schema) if task.output_schema else "",
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
        seed=s.seed,
        model_url=model_url or task.model.urls()[0],
    )


def _first_input(record: Any) -> str:
    """The input of a conversation's first run (its trace's first line), for a title."""
    try:
        with open(record.trace_path or "", encoding="utf-8") as f:
            first = json.loads(f.readline())
        return str(first.get("input") or record.task)
    except (OSError, ValueError, AttributeError):
        return str(record.task)
