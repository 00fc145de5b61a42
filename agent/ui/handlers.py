"""The page's event handlers: thin coroutines between Gradio components and the engine.

Each handler reads component values, asks the :class:`~agent.ui.engine.Engine`, and
returns (or, while a turn runs, yields) what the components show, from a
:class:`~agent.ui.screen.Screen`. Streaming handlers only *watch* a turn: closing the page
does not stop a run; Stop does. Every handler is also an endpoint of the page's API
(``gradio_client``): ``/send``, ``/resume``, ``/approve``, ``/deny``, ``/stop``,
``/attach``, ``/new_conversation``, ``/check_model``, ``/check_schema``, ``/load_task``,
``/history``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr

from agent.errors import ConfigError
from agent.ui.engine import Engine, Turn, new_thread_id
from agent.ui.page import _THREAD_FROM_URL_JS, _URL_JS, PageConfig
from agent.ui.screen import Screen, screen
from agent.ui.settings import Settings, model_status, schema_problem, tool_choice_supported

__all__ = ["Handlers"]

_STREAM: dict[str, Any] = {"concurrency_limit": None, "show_progress": "hidden"}
_PRIVATE: dict[str, Any] = {**_STREAM, "api_visibility": "private"}


class Handlers:
    """The page's behaviour; :meth:`wire` attaches it to the components."""

    def __init__(self, engine: Engine, config: PageConfig, components: Any) -> None:
        self.engine, self.config, self.c = engine, config, components

    # --- wiring -------------------------------------------------------------------------

    def wire(self, page: gr.Blocks) -> None:
        c = self.c
        settings = [
            c.mode,
            c.system,
            c.tools,
            c.schema,
            c.temperature,
            c.top_p,
            c.max_tokens,
            c.seed,
            c.tool_choice,
            c.model_url,
        ]
        view = self._view_outputs()
        sent = gr.on(
            [c.send.click, c.message.submit],
            self.send,
            [c.message, c.thread, *settings],
            [*view, c.message],
            api_name="send",
            **_STREAM,
        )
        resumed = c.resume.click(self.resume, [c.thread], view, api_name="resume", **_STREAM)
        approved = c.approve.click(self.approve, [c.thread], view, api_name="approve", **_STREAM)
        denied = c.deny.click(self.deny, [c.thread], view, api_name="deny", **_STREAM)
        c.stop.click(self.stop, [c.thread], [c.status], api_name="stop", **_STREAM)
        history = [c.conversations, c.runs]
        page.load(self.history, None, history, api_name="history", **_STREAM)
        for event in (sent, resumed, approved, denied):
            event.then(self.history, None, history, **_PRIVATE)
        c.thread.change(None, [c.thread], None, js=_URL_JS, api_visibility="private")
        page.load(
            self.attach, [c.thread], view, js=_THREAD_FROM_URL_JS, api_name="attach", **_STREAM
        )
        c.conversations.input(self.attach, [c.conversations], view, **_PRIVATE)
        c.refresh.click(self.history, None, history, **_PRIVATE)
        c.new.click(self.new_conversation, None, view, api_name="new_conversation", **_STREAM)
        model = ([c.model_url], self._model_outputs())
        c.check_model.click(self.check_model, *model, api_name="check_model", **_STREAM)
        for trigger in (page.load, c.model_url.submit, c.model_url.blur):
            trigger(self.check_model, *model, **_PRIVATE)
        c.schema.change(
            self.check_schema, [c.schema], [c.schema_status], trigger_mode="always_last", **_STREAM
        )
        c.mode.change(
            self.mode_changed,
            [c.mode],
            [c.schema_group, c.json_group, c.tools, c.tool_choice],
            **_PRIVATE,
        )
        c.task_file.upload(
            self.load_task,
            [c.task_file],
            [*settings[:8], c.message, c.task_status],
            api_name="load_task",
            **_STREAM,
        )

    def _view_outputs(self) -> list[Any]:
        c = self.c
        return [
            c.chat,
            c.thread,
            c.status,
            c.metrics,
            c.approval_group,
            c.approval_text,
            c.resume,
            c.stop,
            c.send,
            c.json_group,
            c.json_out,
            c.json_status,
            c.download,
        ]

    def _model_outputs(self) -> list[Any]:
        return [self.c.model_status, self.c.banner, self.c.max_tokens]

    # --- turns --------------------------------------------------------------------------

    async def send(
        self,
        message: str,
        thread: str,
        mode: str,
        system: str,
        tools: list[str],
        schema: str,
        temperature: float,
        top_p: float,
        max_tokens: float,
        seed: str,
        tool_choice: str,
        model_url: str,
    ) -> AsyncIterator[Any]:
        """Send a message (a new conversation when ``thread`` is empty) and stream the turn."""
        values = (mode, system, tools, schema, temperature, top_p, max_tokens, seed)
        values += (tool_choice, model_url)
        if not (message or "").strip():
            yield (*self._show(await self._screen(thread)), gr.skip())
            return
        thread = thread or new_thread_id()
        try:
            settings = _settings(values)
        except ConfigError as exc:
            (await self.engine.view(thread)).refused(message, str(exc))
            yield (*self._show(await self._screen(thread)), "")
            return
        turn = await self.engine.start(thread, settings, input=message)
        first = True
        async for update in self._watch(turn):
            yield (*update, "" if first else gr.skip())
            first = False

    async def resume(self, thread: str) -> AsyncIterator[Any]:
        """Continue the conversation's interrupted run from its last checkpoint."""
        async for update in self._continue(thread, None):
            yield update

    async def approve(self, thread: str) -> AsyncIterator[Any]:
        """Run the calls waiting for approval, and stream the rest of the run."""
        async for update in self._continue(thread, True):
            yield update

    async def deny(self, thread: str) -> AsyncIterator[Any]:
        """Refuse the calls waiting for approval (the model is told), and stream on."""
        async for update in self._continue(thread, False):
            yield update

    async def _continue(self, thread: str, approve: bool | None) -> AsyncIterator[Any]:
        view = await self.engine.view(thread) if thread else None
        last = view.last_run if view is not None else None
        if last is None or last.run_id is None:
            yield self._show(await self._screen(thread))
            return
        turn = await self.engine.start(thread, None, run_id=last.run_id, approve=approve)
        async for update in self._watch(turn):
            yield update

    async def stop(self, thread: str) -> str:
        """Stop the conversation's running turn (the run ends ``interrupted``)."""
        return "Stopping…" if thread and self.engine.stop(thread) else "Nothing is running."

    async def attach(self, thread: str) -> AsyncIterator[Any]:
        """Show a conversation (page load, reload, the history list); follow its running
        turn, if any, to the end."""
        thread = (thread or "").strip()
        turn = self.engine.running(thread) if thread else None
        if turn is None:
            yield self._show(await self._screen(thread))
            return
        async for update in self._watch(turn):
            yield update

    async def new_conversation(self) -> tuple[Any, ...]:
        """An empty conversation (its id is made when the first message is sent)."""
        return self._show(Screen(thread_id=""))

    async def _watch(self, turn: Turn) -> AsyncIterator[tuple[Any, ...]]:
        async for _ in turn.updates():
            yield self._show(screen(turn.view, turn.thread_id, running=not turn.done))
        final = screen(turn.view, turn.thread_id, running=False)
        yield self._show(final, download=await self.engine.trace_file(final.trace_path))

    async def _screen(self, thread: str) -> Screen:
        if not thread:
            return Screen(thread_id="")
        turn = self.engine.running(thread)
        return screen(await self.engine.view(thread), thread, running=turn is not None)

    def _show(self, s: Screen, download: str | None = None) -> tuple[Any, ...]:
        """The view outputs for a Screen, in :meth:`_view_outputs` order."""
        json_visible = gr.update(visible=True) if s.json_text is not None else gr.skip()
        return (
            s.messages,
            s.thread_id,
            s.status,
            s.metrics,
            gr.update(visible=s.approval is not None),
            s.approval or "",
            gr.update(visible=s.can_resume),
            gr.update(interactive=s.running),
            gr.update(interactive=not s.running),
            json_visible,
            s.json_text or "",
            s.json_status or "",
            gr.update(value=download, interactive=True) if download else gr.skip(),
        )

    # --- left column --------------------------------------------------------------------

    async def check_model(self, url: str) -> tuple[Any, ...]:
        """The model's status; the simulated banner shows while the URL is the simulator's."""
        status = await model_status(url)
        simulated = bool(self.config.simulated) and url.strip().rstrip("/") == (
            self.config.model_url.rstrip("/")
        )
        longest = gr.skip()
        if status.max_model_len:
            longest = gr.update(maximum=max(16, min(status.max_model_len, 32768)))
        return status.text(simulated), gr.update(visible=simulated), longest

    async def check_schema(self, text: str) -> str:
        """The schema editor's status, as you type."""
        problem = schema_problem(text or "")
        return f"invalid: {problem}" if problem else "valid JSON Schema"

    async def mode_changed(self, mode: str) -> tuple[Any, ...]:
        json_mode, chat = mode == "json", mode == "chat"
        return (
            gr.update(visible=json_mode),
            gr.update(visible=json_mode),
            gr.update(interactive=not chat),
            gr.update(interactive=not chat and tool_choice_supported()),
        )

    async def load_task(self, file: Any) -> tuple[Any, ...]:
        """Fill the left column from a task file: its system prompt, tools, sampling,
        schema and input. Policies, services and the store stay the server's."""
        from agent.ui.taskfile import read_task_file

        try:
            loaded = await asyncio.to_thread(read_task_file, Path(str(file)))
        except ConfigError as exc:
            return (*[gr.skip()] * 9, f"not loaded: {exc}"[:2000])
        mode, system, tools, schema, *rest = loaded
        return (mode, system, tools, schema or gr.skip(), *rest)

    async def history(self) -> tuple[Any, Any]:
        """Past conversations and runs from the run store."""
        conversations = await self.engine.conversations()
        runs = await self.engine.runs()
        rows = [
            [
                r.short_id,
                (r.thread_id or r.run_id)[-8:],
                r.status,
                r.steps,
                r.tool_calls,
                r.usage.total_tokens,
                time.strftime("%m-%d %H:%M:%S", time.localtime(r.started_at)),
            ]
            for r in runs
        ]
        choices = [(conv.label(), conv.thread_id) for conv in conversations]
        return gr.update(choices=choices, value=None), rows


def _settings(values: tuple[Any, ...]) -> Settings:
    mode, system, tools, schema, temperature, top_p, max_tokens, seed, choice, url = values
    return Settings(
        mode=mode or "tools",
        system=system or "",
        tools=tuple(tools or ()),
        schema=schema or "",
        temperature=None if temperature is None else float(temperature),
        top_p=None if top_p is None else float(top_p),
        max_tokens=int(max_tokens or 1024),
        seed=_seed(seed),
        tool_choice=choice or "auto",
        model_url=url or "",
    )


def _seed(value: Any) -> int | None:
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"seed {text!r}: a whole number, or blank") from None
