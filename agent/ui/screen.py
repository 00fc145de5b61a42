"""What the right column shows at one moment, as plain values (no Gradio here).

:func:`screen` reads a :class:`~agent.ui.view.ChatView` into a :class:`Screen`: the
escaped chat messages, the metrics table, the calls waiting for approval, the JSON
answer and which buttons apply. The page maps a Screen onto its components; tests read
Screens directly.

>>> screen(ChatView(), "ui_1", running=False).status
'Ready.'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from agent.ui.view import METRIC_COLUMNS, ChatView

__all__ = ["Screen", "screen"]


@dataclass(frozen=True)
class Screen:
    """The conversation's state for the page."""

    thread_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    metrics: str = ""
    """A Markdown table of our own numbers (no untrusted text)."""
    status: str = "Ready."
    running: bool = False
    approval: str | None = None
    """The calls waiting for Approve / Deny, as plain text."""
    can_resume: bool = False
    json_text: str | None = None
    json_status: str | None = None
    trace_path: str | None = None


def screen(view: ChatView, thread_id: str, *, running: bool, notice: str | None = None) -> Screen:
    """The Screen of ``view`` (``running``: a turn is in progress; ``notice`` replaces
    the status line)."""
    pending = view.pending_calls()
    json_text, json_status = _json_answer(view)
    last = view.last
    return Screen(
        thread_id=thread_id,
        messages=view.messages(),
        metrics=_metrics_table(view.metrics_rows()),
        status=notice or _status(view, running),
        running=running,
        approval="\n".join(_call_line(c) for c in pending) if pending and not running else None,
        can_resume=view.can_resume() and not running,
        json_text=json_text,
        json_status=json_status,
        trace_path=last.trace_path if last is not None else None,
    )


def _status(view: ChatView, running: bool) -> str:
    last = view.last
    if running:
        return "Running…"
    if last is None:
        return "Ready."
    return {
        "done": "Done.",
        "awaiting_approval": "Waiting for your approval.",
        "interrupted": "Stopped: the run is interrupted (Resume continues it).",
        "refused": "Not sent.",
    }.get(last.status, f"Ended: {last.status}.")


def _call_line(call: Any) -> str:
    args = json.dumps(call.arguments, ensure_ascii=False)
    return f"{call.name}({args if len(args) <= 600 else args[:600] + '…'})"


def _json_answer(view: ChatView) -> tuple[str | None, str | None]:
    last = view.last
    if last is None or last.status not in ("done", "invalid_output", "limit"):
        return None, None
    if last.status == "invalid_output":
        return str(last.answer or ""), f"invalid: {last.error}"
    if last.answer is None or isinstance(last.answer, str):
        return None, None
    text = json.dumps(last.answer, indent=2, ensure_ascii=False)
    return text, "valid: the answer matches the schema"


def _metrics_table(rows: list[list[Any]]) -> str:
    if not rows:
        return ""
    head = "| " + " | ".join(METRIC_COLUMNS) + " |"
    rule = "|" + "---|" * len(METRIC_COLUMNS)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in rows[-8:]]
    return "\n".join([head, rule, *body])
