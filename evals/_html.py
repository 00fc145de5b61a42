"""The HTML report: one self-contained file, plots as inline SVG, a fast per-sample view.

Why it stays fast at 10,000 samples (the complaint about other harnesses' viewers):

- Plots are rendered **once**, here, by matplotlib as inline SVG: no plotting library
  ships inside the page, nothing is laid out in the browser, and the file works offline.
  matplotlib is the best-kept plotting library in Python; it is heavy to install, so it
  lives in the ``evals`` extra (a missing install is a clear error, not a traceback).
- The per-sample table is **virtualised**: only the ~40 rows in view exist in the DOM;
  filtering and sorting work on a compact index (one small array per sample).
- Each sample's detail (checks, transcript, tool results, HTTP records) is embedded once,
  gzip-compressed and base64-encoded, and decompressed (``DecompressionStream``) only when
  the sample is opened; the page never parses what nobody looks at.
- Everything the model wrote is shown with ``textContent``: a transcript cannot inject
  markup into the report.

>>> _svg_clean('<?xml version="1.0"?>\\n<svg a="1"></svg>')
'<svg a="1"></svg>'
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from agent.errors import ConfigError
from evals._html_template import TEMPLATE

__all__ = ["render_report"]


def render_report(
    config: dict[str, Any], summary: dict[str, Any], records: Iterable[dict[str, Any]]
) -> str:
    """The whole report page as text."""
    records = list(records)
    plots = _plots(summary, records)
    index = [_index_row(r) for r in records]
    details = [_detail(r) for r in records]
    data = {"config": config, "summary": _headline(summary), "index": index, "columns": _COLUMNS}
    return (
        TEMPLATE.replace("%TITLE%", html.escape(str(summary.get("suite"))))
        .replace("%SIMULATED%", _simulated_note(summary))
        .replace("%PLOTS%", "\n".join(f"<figure>{svg}</figure>" for svg in plots))
        .replace("%DATA%", _script_json(data))
        .replace("%DETAILS%", _script_json(details))
    )


_COLUMNS = [
    "sample",
    "case",
    "trial",
    "category",
    "status",
    "error type",
    "latency s",
    "tokens",
    "steps",
    "why",
]


def _index_row(r: dict[str, Any]) -> list[Any]:
    why = next((c["reason"] for c in r["checks"] if not c["passed"]), "")
    if not why and r.get("infra"):
        why = r["infra"][-1].get("message") or ""
    tokens = (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0)
    return [
        r["sample"],
        r["case_id"],
        r["trial"],
        r.get("category") or "",
        r["status"],
        r.get("error_type") or "",
        round(r["latency_s"], 3),
        tokens,
        r["steps"],
        why[:200],
    ]


def _detail(r: dict[str, Any]) -> str:
    keep = (
        "sample",
        "input",
        "answer",
        "checks",
        "events",
        "http",
        "infra",
        "result",
        "planned_corruption",
    )
    raw = json.dumps({k: r.get(k) for k in keep}, ensure_ascii=False, default=str).encode()
    return base64.b64encode(gzip.compress(raw, 6)).decode("ascii")


def _headline(s: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "suite", "kind", "cases", "trials", "samples", "scored", "passed", "failed",
        "infra_errors", "pass_at_1", "pass_at_1_ci", "pass_hat_k", "pass_at_k",
        "latency_s", "tokens", "steps", "malformed_call_rate", "repair_rate",
        "tool_error_rate", "by_category", "by_tag", "error_types",
    )  # fmt: skip
    return {k: s.get(k) for k in keys}


def _simulated_note(s: dict[str, Any]) -> str:
    if not s.get("simulated"):
        return ""
    return (
        '<p class="sim">Model: <b>SIMULATED</b> — the project\'s simulated vLLM server '
        "answered from scripts (or BFCL gold answers); no real model ran.</p>"
    )


def _script_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str).replace("</", "<\\/")


# -- plots --------------------------------------------------------------------------------


def _plots(s: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "the HTML report draws its plots with matplotlib, which is not installed: "
            "pip install -e '.[evals]' (or pass --no-html for the table only)"
        ) from None
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "eval"}):
        return [
            _render(Figure, _plot_pass_k, s),
            _render(Figure, _plot_categories, s),
            _render(Figure, _plot_latency, records),
            _render(Figure, _plot_tokens, records),
        ]


def _render(figure: Any, draw: Any, data: Any) -> str:
    fig = figure(figsize=(5.2, 3.2), layout="constrained")
    draw(fig.subplots(), data)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return _svg_clean(buf.getvalue())


def _svg_clean(svg: str) -> str:
    """The ``<svg>`` element alone (no XML prolog or DOCTYPE), to inline in HTML."""
    return svg[svg.index("<svg") :]


def _plot_pass_k(ax: Any, s: dict[str, Any]) -> None:
    ks = [int(k) for k in s["pass_hat_k"]]
    ax.plot(ks, [s["pass_hat_k"][str(k)] for k in ks], "o-", label="pass^k (all k pass)")
    ax.plot(ks, [s["pass_at_k"][str(k)] for k in ks], "s--", label="pass@k (any of k)")
    ax.set(
        xlabel="k (trials)",
        ylabel="rate",
        ylim=(-0.02, 1.02),
        title="Reliability: pass^k against k",
    )
    ax.set_xticks(ks)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)


def _plot_categories(ax: Any, s: dict[str, Any]) -> None:
    groups = {
        **{f"{k}": v for k, v in s["by_category"].items()},
        **{f"#{k}": v for k, v in s["by_tag"].items()},
    }
    groups = {k: v for k, v in groups.items() if v["rate"] is not None}
    names = list(groups)[:30]
    rates = [groups[n]["rate"] for n in names]
    lows = [r - groups[n]["ci"][0] for n, r in zip(names, rates, strict=True)]
    highs = [groups[n]["ci"][1] - r for n, r in zip(names, rates, strict=True)]
    ax.barh(range(len(names)), rates, xerr=[lows, highs], capsize=3, color="#4c78a8")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="pass rate (95% interval)", title="Per category (and #tag)")


def _plot_latency(ax: Any, records: list[dict[str, Any]]) -> None:
    values = [r["latency_s"] for r in records if r["status"] != "infra_error"]
    ax.hist(values or [0], bins=min(40, max(5, len(values) // 5)), color="#72b7b2")
    ax.set(xlabel="seconds per sample", ylabel="samples", title="Latency")


def _plot_tokens(ax: Any, records: list[dict[str, Any]]) -> None:
    per_case: dict[str, list[int]] = defaultdict(list)
    for r in records:
        per_case[r["case_id"]].append(
            (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0)
        )
    means = {c: sum(v) / len(v) for c, v in per_case.items()}
    if len(means) <= 40:
        names = sorted(means, key=means.get)  # type: ignore[arg-type]
        ax.barh(range(len(names)), [means[n] for n in names], color="#f58518")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set(xlabel="tokens per sample (mean over trials)", title="Tokens per case")
    else:
        ax.hist(list(means.values()), bins=40, color="#f58518")
        ax.set(
            xlabel="tokens per sample (mean over trials)", ylabel="cases", title="Tokens per case"
        )
