"""Metrics of an eval run, from its sample records: what ``summary.json`` holds.

Reliability, per case *i* with *n_i* scored trials of which *c_i* passed:

- ``pass_at_1`` = mean over cases of *c_i / n_i* (one attempt's expected success);
- ``pass_hat_k[k]`` = mean over cases of C(c_i, k) / C(n_i, k): the chance that *k*
  trials drawn from the case's *n_i* **all** pass — tau-bench's pass^k
  (sierra-research/tau-bench, ``run.py``; arXiv 2406.12045), for k = 1 … n. It falls
  as k grows unless every case is fully reliable; ``pass_hat_k[1] == pass_at_1``;
- ``pass_at_k[k]`` = mean of 1 − C(n_i − c_i, k) / C(n_i, k): at least one of *k* passes
  (the Codex estimator).

Samples that ended in an infrastructure error are not scored: they count in
``infra_errors`` only, and a case's *n_i* is its scored trials (cases with fewer than *k*
are left out of pass^k at that *k*).

Intervals are 95% Wilson score intervals with the number of **cases** as *n*: trials of
one case are not independent, and a case's pass fraction varies no more than a coin's,
so this is conservative. Latency percentiles interpolate linearly between samples.

>>> round(pass_hat_k([(2, 3), (3, 3)], 2), 4)
0.6667
>>> wilson(1.0, 10)[0] > 0.7
True
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from evals.results import SUMMARY_VERSION

__all__ = ["pass_at_k", "pass_hat_k", "percentile", "rate_of", "summarize", "wilson"]

Z95 = 1.959963984540054


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` over ``n`` trials.

    >>> [round(x, 3) for x in wilson(0.5, 20)]
    [0.299, 0.701]
    """
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if p <= 0 else low, 1.0 if p >= 1 else high)


def pass_hat_k(cases: Iterable[tuple[int, int]], k: int) -> float | None:
    """tau-bench's pass^k over ``(passed, trials)`` per case; None when no case has k."""
    values = [math.comb(c, k) / math.comb(n, k) for c, n in cases if n >= k]
    return sum(values) / len(values) if values else None


def pass_at_k(cases: Iterable[tuple[int, int]], k: int) -> float | None:
    """At least one of k passes (Codex's unbiased estimator), averaged over cases."""
    values = [1 - math.comb(n - c, k) / math.comb(n, k) for c, n in cases if n >= k]
    return sum(values) / len(values) if values else None


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0–1) with linear interpolation; None for no values.

    >>> percentile([1, 2, 3, 4], 0.5)
    2.5
    """
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def rate_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Pass rate (mean over cases of their pass fraction) with its interval and counts."""
    per_case = _per_case(records)
    if not per_case:
        return {"rate": None, "ci": None, "cases": 0, "samples": 0, "passed": 0}
    rate = sum(c / n for c, n in per_case.values()) / len(per_case)
    return {
        "rate": rate,
        "ci": list(wilson(rate, len(per_case))),
        "cases": len(per_case),
        "samples": sum(n for _, n in per_case.values()),
        "passed": sum(c for c, _ in per_case.values()),
    }


def _per_case(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        if r["status"] == "infra_error":
            continue
        counts[r["case_id"]][0] += bool(r["passed"])
        counts[r["case_id"]][1] += 1
    return {case: (c, n) for case, (c, n) in counts.items()}


def summarize(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """The whole ``summary.json`` of an eval run (``records``: the last of each sample)."""
    scored = [r for r in records if r["status"] != "infra_error"]
    per_case = _per_case(records)
    overall = rate_of(records)
    top = max((n for _, n in per_case.values()), default=0)
    return {
        "version": SUMMARY_VERSION,
        "eval_id": config.get("eval_id"),
        "kind": config.get("kind"),
        "suite": config.get("suite", {}).get("name"),
        "model": config.get("model"),
        "simulated": bool((config.get("model") or {}).get("simulated")),
        "cases": len({r["case_id"] for r in records}),
        "trials": (config.get("options") or {}).get("trials", top),
        "samples": len(records),
        "samples_planned": config.get("samples_planned", len(records)),
        "scored": len(scored),
        "passed": sum(bool(r["passed"]) for r in scored),
        "failed": sum(r["passed"] is False for r in scored),
        "infra_errors": len(records) - len(scored),
        "infra_retries": sum(len(r.get("infra") or []) for r in records),
        "pass_at_1": overall["rate"],
        "pass_at_1_ci": overall["ci"],
        "pass_hat_k": {str(k): pass_hat_k(per_case.values(), k) for k in range(1, top + 1)},
        "pass_at_k": {str(k): pass_at_k(per_case.values(), k) for k in range(1, top + 1)},
        "by_category": _grouped(records, lambda r: [r.get("category") or "-"]),
        "by_tag": _grouped(records, lambda r: r.get("tags") or []),
        **_costs(scored),
        "error_types": dict(
            Counter(r["error_type"] for r in records if r.get("error_type")).most_common()
        ),
        "infra_error_kinds": sorted(
            {r.get("error_kind") or "internal" for r in records if r["status"] == "infra_error"}
        ),
        "per_case": {case: {"passed": c, "trials": n} for case, (c, n) in sorted(per_case.items())},
    }


def _grouped(records: list[dict[str, Any]], keys: Any) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        for key in keys(r):
            groups[key].append(r)
    return {key: rate_of(group) for key, group in sorted(groups.items())}


def _costs(scored: list[dict[str, Any]]) -> dict[str, Any]:
    latency = [r["latency_s"] for r in scored]
    ttft = [r["ttft_s"] for r in scored if r.get("ttft_s") is not None]
    prompt = sum(r["prompt_tokens"] or 0 for r in scored)
    completion = sum(r["completion_tokens"] or 0 for r in scored)
    cached = sum(r["cached_tokens"] or 0 for r in scored)
    calls = sum(r["calls_parsed"] + r["calls_malformed"] for r in scored)
    steps = sum(r["steps"] for r in scored)
    results = sum(r["tool_results"] for r in scored)
    n = max(len(scored), 1)
    return {
        "latency_s": _stats(latency),
        "ttft_s": _stats(ttft),
        "tokens": {
            "prompt": prompt,
            "completion": completion,
            "cached": cached,
            "per_sample": (prompt + completion) / n,
            "cached_fraction": cached / prompt if prompt else None,
        },
        "steps": {"mean": steps / n, "max": max((r["steps"] for r in scored), default=0)},
        "tool_calls": {"mean": sum(r["tool_calls"] for r in scored) / n},
        "malformed_call_rate": sum(r["calls_malformed"] for r in scored) / calls if calls else 0.0,
        "repair_rate": sum(r["repairs"] for r in scored) / steps if steps else 0.0,
        "tool_error_rate": sum(r["tool_errors"] for r in scored) / results if results else 0.0,
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "mean": sum(values) / len(values) if values else None,
        "max": max(values) if values else None,
    }
