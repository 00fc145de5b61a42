"""Terminal output of evals: live progress, the summary table, failures; the HTML report.

The HTML report (:func:`write_html`) is one self-contained file: plots rendered once as
inline SVG by matplotlib (:mod:`evals._html`), and a per-sample view whose data is
embedded once, compressed, and drawn on demand — see :mod:`evals._html` for why it
stays fast at 10,000 samples.

>>> _pct(0.8333)
'83.3%'
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from evals.metrics import summarize
from evals.results import RunFolder

__all__ = ["LiveProgress", "ensure_summary", "print_failures", "print_summary", "write_html"]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0] * 100:.1f}–{ci[1] * 100:.1f}]"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


class LiveProgress:
    """A rich progress bar on stderr: samples done, pass rate so far, ETA, tokens/s."""

    def __init__(self) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.bar = Progress(
            TextColumn("[bold]eval[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pass {task.fields[rate]}"),
            TextColumn("infra {task.fields[infra]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> LiveProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def update(self, record: dict[str, Any], progress: Any) -> None:
        if self.task is None:
            self.task = self.bar.add_task("eval", total=progress.total, rate="—", infra=0, tps=0)
        elapsed = max(time.perf_counter() - progress.started, 1e-9)
        self.bar.update(
            self.task,
            completed=progress.done,
            rate=_pct(progress.pass_rate),
            infra=progress.infra,
            tps=f"{progress.completion_tokens / elapsed:.0f}",
        )


def ensure_summary(folder: RunFolder) -> dict[str, Any]:
    """The run's summary; recomputed from samples.jsonl when missing (an interrupted run)."""
    path = folder.path / "summary.json"
    if path.is_file():
        return folder.summary()
    summary = summarize(list(folder.latest().values()), folder.config())
    folder.write_json("summary.json", summary)
    return summary


def print_summary(s: dict[str, Any], path: Path, *, err: bool = False) -> None:
    """The headline metrics, then per-category rates."""
    console = Console(stderr=err, highlight=False)
    model = s.get("model") or {}
    who = "[yellow]SIMULATED[/] " if s.get("simulated") else ""
    table = Table(
        title=f"{escape(str(s.get('suite')))} — {path}", box=box.SIMPLE, show_header=False
    )
    table.add_column(style="bold")
    table.add_column()
    hat = "  ".join(f"k={k} {_pct(v)}" for k, v in s["pass_hat_k"].items())
    at = "  ".join(f"k={k} {_pct(v)}" for k, v in s["pass_at_k"].items())
    lat, tok = s["latency_s"], s["tokens"]
    rows = [
        ("model", f"{who}{escape(str(model.get('name')))} at {', '.join(model.get('urls') or [])}"),
        (
            "cases × trials",
            f"{s['cases']} × {s['trials']} = {s['samples']} samples ({s['scored']} scored)",
        ),
        (
            "pass@1",
            f"{_pct(s['pass_at_1'])}{_ci(s['pass_at_1_ci'])}  "
            f"({s['passed']} passed, {s['failed']} failed)",
        ),
        ("pass^k", hat),
        ("pass@k", at),
        ("infra errors", f"{s['infra_errors']} (retries {s['infra_retries']}; not scored)"),
        ("latency s", f"p50 {_num(lat['p50'])}  p95 {_num(lat['p95'])}  max {_num(lat['max'])}"),
        (
            "tokens",
            f"{tok['prompt']:,} prompt ({_pct(tok['cached_fraction'])} cached), "
            f"{tok['completion']:,} completion",
        ),
        ("steps", f"mean {_num(s['steps']['mean'])}  max {s['steps']['max']}"),
        (
            "rates",
            f"malformed calls {_pct(s['malformed_call_rate'])}  "
            f"repairs/step {_pct(s['repair_rate'])}  tool errors {_pct(s['tool_error_rate'])}",
        ),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if len(s["by_category"]) > 1 or s["by_tag"]:
        groups = Table(box=box.SIMPLE, title="by category / tag")
        for col in ("group", "cases", "samples", "pass rate", "95% interval"):
            groups.add_column(col)
        for kind, data in (("category", s["by_category"]), ("tag", s["by_tag"])):
            for name, g in data.items():
                groups.add_row(
                    f"{kind}: {escape(name)}",
                    str(g["cases"]),
                    str(g["samples"]),
                    _pct(g["rate"]),
                    _ci(g["ci"]).strip(),
                )
        console.print(groups)


def print_failures(folder: RunFolder, limit: int = 30) -> None:
    """One line per failed sample: its case, trial and the first failing check's reason."""
    console = Console(highlight=False)
    failed = [r for r in folder.latest().values() if r["status"] != "passed"]
    if not failed:
        console.print("[green]no failures[/]")
        return
    table = Table(box=box.SIMPLE, title=f"failures ({len(failed)})")
    for col in ("sample", "status", "error type", "why"):
        table.add_column(col, overflow="fold")
    for r in failed[:limit]:
        why = next((c["reason"] for c in r["checks"] if not c["passed"]), None)
        why = why or (r["infra"][-1]["message"] if r.get("infra") else "")
        table.add_row(
            escape(r["sample"]), r["status"], str(r.get("error_type") or ""), escape(str(why))[:200]
        )
    console.print(table)
    if len(failed) > limit:
        console.print(f"… and {len(failed) - limit} more (the HTML report lists them all)")


def write_html(folder: RunFolder, out: Path | None = None) -> Path:
    """Write the self-contained HTML report; returns its path."""
    from evals._html import render_report

    summary = ensure_summary(folder)
    target = out or folder.path / "report.html"
    target.write_text(
        render_report(folder.config(), summary, folder.latest().values()), encoding="utf-8"
    )
    return target
