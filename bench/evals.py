"""Benchmark of the eval runner: 1,024 three-step cases at concurrency 1,024.

    python bench/evals.py [--quick] [--json]

The same 1,024 conversations (call a tool, call it again, answer) are driven three ways
against the ``h200``-profile simulator, each phase on a fresh simulator in a child
process (so server CPU is not charged to the client, and every phase starts with a cold
prefix cache):

1. **backend** — ``VLLMBackend.generate`` in a loop per conversation, the tool result
   appended by hand: the floor, no agent at all (as ``bench/backend.py`` does);
2. **agent** — ``Agent.run`` for every input at once (one shared agent, in-memory
   checkpoints, ``durability="exit"``): the runtime itself;
3. **eval** — ``agent eval``'s runner on a suite of those cases (``run_suite``):
   planning, the worker pool, checks (``tool_called``, ``answer_contains``), records
   appended to ``samples.jsonl`` and the summary.

``ratio_vs_backend`` = eval wall / backend wall (what evals cost over the bare model
calls); ``ratio_vs_agent`` = eval wall / agent wall (what the runner adds on top of the
runtime: its own goal is ≈ 1). On a shared machine wall times follow the other load, so
the client-CPU ratios (``cpu_ratio_vs_*``, ``runner_cpu_ms_per_case``) are printed too:
CPU is what the runner and the runtime spend, whatever else runs.

The tool runs in-process (a plain ``@tool``): sandboxed tools start one worker process
per run today (~0.3 s CPU each), which at 1,024 concurrent runs would measure the
sandbox, not the runner. ``--quick`` runs the simulator's modeled time 2× faster.
``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import chatml
from agent.config import Sampling
from agent.sim.policy import SimRequest, count_assistant_turns
from agent.types import ToolCall
from bench._common import SimChild, backend_conversation
from tools.base import tool

CASES = 1024
STEPS = 3
SYSTEM = "You answer questions about the quarterly report. Look facts up; never guess."
RESULT = "Passage: the quarterly report lists revenue growth in three regions and flat costs."
ANSWER = "Revenue grew in all three regions."


@tool
def lookup(key: str) -> str:
    """Look up a passage of the quarterly report.

    Args:
        key: What to look up.
    """
    return RESULT


def policy(request: SimRequest) -> str:
    """The simulated model (in the simulator's child process): two calls, then an answer."""
    turn = count_assistant_turns(request.prompt)
    if turn >= STEPS - 1:
        return ANSWER
    return f"Looking up part {turn}.\n" + chatml.render_call(
        ToolCall("lookup", {"key": f"revenue detail {turn}"}, id="x")
    )


def _input(i: int) -> str:
    return f"Case {i}: summarise revenue growth from the quarterly report."


async def _backend_phase(url: str) -> None:
    from agent.llm import VLLMBackend

    specs = [lookup.spec()]
    async with VLLMBackend(url) as backend:

        async def one(i: int) -> None:
            await backend_conversation(
                backend,
                SYSTEM,
                _input(i),
                specs,
                steps=STEPS,
                result=RESULT,
                sampling=Sampling(temperature=0.0, seed=0),
            )

        await asyncio.gather(*(one(i) for i in range(CASES)))


async def _agent_phase(url: str) -> None:
    from agent import Agent, Limits
    from agent.llm import VLLMBackend

    async with VLLMBackend(url) as backend:
        agent = Agent(
            backend,
            tools=[lookup],
            system=SYSTEM,
            sampling=Sampling(temperature=0.0, seed=0),
            limits=Limits(max_steps=STEPS + 1, deadline_s=3600),
            store=None,
        )
        agent.durability = "exit"
        results = await asyncio.gather(*(agent.run(_input(i)) for i in range(CASES)))
    assert all(r.ok for r in results), {r.status for r in results}


def _suite_file(folder: Path) -> Path:
    lines = [
        "name: bench",
        f"concurrency: {CASES}",
        "timeout_s: 3600",
        "defaults:",
        f"  system: {json.dumps(SYSTEM)}",
        "  tools: {enabled: [lookup]}",
        f"  limits: {{max_steps: {STEPS + 1}, deadline_s: 3600}}",
        "  model: {sampling: {temperature: 0.0}}",
        "cases:",
    ]
    for i in range(CASES):
        lines.append(
            f"  - {{id: c{i}, input: {json.dumps(_input(i))}, expect: "
            "[{tool_called: {name: lookup, count: 2}}, {answer_contains: grew}]}"
        )
    path = folder / "suite.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _eval_phase(url: str, folder: Path) -> dict[str, Any]:
    from evals.runner import EvalOptions, run_suite
    from evals.suite import load_suite

    suite = load_suite(_suite_file(folder), tools=("lookup",))
    options = EvalOptions(model_url=url, extra_tools=(lookup,), out=folder / "run")
    _, summary = await run_suite(suite, options)
    assert summary["pass_at_1"] == 1.0, summary["pass_at_1"]
    return summary


async def _measure(phase: str, speed: float, folder: Path) -> dict[str, Any]:
    with SimChild("bench.evals:policy", "h200", speed) as child:
        before = child.stats()
        cpu0, t0 = time.process_time(), time.perf_counter()
        if phase == "backend":
            await _backend_phase(child.url)
        elif phase == "agent":
            await _agent_phase(child.url)
        else:
            await _eval_phase(child.url, folder)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = child.stats()
    return {
        "wall_s": wall,
        "client_cpu_s": cpu,
        "ideal_s": after["ideal_wall_s"] - before["ideal_wall_s"],
        "requests": after["requests"] - before["requests"],
        "prefix_hit_rate": after["prefix_cache_hit_rate"],
        "server_cpu_s": after["cpu_s"] - before["cpu_s"],
    }


async def main(quick: bool) -> dict[str, Any]:
    speed = 2.0 if quick else 1.0
    result: dict[str, Any] = {"quick": quick, "cases": CASES, "steps": STEPS, "speed": speed}
    with tempfile.TemporaryDirectory(prefix="bench-evals-") as tmp:
        for phase in ("backend", "agent", "eval"):
            result[phase] = await _measure(phase, speed, Path(tmp))
    ev = result["eval"]
    result["cases_per_s"] = CASES / ev["wall_s"]
    result["ratio_vs_backend"] = ev["wall_s"] / result["backend"]["wall_s"]
    result["ratio_vs_agent"] = ev["wall_s"] / result["agent"]["wall_s"]
    result["eval_ratio_to_ideal"] = ev["wall_s"] / ev["ideal_s"] if ev["ideal_s"] else None
    # Client CPU is what the runner and the runtime spend, whatever else the machine runs.
    result["cpu_ratio_vs_backend"] = ev["client_cpu_s"] / result["backend"]["client_cpu_s"]
    result["cpu_ratio_vs_agent"] = ev["client_cpu_s"] / result["agent"]["client_cpu_s"]
    extra = ev["client_cpu_s"] - result["agent"]["client_cpu_s"]
    result["runner_cpu_ms_per_case"] = extra / CASES * 1e3
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _print_table(r: dict[str, Any]) -> None:
    print(f"{r['cases']} cases x {r['steps']} steps, concurrency {r['cases']}, h200 x{r['speed']}")
    print("  phase      wall s  ideal s  client-cpu s  server-cpu s  requests  prefix-hit")
    for phase in ("backend", "agent", "eval"):
        p = r[phase]
        print(
            f"  {phase:8} {p['wall_s']:8.2f} {p['ideal_s']:8.2f} {p['client_cpu_s']:13.2f}"
            f" {p['server_cpu_s']:13.2f} {p['requests']:9d} {p['prefix_hit_rate']:11.3f}"
        )
    print(
        f"  cases/s {r['cases_per_s']:.1f}   wall eval/backend {r['ratio_vs_backend']:.3f}   "
        f"eval/agent {r['ratio_vs_agent']:.3f}   peak RSS {r['peak_rss_mb']:.0f} MB"
    )
    print(
        f"  client CPU eval/backend {r['cpu_ratio_vs_backend']:.3f}   eval/agent "
        f"{r['cpu_ratio_vs_agent']:.3f}   runner {r['runner_cpu_ms_per_case']:.2f} ms CPU per case"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="modeled time 2x faster")
    parser.add_argument("--json", action="store_true", help="print a JSON object last")
    args = parser.parse_args()
    res = asyncio.run(main(args.quick))
    _print_table(res)
    if args.json:
        print(json.dumps(res))
