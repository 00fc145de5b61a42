"""``/metrics`` in the Prometheus text format, fed by the typed events of this process.

No client library: a few counters and histograms, rendered by hand (text format 0.0.4).
Metrics are per replica (Prometheus sums them): runs ended by status and runs paused for
approval, model steps, tool calls by tool and status, and latency histograms of runs,
model calls, time to first token and tool calls; plus the runs in progress here and SSE
listeners connected. A tool's label is its name when a served task enables it, else
``other``: names come from the model, and a label per invented name would grow forever.

Workers of one ``agent serve --workers N`` answer for all of them: each writes its
:meth:`Metrics.snapshot` to the peers' folder every tick, and on each scrape the worker
that answers writes its own, then adds up every one (:meth:`Metrics.render_all`). Each
file only grows, and a worker that died leaves its file, so counters never go down; its
gauges no longer count.

>>> m = Metrics(); m.runs.inc(("done",)); "agent_runs_total" in m.render(0, 0)
True
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any

__all__ = ["Histogram", "Metrics"]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Counter:
    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...] = (), by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def state(self) -> Any:
        return [[list(labels), value] for labels, value in self.values.items()]

    def add(self, state: Any) -> None:
        for labels, value in state:
            self.inc(tuple(labels), value)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(self.labels, labels)} {value:g}")
        return lines


class Histogram:
    """Cumulative buckets of seconds."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = _SECONDS) -> None:
        self.name, self.help, self.buckets = name, help, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum, self.count = 0.0, 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def state(self) -> Any:
        return {"counts": self.counts, "sum": self.sum, "count": self.count}

    def add(self, state: Any) -> None:
        self.counts = [a + b for a, b in zip(self.counts, state["counts"], strict=True)]
        self.sum += state["sum"]
        self.count += state["count"]

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            lines.append(f'{self.name}_bucket{{le="{le}"}} {running}')
        lines += [f"{self.name}_sum {self.sum:.6f}", f"{self.name}_count {self.count}"]
        return lines


class Metrics:
    """What ``/metrics`` shows; :meth:`observe` takes every event of every run here."""

    def __init__(self, tools: Iterable[str] = ()) -> None:
        self.tools = frozenset(tools)
        """The tool labels used as they are (the tools the served tasks enable)."""
        self.runs = Counter("agent_runs_total", "Runs ended, by status.", ("status",))
        self.pauses = Counter("agent_run_pauses_total", "Runs paused for approval.")
        self.steps = Counter("agent_steps_total", "Model calls (steps) made.")
        self.tool_calls = Counter(
            "agent_tool_calls_total", "Tool calls, by tool and status.", ("tool", "status")
        )
        self.tokens = Counter("agent_tokens_total", "Tokens, by kind.", ("kind",))
        self.run_seconds = Histogram(
            "agent_run_seconds", "Run time on this replica: from start or resume to end or pause."
        )
        self.step_seconds = Histogram("agent_step_seconds", "Model call latency.")
        self.ttft_seconds = Histogram("agent_ttft_seconds", "Time to first token.")
        self.tool_seconds = Histogram("agent_tool_seconds", "Tool call latency.")
        self.http = Counter("agent_http_requests_total", "HTTP requests, by status.", ("code",))

    def observe(self, event: Any) -> None:
        kind = event.kind
        if kind == "step":
            g = event.generation
            self.steps.inc()
            self.step_seconds.observe(g.timings.total_s)
            self.ttft_seconds.observe(g.timings.ttft_s)
            self.tokens.inc(("prompt",), g.usage.prompt_tokens)
            self.tokens.inc(("completion",), g.usage.completion_tokens)
        elif kind == "tool_result":
            r = event.result
            self.tool_calls.inc((r.name if r.name in self.tools else "other", r.status))
            self.tool_seconds.observe(r.duration_s)
        elif kind == "final" and event.result.status == "awaiting_approval":
            self.pauses.inc()
        elif kind == "final":
            self.runs.inc((event.result.status,))

    def _parts(self) -> dict[str, Counter | Histogram]:
        return {m.name: m for m in vars(self).values() if isinstance(m, Counter | Histogram)}

    def snapshot(self, active_runs: int, listeners: int) -> dict[str, Any]:
        """Everything :meth:`render` shows, as JSON (for the other workers)."""
        parts = {name: part.state() for name, part in self._parts().items()}
        return {"active_runs": active_runs, "listeners": listeners, "parts": parts}

    @staticmethod
    def render_all(snapshots: list[dict[str, Any]]) -> str:
        """:meth:`render` of several processes' snapshots added up (one whose ``"live"`` is
        false adds its counters, not its gauges). A snapshot that does not fit is skipped."""
        total = Metrics()
        parts = total._parts()
        active_runs = listeners = 0
        for snap in snapshots:
            adding = Metrics()  # all of it or nothing: a bad part must not count half
            adding_parts = adding._parts()
            try:
                for name, state in snap["parts"].items():
                    adding_parts[name].add(state)
                gauges = (int(snap["active_runs"]), int(snap["listeners"]))
            except (KeyError, TypeError, ValueError):
                continue
            for name, part in adding_parts.items():
                parts[name].add(part.state())
            if snap.get("live", True):
                active_runs, listeners = active_runs + gauges[0], listeners + gauges[1]
        return total.render(active_runs, listeners)

    def render(self, active_runs: int, listeners: int) -> str:
        lines = [
            "# HELP agent_runs_active Runs in progress on this replica.",
            "# TYPE agent_runs_active gauge",
            f"agent_runs_active {active_runs}",
            "# HELP agent_sse_listeners Event-stream connections open on this replica.",
            "# TYPE agent_sse_listeners gauge",
            f"agent_sse_listeners {listeners}",
        ]
        for metric in self._parts().values():
            lines += metric.render()
        return "\n".join(lines) + "\n"


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
