"""``agent runs list`` and ``agent runs show RUN_ID``: past runs and their traces.

Both read the run store (``--store``, else ``$AGENT_STORE``, else ``.agent/runs.db``) and
never create one: listing a folder without a store prints nothing rather than leaving an
empty database behind. ``show`` renders the trace step by step (prompt size, output, tool
calls and results); long texts are cut to ``--width`` characters unless ``--full``.

Exit codes: 0 success, 2 unknown run id or bad store path.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.errors import ConfigError
from agent.runs import RunRecord, RunStore, open_run_store, read_trace, resolve_store_path
from agent.types import RUN_STATUSES

__all__ = ["runs_group"]

_STORE_HELP = "Run store: a folder holding runs.db, or a .db file. [env AGENT_STORE; .agent]"


def _open_store(store: str | None) -> RunStore | None:
    """The store, or None when the default one does not exist yet (no runs so far).

    Exits 2 on a bad path, and on a store named by ``--store``/``AGENT_STORE`` that does
    not exist: a typo there must not read as "no runs".
    """
    value = store or os.environ.get("AGENT_STORE") or ""
    if value.startswith(("postgres://", "postgresql://")):
        try:
            return open_run_store(value)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        path = resolve_store_path(store)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if path.is_file():
        return RunStore(path)
    if store:
        raise click.UsageError(f"no run store at {path} (check --store / AGENT_STORE)")
    return None


@click.group("runs")
def runs_group() -> None:
    """List past runs and show one run's trace."""


@runs_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=1), help="Runs shown at most."
)
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs with this status.")
@click.option("--store", envvar="AGENT_STORE", help=_STORE_HELP)
def list_cmd(as_json: bool, limit: int, status: str | None, store: str | None) -> None:
    """The newest runs first. Example: agent runs list --status error --limit 5"""
    rs = _open_store(store)
    records = rs.list(limit=limit, status=status) if rs else []
    if as_json:
        for r in records:
            click.echo(json.dumps(r.to_dict()))
        return
    if not records:
        click.echo("no runs yet" if rs else f"no run store at {resolve_store_path(store)}")
        return
    console = Console()
    # Fits 80 columns whole: the short id is what `runs show` and `--resume` take.
    table = Table(
        "id",
        "status",
        "task",
        "steps",
        "calls",
        "tokens",
        "started",
        "took",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for col in table.columns:
        col.no_wrap = True
    table.columns[0].min_width = 6
    table.columns[2].overflow = "ellipsis"
    table.columns[2].ratio = 1  # the task name gives way first
    for r in records:
        table.add_row(
            r.short_id,
            _status(r.status),
            escape(r.task),
            str(r.steps),
            str(r.tool_calls),
            f"{r.usage.total_tokens:,}",
            _when(r.started_at, "%m-%d %H:%M"),
            _duration(r),
        )
    console.print(table)


@runs_group.command("show")
@click.argument("run_id", metavar="RUN_ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record and trace as JSON.")
@click.option("--full", is_flag=True, help="Do not shorten long prompts and outputs.")
@click.option("--width", default=400, show_default=True, help="Characters shown per text.")
@click.option("--store", envvar="AGENT_STORE", help=_STORE_HELP)
def show_cmd(run_id: str, as_json: bool, full: bool, width: int, store: str | None) -> None:
    """One run: its record and a readable rendering of its trace.

    RUN_ID is the run's id, or a unique start of it or of its short id (the id column of
    `agent runs list`).
    """
    rs = _open_store(store)
    if rs is None:
        raise click.UsageError(
            f"no run {run_id!r}: no run store at {resolve_store_path(store)} (see: agent runs list)"
        )
    try:
        record = rs.find(run_id)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    events, problem = _load_trace(record)
    if as_json:
        click.echo(
            json.dumps({"run": record.to_dict(), "trace": events, "trace_error": problem}, indent=2)
        )
        return
    console = Console()
    _print_record(console, record)
    if problem:
        console.print(f"[yellow]trace: {problem}[/]")
    for event in events:
        _print_event(console, event, None if full else width)


def _load_trace(record: RunRecord) -> tuple[list[dict[str, Any]], str | None]:
    if not record.trace_path:
        return [], "this run has no trace"
    if not Path(record.trace_path).is_file():
        return [], f"{record.trace_path} does not exist"
    try:
        return read_trace(record.trace_path), None
    except ConfigError as exc:
        return [], str(exc)


def _print_record(console: Console, r: RunRecord) -> None:
    table = Table.grid(padding=(0, 2))
    usage = r.usage
    cached = "" if usage.cached_tokens is None else f", {usage.cached_tokens:,} cached"
    rows = [
        ("run", r.run_id),
        ("task", r.task + (f"  ({r.task_path})" if r.task_path else "")),
        ("status", _status(r.status)),
        ("started", _when(r.started_at)),
        ("duration", _duration(r)),
        ("steps", str(r.steps)),
        ("tool calls", str(r.tool_calls)),
        (
            "tokens",
            f"{usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion{cached}",
        ),
        ("model", r.model_url or "-"),
        ("trace", r.trace_path or "-"),
    ]
    if r.error:
        rows.append(("error", f"[red]{_escape(r.error)}[/]"))
    if r.answer is not None:
        rows.append(("answer", _escape(r.answer)))
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)
    console.rule("trace")


