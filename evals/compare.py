"""``agent eval compare RUN_A RUN_B``: what changed between two eval runs.

Both runs are compared on the cases they share (cases in one only are listed apart).
A case *flipped* when its pass fraction changed: ``fixed`` when B passes more of its
trials than A, ``broke`` when fewer. Rate deltas (pass@1, pass^k, per category) carry a
95% interval by Newcombe's hybrid score method (the difference of two Wilson intervals,
each with the number of shared cases as *n*): conservative for runs of the same cases,
which are paired. An interval that excludes 0 is marked significant.
Latency and token deltas are plain differences.

>>> [round(x, 3) for x in newcombe(0.5, 0.8, 40)]
[0.3, 0.091, 0.476]
"""

from __future__ import annotations

import math
from typing import Any

from evals.metrics import percentile, rate_of, wilson
from evals.results import RunFolder

__all__ = ["compare", "newcombe", "print_comparison"]


def newcombe(p_a: float, p_b: float, n: int) -> tuple[float, float, float]:
    """``(delta, low, high)`` of ``p_b - p_a`` (each a rate over ``n`` cases)."""
    la, ua = wilson(p_a, n)
    lb, ub = wilson(p_b, n)
    d = p_b - p_a
    return (
        d,
        d - math.sqrt((p_b - lb) ** 2 + (ua - p_a) ** 2),
        d + math.sqrt((ub - p_b) ** 2 + (p_a - la) ** 2),
    )


def compare(a: RunFolder, b: RunFolder) -> dict[str, Any]:
    """Flipped cases and metric deltas of B against A (a JSON-ready dict)."""
    ra, rb = _scored(a), _scored(b)
    cases_a, cases_b = {r["case_id"] for r in ra}, {r["case_id"] for r in rb}
    shared = cases_a & cases_b
    ra = [r for r in ra if r["case_id"] in shared]
    rb = [r for r in rb if r["case_id"] in shared]
    return {
        "run_a": str(a.path),
        "run_b": str(b.path),
        "shared_cases": len(shared),
        "only_in_a": sorted(cases_a - shared),
        "only_in_b": sorted(cases_b - shared),
        "flipped": _flipped(ra, rb),
        "metrics": _rates(ra, rb, len(shared)) + _costs(ra, rb),
        "by_category": _categories(ra, rb),
    }


def _scored(folder: RunFolder) -> list[dict[str, Any]]:
    return [r for r in folder.latest().values() if r["status"] != "infra_error"]


def _fractions(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for r in records:
        c, n = out.setdefault(r["case_id"], [0, 0])
        out[r["case_id"]] = [c + bool(r["passed"]), n + 1]
    return {k: (c, n) for k, (c, n) in out.items()}


def _flipped(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fa, fb = _fractions(ra), _fractions(rb)
    why_b = {r["case_id"]: r for r in rb if not r["passed"]}
    rows = []
    for case in sorted(fa):
        (ca, na), (cb, nb) = fa[case], fb[case]
        if ca / na == cb / nb:
            continue
        failing = why_b.get(case)
        reason = (
            next((c["reason"] for c in failing["checks"] if not c["passed"]), "") if failing else ""
        )
        rows.append(
            {
                "case": case,
                "change": "fixed" if cb / nb > ca / na else "broke",
                "a": f"{ca}/{na}",
                "b": f"{cb}/{nb}",
                "why_b_fails": reason,
            }
        )
    return rows


def _delta(name: str, pa: float | None, pb: float | None, n: int) -> dict[str, Any]:
    if pa is None or pb is None:
        return {"metric": name, "a": pa, "b": pb, "delta": None, "ci": None, "significant": False}
    d, low, high = newcombe(pa, pb, n)
    return {
        "metric": name,
        "a": pa,
        "b": pb,
        "delta": d,
        "ci": [low, high],
        "significant": low > 0 or high < 0,
    }


def _rates(ra: list[dict[str, Any]], rb: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    from evals.metrics import pass_hat_k

    out = [_delta("pass@1", rate_of(ra)["rate"], rate_of(rb)["rate"], n)]
    fa, fb = _fractions(ra).values(), _fractions(rb).values()
    top = min(max((n for _, n in fa), default=0), max((n for _, n in fb), default=0))
    for k in range(2, top + 1):
        out.append(_delta(f"pass^{k}", pass_hat_k(fa, k), pass_hat_k(fb, k), n))
    return out


def _costs(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def tokens(rs: list[dict[str, Any]]) -> float | None:
        total = [(r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in rs]
        return sum(total) / len(total) if total else None

    rows = []
    for name, fa, fb in (
        (
            "latency p50 s",
            percentile([r["latency_s"] for r in ra], 0.5),
            percentile([r["latency_s"] for r in rb], 0.5),
        ),
        (
            "latency p95 s",
            percentile([r["latency_s"] for r in ra], 0.95),
            percentile([r["latency_s"] for r in rb], 0.95),
        ),
        ("tokens per sample", tokens(ra), tokens(rb)),
    ):
        delta = None if fa is None or fb is None else fb - fa
        rows.append(
            {"metric": name, "a": fa, "b": fb, "delta": delta, "ci": None, "significant": None}
        )
    return rows


def _categories(ra: list[dict[str, Any]], rb: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = sorted({r.get("category") or "-" for r in ra} & {r.get("category") or "-" for r in rb})
    out = []
    for name in names:
        ga = rate_of([r for r in ra if (r.get("category") or "-") == name])
        gb = rate_of([r for r in rb if (r.get("category") or "-") == name])
        out.append(
            {
                **_delta(name, ga["rate"], gb["rate"], min(ga["cases"], gb["cases"])),
                "cases": ga["cases"],
            }
        )
    return out


def print_comparison(result: dict[str, Any]) -> None:
    """The comparison as tables (rich) on stdout."""
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"A: {escape(result['run_a'])}\nB: {escape(result['run_b'])}\n"
        f"{result['shared_cases']} shared cases"
    )
    for side in ("only_in_a", "only_in_b"):
        if result[side]:
            console.print(f"{side.replace('_', ' ')}: {escape(', '.join(result[side]))}")
    metrics = Table(box=box.SIMPLE, title="metrics (B − A)")
    for col in ("metric", "A", "B", "delta", "95% interval", ""):
        metrics.add_column(col)
    for m in result["metrics"] + [
        {**c, "metric": f"category {c['metric']}"} for c in result["by_category"]
    ]:
        ci = "" if not m["ci"] else f"[{m['ci'][0]:+.3f}, {m['ci'][1]:+.3f}]"
        mark = "significant" if m["significant"] else ""
        metrics.add_row(
            escape(m["metric"]), _fmt(m["a"]), _fmt(m["b"]), _fmt(m["delta"], sign=True), ci, mark
        )
    console.print(metrics)
    flips = Table(box=box.SIMPLE, title=f"flipped cases ({len(result['flipped'])})")
    for col in ("case", "change", "A passed", "B passed", "why B fails"):
        flips.add_column(col, overflow="fold")
    for f in result["flipped"]:
        style = "green" if f["change"] == "fixed" else "red"
        flips.add_row(
            escape(f["case"]),
            f"[{style}]{f['change']}[/]",
            f["a"],
            f["b"],
            escape(f["why_b_fails"])[:160],
        )
    console.print(flips)


def _fmt(value: float | None, *, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if sign else f"{value:.3f}"
