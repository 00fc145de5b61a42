"""The conversation as the page shows it: a fold over the typed event stream.

:class:`ChatView` takes the same events the CLI prints (``agent.events``), one at a time,
and keeps what the page needs: the chat messages (user text, streamed answers, one
collapsible box per tool call, malformed calls, repairs, errors), each turn's metrics,
the calls waiting for approval and the JSON answer. The live page and a reloaded page
build it the same way: live from ``Agent.stream``, reloaded from the run's trace
(:mod:`agent.ui.replay`).

Untrusted text (the user's input, the model's output, tool output) is never live HTML.
Gradio's Chatbot sets a message's content as HTML even with markdown rendering off, so
:meth:`ChatView.messages` escapes every piece of text (``<`` becomes ``&lt;``) and the
page shows the characters as typed. Nothing here imports Gradio.

>>> from agent.events import RunStarted, TextDelta
>>> view = ChatView()
>>> view.apply(RunStarted("run_1", input="<b>hi</b>"))
>>> view.apply(TextDelta(1, "Hello"))
>>> [m["content"] for m in view.messages()]
['&lt;b&gt;hi&lt;/b&gt;', 'Hello']
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from typing import Any

from agent.events import (
    ApprovalRequest,
    Event,
    Final,
    RepairEvent,
    RunError,
    RunStarted,
    StepFinished,
    TextDelta,
    ToolCallEvent,
    ToolResultEvent,
)
from agent.types import RunResult, ToolCall, ToolResult

__all__ = ["METRIC_COLUMNS", "ChatView", "TurnMetrics", "escape"]

PREVIEW_CHARS = 4000
"""A tool result's preview in its box is cut here (the trace keeps it whole)."""


def escape(text: str) -> str:
    """Text as inert HTML: ``escape("<img src=x>") == "&lt;img src=x&gt;"``."""
    return html.escape(text, quote=False)


def _clip(text: str, n: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n:,} more characters)"


@dataclass
class _Text:
    """Streamed text of one step (or the user's input)."""

    role: str
    step: int
    parts: list[str] = field(default_factory=list)

    def render(self) -> dict[str, Any] | None:
        text = "".join(self.parts)
        if self.role == "assistant":  # as a trace keeps it (stripped), so reloads match
            text = text.strip()
            if not text:
                return None
        return {"role": self.role, "content": escape(text)}


@dataclass
class _Box:
    """A collapsible message: a tool call, a malformed call, a repair, a note."""

    title: str
    body: str
    log: str
    pending: bool = False
    duration: float | None = None
    failed: bool = False
    """A tool call that ended in error: its title says so (Gradio's ``status`` is only
    pending or done), its log says why (``error: arguments``)."""

    def render(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "title": escape(self.title + (" — error" if self.failed else "")),
            "status": "pending" if self.pending else "done",
            "log": self.log,
        }
        if self.duration is not None:
            meta["duration"] = round(self.duration, 3)
        return {"role": "assistant", "content": escape(self.body), "metadata": meta}


@dataclass
class TurnMetrics:
    """What one turn cost: the numbers under the conversation."""

    ttft_s: float | None = None
    """Time to the first token of the turn's first model call."""
    decode_s: float = 0.0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    steps: int = 0
    tool_calls: int = 0
    wall_s: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        """Completion tokens per second of decoding, over the turn's model calls."""
        return self.completion_tokens / self.decode_s if self.decode_s > 0 else None


@dataclass
class _Turn:
    """One user input and everything the runs answering it showed."""

    items: list[_Text | _Box]
    run_id: str | None = None
    status: str = "running"
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    calls: dict[str, _Box] = field(default_factory=dict)
    pending: list[ToolCall] = field(default_factory=list)
    answer: Any = None
    error: str | None = None
    trace_path: str | None = None
    started: float | None = None
    resumed: bool = False
    """A resumed segment is running: calls still awaiting approval when it moves on
    were denied (the core emits no result event for a denied call)."""