def _print_event(console: Console, e: dict[str, Any], width: int | None) -> None:
    kind, step = e.get("type", "?"), e.get("step")
    head = f"[dim]{'step ' + str(step) if step is not None else '':>7}[/] [bold]{kind}[/]"
    if kind == "prompt":
        text = e.get("text") or ""
        body = f"{e.get('chars', len(text)):,} chars"
    elif kind == "model_output":
        usage = e.get("usage") or {}
        calls = ", ".join(_call(c) for c in e.get("tool_calls") or [])
        body = _cut(e.get("text") or e.get("content") or "", width)
        if calls:
            body += f"\n  calls: {_cut(calls, width)}"
        for err in e.get("errors") or []:
            body += f"\n  [red]malformed: {_escape(str(err.get('reason', err)))}[/]"
        if usage:
            body += (
                f"\n  [dim]{usage.get('prompt_tokens', 0)} prompt / "
                f"{usage.get('completion_tokens', 0)} completion tokens[/]"
            )
    elif kind == "tool_call":
        body = _cut(_call(e.get("call") or e), width)  # version 1 traces were flat
    elif kind == "tool_result":
        r = e.get("result") or e
        style = "green" if r.get("status") == "ok" else "red"
        body = f"[{style}]{r.get('name', '?')}[/] → {_cut(str(r.get('content', '')), width)}"
    elif kind in ("final", "error", "repair", "approval", "run_started"):
        shown = {k: v for k, v in e.items() if k not in ("v", "ts", "run_id", "type", "step")}
        body = _cut(json.dumps(shown, ensure_ascii=False, default=str), width)
    else:
        body = _cut(json.dumps(e, ensure_ascii=False, default=str), width)
    console.print(f"{head}  {body}")


def _call(c: dict[str, Any]) -> str:
    return f"{c.get('name', '?')}({json.dumps(c.get('arguments', {}), ensure_ascii=False)})"


def _cut(text: str, width: int | None) -> str:
    if width is not None and len(text) > width:
        text = text[:width] + f"… [{len(text) - width:,} more chars]"
    return _escape(text)


def _escape(text: str) -> str:
    # Trace text is untrusted: '[' would otherwise be read as rich markup.
    return escape(text)


def _status(status: str) -> str:
    color = {"done": "green", "running": "cyan", "interrupted": "yellow"}.get(status, "red")
    return f"[{color}]{status}[/]"


def _when(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.localtime(ts))


def _duration(r: RunRecord) -> str:
    d = r.duration_s
    if d is None:
        return "-"
    return f"{d:.1f}s" if d < 60 else f"{int(d // 60)}m{int(d % 60):02d}s"
