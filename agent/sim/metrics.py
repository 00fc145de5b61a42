"""Prometheus text exposition of the simulator's state, under vLLM's metric names.

Written by hand instead of with ``prometheus_client`` to keep the simulator free of extra
dependencies; the format is small and follows what vLLM 0.32 (through ``prometheus_client``)
writes: ``# HELP``/``# TYPE`` lines naming counters with their ``_total`` suffix, labels
``engine`` and ``model_name``, cumulative histogram buckets. Timing histograms use
*modeled* seconds, not wall time, so they describe the simulated GPU. vLLM's many other
series (``*_created`` gauges, per-source counters, process metrics) are left out.

>>> h = Histogram((0.1, 1.0)); h.observe(0.5); h.lines("x", 'model_name="m"')[1]
'x_bucket{le="1.0",model_name="m"} 1'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["FINISHED_REASONS", "Histogram", "render"]

FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
"""Values of ``vllm:request_success_total``'s ``finished_reason`` label, as vLLM lists them."""


@dataclass
class Histogram:
    """Cumulative buckets, a sum and a count."""

    edges: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.edges)

    def observe(self, value: float) -> None:
        self.total += value
        self.n += 1
        for i, edge in enumerate(self.edges):
            if value <= edge:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        pairs = zip(self.edges, self.counts, strict=True)
        out = [f'{name}_bucket{{le="{e}",{labels}}} {c}' for e, c in pairs]
        out.append(f'{name}_bucket{{le="+Inf",{labels}}} {self.n}')
        out += [f"{name}_sum{{{labels}}} {self.total}", f"{name}_count{{{labels}}} {self.n}"]
        return out


def render(
    model: str,
    gauges: dict[str, float],
    counters: dict[str, float | tuple[str, dict[str, float]]],
    histograms: dict[str, Histogram],
) -> str:
    """The ``/metrics`` body. Names are given without the ``vllm:`` prefix.

    >>> "# TYPE vllm:prefix_cache_hits_total counter" in render(
    ...     "m", {}, {"prefix_cache_hits": 3}, {})
    True
    """
    labels = f'engine="0",model_name="{model}"'
    out: list[str] = []
    for name, value in gauges.items():
        out += [
            f"# HELP vllm:{name} {_HELP.get(name, name)}",
            f"# TYPE vllm:{name} gauge",
            f"vllm:{name}{{{labels}}} {float(value)}",
        ]
    for name, value in counters.items():
        total = f"vllm:{name}_total"
        out += [f"# HELP {total} {_HELP.get(name, name)}", f"# TYPE {total} counter"]
        if isinstance(value, tuple):  # (label name, {label value: count})
            key, counts = value
            out += [
                f'{total}{{engine="0",{key}="{k}",model_name="{model}"}} {float(v)}'
                for k, v in counts.items()
            ]
        else:
            out.append(f"{total}{{{labels}}} {float(value)}")
    for name, hist in histograms.items():
        out += [f"# HELP vllm:{name} {_HELP.get(name, name)}", f"# TYPE vllm:{name} histogram"]
        out += hist.lines(f"vllm:{name}", labels)
    return "\n".join(out) + "\n"


_HELP = {
    "num_requests_running": "Number of requests in model execution batches.",
    "num_requests_waiting": "Number of requests waiting to be processed.",
    "kv_cache_usage_perc": "KV-cache usage. 1 means 100 percent usage.",
    "prefix_cache_queries": "Prefix cache queries, in terms of number of queried tokens.",
    "prefix_cache_hits": "Prefix cache hits, in terms of number of cached tokens.",
    "prompt_tokens": "Number of prefill tokens processed.",
    "generation_tokens": "Number of generation tokens processed.",
    "request_success": "Count of successfully processed requests.",
    "time_to_first_token_seconds": "Histogram of time to first token in seconds (modeled).",
    "inter_token_latency_seconds": "Histogram of inter-token latency in seconds (modeled).",
}


def cache_config(cache_tokens: int, block_size: int = 16) -> str:
    """vLLM's ``vllm:cache_config_info`` (an info gauge whose labels carry the KV cache's
    size: ``num_gpu_blocks`` × ``block_size`` tokens), as admission control reads it.

    >>> 'num_gpu_blocks="10"' in cache_config(160)
    True
    """
    labels = f'block_size="{block_size}",num_gpu_blocks="{cache_tokens // block_size}"'
    return (
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
        "# TYPE vllm:cache_config_info gauge\n"
        f'vllm:cache_config_info{{engine="0",{labels}}} 1.0\n'
    )