class ChatView:
    """A conversation's turns, folded from events; cheap to snapshot for the page."""

    def __init__(self) -> None:
        self.turns: list[_Turn] = []

    # --- folding events -----------------------------------------------------------------

    def apply(self, event: Event, now: float | None = None) -> None:
        """Fold one event in; ``now`` is its time (a trace's ``ts``), default the clock."""
        now = time.time() if now is None else now
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event, now)

    def _on_run_started(self, e: RunStarted, now: float) -> None:
        turn = self.turns[-1] if self.turns else None
        if not (e.resumed and turn is not None and turn.run_id == e.run_id):
            text = e.input if e.input is not None else "(this run's input was not recorded)"
            turn = _Turn(items=[_Text("user", 0, [text])])
            self.turns.append(turn)
        turn.run_id, turn.status, turn.started = e.run_id, "running", now
        turn.resumed = e.resumed
        turn.items = [i for i in turn.items if not (isinstance(i, _Box) and i.log == "note")]

    def _on_text(self, e: TextDelta, now: float) -> None:
        turn = self._current()
        last = turn.items[-1]
        if isinstance(last, _Text) and last.role == "assistant" and last.step == e.step:
            last.parts.append(e.text)
        else:
            turn.items.append(_Text("assistant", e.step, [e.text]))

    def _on_tool_call(self, e: ToolCallEvent, now: float) -> None:
        turn = self._current()
        box = _Box(
            f"Tool call: {e.call.name}",
            "arguments\n" + _json(e.call.arguments),
            "running (dispatched early)" if e.early else "pending",
            pending=True,
        )
        turn.calls[e.call.id] = box
        turn.items.append(box)

    def _on_tool_result(self, e: ToolResultEvent, now: float) -> None:
        turn, r = self._current(), e.result
        box = turn.calls.get(r.call_id)
        if box is None:  # a call the stream did not announce (a resumed run's closing calls)
            box = _Box(f"Tool call: {r.name}", "", "")
            turn.calls[r.call_id] = box
            turn.items.append(box)
        box.pending, box.duration, box.log = False, r.duration_s, _result_log(r, e.reused)
        box.failed = r.status == "error"
        head = f"result ({box.log})"
        box.body = (box.body + "\n\n" if box.body else "") + head + "\n" + _clip(r.content)

    def _on_repair(self, e: RepairEvent, now: float) -> None:
        body = "\n".join(f"- {r}" for r in e.reasons)
        self._current().items.append(
            _Box("Repair: sent back to the model", body, f"attempt {e.consecutive}")
        )

    def _on_approval(self, e: ApprovalRequest, now: float) -> None:
        turn = self._current()
        turn.pending = list(e.calls)
        for call in e.calls:
            if call.id in turn.calls:
                turn.calls[call.id].log = "awaiting approval"

    def _on_step(self, e: StepFinished, now: float) -> None:
        turn, g = self._current(), e.generation
        self._settle_denied(turn)
        m = turn.metrics
        if m.ttft_s is None:
            m.ttft_s = g.timings.ttft_s
        m.decode_s += max(g.timings.total_s - g.timings.ttft_s, 0.0)
        m.completion_tokens += g.usage.completion_tokens
        for bad in g.errors:
            body = f"{bad.reason}\n\nwhat the model wrote\n{_clip(bad.raw)}"
            turn.items.append(_Box("Malformed tool call", body, "sent back for repair"))

    def _on_error(self, e: RunError, now: float) -> None:
        turn = self._current()
        turn.error = e.message
        turn.items.append(_Box(f"Error ({e.error_kind})", e.message, e.error_type))

    def _on_final(self, e: Final, now: float) -> None:
        turn, r = self._current(), e.result
        self._settle_denied(turn)
        turn.status, turn.trace_path = r.status, r.trace_path or turn.trace_path
        _set_totals(turn.metrics, r)
        if turn.started is not None:
            turn.metrics.wall_s += max(now - turn.started, 0.0)
            turn.started = None
        if r.status != "awaiting_approval":
            turn.pending = []
        turn.answer = r.answer
        if r.status == "invalid_output":
            turn.error = r.error
        if not isinstance(r.answer, str) and r.answer is not None:
            self._show_json(turn, r.answer)
        note = _ending_note(r)
        if note:
            turn.items.append(_Box(note[0], note[1], "note"))

    @staticmethod
    def _settle_denied(turn: _Turn) -> None:
        if not turn.resumed:
            return
        turn.resumed = False
        for box in turn.calls.values():
            if box.log == "awaiting approval":
                box.pending, box.log = False, "denied"
                box.body += "\n\nresult (denied)\nThe user denied this call."

    def interrupted(self, reason: str = "Stopped") -> None:
        """The run was cancelled (Stop): it is ``interrupted`` and can be resumed."""
        turn = self._current()
        turn.status, turn.pending = "interrupted", []
        if turn.started is not None:
            turn.metrics.wall_s += max(time.time() - turn.started, 0.0)
            turn.started = None
        for box in turn.calls.values():
            if box.pending:
                box.pending, box.log = False, "stopped"
        body = "The run is interrupted. Resume continues it from its last checkpoint."
        turn.items.append(_Box(reason, body, "note"))

    def refused(self, text: str | None, message: str) -> None:
        """Something that never became a run: a message (``text``) refused, or a run
        that could not be continued (``text=None``), with the reason."""
        if text is not None or not self.turns:
            user = [] if text is None else [_Text("user", 0, [text])]
            self.turns.append(_Turn(items=user, status="refused", error=message))
        self.turns[-1].items.append(
            _Box("Not sent" if text is not None else "Error", message, "error")
        )

    def _current(self) -> _Turn:
        if not self.turns:  # events of a run whose start we did not see
            self.turns.append(_Turn(items=[_Text("user", 0, ["(input not recorded)"])]))
        return self.turns[-1]

    @staticmethod
    def _show_json(turn: _Turn, answer: Any) -> None:
        """Put the validated value, formatted, in place of the streamed JSON text."""
        for item in reversed(turn.items):
            if isinstance(item, _Text) and item.role == "assistant":
                item.parts = [_json(answer)]
                return
        turn.items.append(_Text("assistant", 0, [_json(answer)]))

    # --- reading ------------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        """Gradio Chatbot messages (``role``, escaped ``content``, ``metadata``)."""
        out = []
        for turn in self.turns:
            for item in turn.items:
                rendered = item.render()
                if rendered is not None:
                    out.append(rendered)
        return out

    @property
    def last(self) -> _Turn | None:
        return self.turns[-1] if self.turns else None

    @property
    def last_run(self) -> _Turn | None:
        """The last turn that became a run (a refused message did not)."""
        return next((t for t in reversed(self.turns) if t.run_id is not None), None)

    def pending_calls(self) -> list[ToolCall]:
        """Calls of the last run waiting for Approve / Deny."""
        turn = self.last_run
        return list(turn.pending) if turn and turn.status == "awaiting_approval" else []

    def can_resume(self) -> bool:
        """The last run was stopped (or its process died): Resume continues it."""
        return self.last_run is not None and self.last_run.status == "interrupted"

    def metrics_rows(self) -> list[list[Any]]:
        """One row per turn: status, TTFT, tokens/s, tokens, steps, calls, wall time."""
        rows = []
        for i, turn in enumerate(self.turns, 1):
            if turn.run_id is None:
                continue
            m = turn.metrics
            rows.append(
                [
                    i,
                    turn.status,
                    _ms(m.ttft_s),
                    _num(m.tokens_per_s),
                    m.prompt_tokens,
                    m.completion_tokens,
                    "—" if m.cached_tokens is None else m.cached_tokens,
                    m.steps,
                    m.tool_calls,
                    f"{m.wall_s:.2f}",
                ]
            )
        return rows


METRIC_COLUMNS = [
    "turn",
    "status",
    "TTFT ms",
    "tok/s",
    "prompt",
    "compl.",
    "cached",
    "steps",
    "calls",
    "wall s",
]


def _set_totals(m: TurnMetrics, r: RunResult) -> None:
    """The run's own counters are authoritative (and add up across resumed segments)."""
    m.steps, m.tool_calls = r.steps, r.tool_calls
    m.prompt_tokens, m.cached_tokens = r.usage.prompt_tokens, r.usage.cached_tokens
    m.completion_tokens = r.usage.completion_tokens


def _ending_note(r: RunResult) -> tuple[str, str] | None:
    if r.status == "done":
        return None
    if r.status == "awaiting_approval":
        return ("Waiting for approval", "Approve or Deny the calls above to continue the run.")
    limit = f" ({r.limit})" if r.limit else ""
    return (f"Run ended: {r.status}{limit}", r.error or "")


def _result_log(r: ToolResult, reused: bool) -> str:
    log = r.status if r.error is None else f"{r.status}: {r.error}"
    if r.truncated:
        log += ", truncated"
    return log + (", reused" if reused else "")


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f}"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
