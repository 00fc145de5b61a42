"""The page's event handlers: thin coroutines between Gradio components and the engine.

Each handler reads component values, asks the :class:`~agent.ui.engine.Engine`, and
returns (or, while a turn runs, yields) what the components show, from a
:class:`~agent.ui.screen.Screen`. A turn is a chain of events: (Send only: the browser
gathers the message and the settings), ``begin`` (instant: clear the message box, Send
off, Stop on), the streaming one (the conversation, its id, the status line, the
metrics: four outputs, so each update costs Gradio little), then ``outcome`` (approval,
Resume, the JSON answer, the trace to download). Streaming
handlers only *watch* a turn: closing the page does not stop a run; Stop does.

The page's API (``gradio_client``): ``/send``, ``/resume``, ``/approve``, ``/deny`` stream
``(chat, conversation id, status, metrics)``; ``/outcome`` gives the turn's ``(calls
awaiting approval, JSON answer, its status, trace file)``; ``/stop``, ``/attach``,
``/new_conversation``, ``/check_model``, ``/check_schema``, ``/load_task``, ``/history``.
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
from agent.ui.settings import Settings, model_status, schema_problem

__all__ = ["BURST_S", "UPDATE_INTERVAL_S", "Handlers"]

UPDATE_INTERVAL_S = 0.03
"""Least time between two updates of a running turn; tokens in between coalesce. Gradio
queues every update for the browser, so updates sent faster than a browser renders
them (~20-30 ms each here) pile up and lag; this keeps the stream ahead of it."""
BURST_S = 0.008
"""How long a change waits for the rest of its burst (a fast server sends many tokens at
once: one update for them, not two)."""
_LEEWAY = 2.0
# Gradio's browser keeps a loading status for each output of every event the page has
# run, and for each input of every server event that has ended, and re-renders them all
# on every streamed update (~35 components here: most of a token's way to the screen).
# No event shows progress, so none names outputs to show it on; and Send's inputs (the
# left column) are gathered in the browser (_GATHER_JS), so the set stays a few components.
_QUIET: dict[str, Any] = {"show_progress": "hidden", "show_progress_on": ()}
_STREAM: dict[str, Any] = {"concurrency_limit": None, **_QUIET}
_PRIVATE: dict[str, Any] = {**_STREAM, "api_visibility": "private"}
_INSTANT: dict[str, Any] = {"queue": False, **_QUIET, "api_visibility": "private"}
_GATHER_JS = "(...values) => [values]"


class Handlers:
    """The page's behaviour; :meth:`wire` attaches it to the components."""

    def __init__(self, engine: Engine, config: PageConfig, components: Any) -> None:
        self.engine, self.config, self.c = engine, config, components

    # --- wiring -------------------------------------------------------------------------

    def wire(self, page: gr.Blocks) -> None:
        """Attach every handler to its components and events."""
        history = [self.c.conversations, self.c.runs]  # first: it owns the name /history
        page.load(self.history, None, history, api_name="history", **_STREAM)
        self._wire_turns()
        self._wire_conversations(page)
        self._wire_left(page)

    def _settings_inputs(self) -> list[Any]:
        c = self.c
        return [c.mode, c.system, c.tools, c.schema, c.temperature, c.top_p, c.max_tokens]

    def _wire_turns(self) -> None:
        c = self.c
        live, settings = self._live_outputs(), self._settings_inputs()
        begun = [c.send, c.stop, c.approval_group, c.resume]
        send_inputs = [c.pending, c.thread, *settings, c.seed, c.tool_choice, c.model_url]
        # The page's Send: the browser gathers the message and the settings into one hidden
        # value, so that no event of a turn reads a visible component (see _QUIET).
        chains = [
            gr.on(
                [c.send.click, c.message.submit],
                None,
                [c.message, *send_inputs[2:]],
                [c.request],
                js=_GATHER_JS,
                api_visibility="private",
            )
            .then(self.begin, [c.request, c.thread], [c.message, c.pending, *begun], **_INSTANT)
            .then(self.send_request, [c.pending, c.thread, c.request], live, **_PRIVATE),
            # The API's /send: the same turn from its arguments.
            c.api_send.click(self.send, send_inputs, live, api_name="send", **_STREAM),
        ]
        for button, fn in ((c.resume, self.resume), (c.approve, self.approve), (c.deny, self.deny)):
            chains.append(
                button.click(self.begin_continue, None, begun, **_INSTANT).then(
                    fn, [c.thread], live, api_name=fn.__name__, **_STREAM
                )
            )
        # Not the status line: the stopped turn's own last update says how it ended.
        c.stop.click(self.stop, [c.thread], [c.stop_reply], api_name="stop", **_STREAM)
        outcome, history = self._outcome_outputs(), [c.conversations, c.runs]
        chains[1].then(self.outcome, [c.thread], outcome, api_name="outcome", **_STREAM)
        for chain in chains[:1] + chains[2:]:
            chain.then(self.outcome, [c.thread], outcome, **_PRIVATE)
        for chain in chains:
            chain.then(self.history, None, history, **_PRIVATE)

    def _wire_conversations(self, page: gr.Blocks) -> None:
        c = self.c
        live, outcome = self._live_outputs(), self._outcome_outputs()
        history = [c.conversations, c.runs]
        c.thread.change(None, [c.thread], None, js=_URL_JS, api_visibility="private")
        page.load(
            self.attach, [c.thread], live, js=_THREAD_FROM_URL_JS, api_name="attach", **_STREAM
        ).then(self.outcome, [c.thread], outcome, **_PRIVATE)
        c.conversations.input(self.attach, [c.conversations], live, **_PRIVATE).then(
            self.outcome, [c.thread], outcome, **_PRIVATE
        )
        c.refresh.click(self.history, None, history, **_PRIVATE)
        c.new.click(self.new_conversation, None, live, api_name="new_conversation", **_STREAM).then(
            self.outcome, [c.thread], outcome, **_PRIVATE
        )

    def _wire_left(self, page: gr.Blocks) -> None:
        c = self.c
        model = ([c.model_url], [c.model_status, c.banner, c.max_tokens])
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
            [*self._settings_inputs(), c.seed, c.message, c.task_status],
            api_name="load_task",
            **_STREAM,
        )

    def _live_outputs(self) -> list[Any]:
        return [self.c.chat, self.c.thread, self.c.status, self.c.metrics]

    def _outcome_outputs(self) -> list[Any]:
        c = self.c
        return [
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

    # --- turns --------------------------------------------------------------------------

    def begin(self, request: list[Any], thread: str) -> tuple[Any, ...]:
        """A turn starts (instantly, in the browser's request): the message (the first of
        ``request``) moves out of the box; Send goes off and Stop on. While the
        conversation has a turn running, nothing is sent and the message stays."""
        if thread and self.engine.running(thread) is not None:
            return (gr.skip(), "", *([gr.skip()] * 4))
        return ("", request[0], *self.begin_continue())

    def begin_continue(self) -> tuple[Any, ...]:
        """Resume, Approve or Deny: Send off, Stop on, the approval box and Resume hidden."""
        hide = gr.update(visible=False)
        return (gr.update(interactive=False), gr.update(interactive=True), hide, hide)

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
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Send a message (a new conversation when ``thread`` is empty) and stream the turn."""
        values = (mode, system, tools, schema, temperature, top_p, max_tokens, seed)
        values += (tool_choice, model_url)
        if not (message or "").strip():
            yield _live(await self._screen(thread))
            return
        new = not thread
        thread = thread or new_thread_id()
        try:
            settings = _settings(values)
        except ConfigError as exc:
            (await self.engine.view(thread, new=new)).refused(message, str(exc))
            yield _live(await self._screen(thread))
            return
        turn = await self.engine.start(thread, settings, input=message, new=new)
        async for update in self._watch(turn):
            yield update

    async def send_request(
        self, message: str, thread: str, request: list[Any]
    ) -> AsyncIterator[tuple[Any, ...]]:
        """:meth:`send` with the settings the page gathered (``request``: the message
        box, then :meth:`send`'s settings in order)."""
        async for update in self.send(message, thread, *request[1:]):
            yield update

    async def resume(self, thread: str) -> AsyncIterator[tuple[Any, ...]]:
        """Continue the conversation's interrupted run from its last checkpoint."""
        async for update in self._continue(thread, None):
            yield update

    async def approve(self, thread: str) -> AsyncIterator[tuple[Any, ...]]:
        """Run the calls waiting for approval, and stream the rest of the run."""
        async for update in self._continue(thread, True):
            yield update

    async def deny(self, thread: str) -> AsyncIterator[tuple[Any, ...]]:
        """Refuse the calls waiting for approval (the model is told), and stream on."""
        async for update in self._continue(thread, False):
            yield update

    async def _continue(self, thread: str, approve: bool | None) -> AsyncIterator[tuple[Any, ...]]:
        view = await self.engine.view(thread) if thread else None
        last = view.last_run if view is not None else None
        if last is None or last.run_id is None:
            yield _live(await self._screen(thread))
            return
        turn = await self.engine.start(thread, None, run_id=last.run_id, approve=approve)
        async for update in self._watch(turn):
            yield update

    async def stop(self, thread: str) -> str:
        """Stop the conversation's running turn (the run ends ``interrupted``)."""
        return "Stopping…" if thread and self.engine.stop(thread) else "Nothing is running."

    async def attach(self, thread: str) -> AsyncIterator[tuple[Any, ...]]:
        """Show a conversation (page load, reload, the history list); follow its running
        turn, if any, to the end."""
        thread = (thread or "").strip()
        turn = self.engine.running(thread) if thread else None
        if turn is None:
            yield _live(await self._screen(thread))
            return
        async for update in self._watch(turn):
            yield update

    async def new_conversation(self) -> tuple[Any, ...]:
        """An empty conversation (its id is made when the first message is sent)."""
        return _live(Screen(thread_id=""))

    async def _watch(self, turn: Turn) -> AsyncIterator[tuple[Any, ...]]:
        """The turn's screens as it runs, then its last one.

        Changes coalesce: each update first waits ``BURST_S`` for the rest of a burst,
        and updates are paced to one per ``UPDATE_INTERVAL_S`` on average, with a
        leeway of one (the question, then its first tokens, go at once).
        """
        allowance, stamp = _LEEWAY, time.monotonic()
        async for _ in turn.updates():
            if turn.done:
                break
            await turn.pause(BURST_S)
            allowance = min(_LEEWAY, allowance + (time.monotonic() - stamp) / UPDATE_INTERVAL_S)
            if allowance < 1.0:
                await turn.pause((1.0 - allowance) * UPDATE_INTERVAL_S)
                allowance = 1.0
            if turn.done:
                break
            allowance, stamp = allowance - 1.0, time.monotonic()
            yield _live(screen(turn.view, turn.thread_id, running=True, notice=turn.notice))
        yield _live(screen(turn.view, turn.thread_id, running=False, notice=turn.notice))

    async def outcome(self, thread: str) -> tuple[Any, ...]:
        """How the conversation's last turn stands: calls awaiting approval, Resume, the
        JSON answer and its status, its trace to download."""
        s = await self._screen(thread)
        download = await self.engine.trace_file(s.trace_path) if not s.running else None
        return (
            gr.update(visible=s.approval is not None),
            s.approval or "",
            gr.update(visible=s.can_resume),
            gr.update(interactive=s.running),
            gr.update(interactive=not s.running),
            gr.update(visible=True) if s.json_text is not None else gr.skip(),
            s.json_text or "",
            s.json_status or "",
            gr.update(value=download, interactive=True) if download else gr.skip(),
        )

    async def _screen(self, thread: str) -> Screen:
        if not thread:
            return Screen(thread_id="")
        turn = self.engine.running(thread)
        return screen(await self.engine.view(thread), thread, running=turn is not None)

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
            gr.update(interactive=not chat),
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


def _live(s: Screen) -> tuple[Any, ...]:
    """The streamed outputs of a Screen: chat, conversation id, status, metrics."""
    return (s.messages, s.thread_id, s.status, s.metrics)


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
