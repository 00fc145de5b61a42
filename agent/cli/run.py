"""``agent run TASK.yaml``: run a task file to a final answer, with live progress.

Progress goes to stderr (rich), the answer to stdout, so ``agent run t.yaml > out.txt``
keeps only the answer; ``--json`` prints one JSON object instead. Exit codes: 0 done,
1 the run ended without success, 2 bad task file or options, 3 backend unreachable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click

from agent.cli._options import parse_vars

__all__ = ["run_cmd"]


@click.command("run")
@click.argument("task", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@click.option(
    "--model-url", envvar="AGENT_MODEL_URL", show_envvar=True,
    help="vLLM URL; overrides the task file's model.url.",
)
@click.option(
    "--sim",
    "sim_script",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start the simulated vLLM server with this script and run against it.",
)
@click.option("--resume", "resume_id", metavar="RUN_ID", help="Continue a run from its checkpoint.")
@click.option(
    "--approve",
    type=click.Choice(["ask", "all", "none"]),
    default=None,
    help="Calls that need approval: ask, all, or none (deny). "
    "Default: ask on a terminal, none otherwise.",
)
@click.option(
    "--var", "vars_", multiple=True, metavar="K=V",
    help="Fill {K} in the task's input (repeatable).",
)
@click.option("--trace", "trace_file", type=click.Path(path_type=Path), help="Copy the trace here.")
def run_cmd(
    task: Path,
    as_json: bool,
    model_url: str | None,
    sim_script: Path | None,
    resume_id: str | None,
    approve: str | None,
    vars_: tuple[str, ...],
    trace_file: Path | None,
) -> None:
    """Run TASK.yaml until the model gives a final answer."""
    from agent.errors import ConfigError

    try:
        variables = parse_vars(vars_)
        code = asyncio.run(
            _run(task, variables, model_url, sim_script, resume_id, approve, as_json, trace_file)
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(code)


async def _run(
    task_path: Path,
    variables: dict[str, str],
    model_url: str | None,
    sim_script: Path | None,
    resume_id: str | None,
    approve: str | None,
    as_json: bool,
    trace_file: Path | None,
) -> int:
    from agent.api import Agent
    from agent.task import load_task

    console = _console()
    task = load_task(task_path, variables)
    async with AsyncExitStack() as stack:
        if sim_script is not None:
            model_url = await _start_sim(sim_script, stack, console)
        agent = Agent.from_task(task, vars=variables, model_url=model_url)
        stack.push_async_callback(agent.aclose)
        approver = _approver(approve, console)
        printer = _Progress(console, quiet=as_json)
        result = await agent.run(
            run_id=resume_id, resume=resume_id is not None, approve=approver, on_event=printer
        )
    if trace_file is not None and result.trace_path and Path(result.trace_path).exists():
        shutil.copyfile(result.trace_path, trace_file)
    _report(result, as_json)
    if result.error_kind == "backend_unavailable":
        return 3
    return 0 if result.ok else 1


async def _start_sim(script: Path, stack: AsyncExitStack, console: Any) -> str:
    from agent.sim import ScriptPolicy
    from agent.testing import arun_sim

    server = await stack.enter_async_context(arun_sim(ScriptPolicy.from_file(script)))
    console.print(
        f"[yellow]model: SIMULATED[/] — the project's simulated vLLM server at {server.url} "
        f"replays {script}; no real model is running."
    )
    return server.url


def _approver(mode: str | None, console: Any) -> Any:
    if mode is None:
        mode = "ask" if sys.stdin.isatty() else "none"
    if mode != "ask":
        return mode

    async def ask(request: Any) -> dict[str, bool]:
        decisions = {}
        for call in request.calls:
            args = json.dumps(call.arguments, ensure_ascii=False)
            prompt = f"Allow {call.name}({args})?"
            decisions[call.id] = await asyncio.to_thread(click.confirm, prompt, err=True)
        return decisions

    return ask


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


class _Progress:
    """Prints events as they come: steps, tool calls with durations, tokens/s."""

    def __init__(self, console: Any, *, quiet: bool) -> None:
        self.console, self.quiet = console, quiet

    def __call__(self, event: Any) -> None:
        if self.quiet:
            return
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, e: Any) -> None:
        verb = "resuming" if e.resumed else "run"
        self.console.print(f"[bold]{verb}[/] {e.run_id}  task={e.task}  model={e.model_url}")

    def _on_step(self, e: Any) -> None:
        t, usage = e.generation.timings, e.generation.usage
        self.console.print(
            f"[cyan]step {e.step}[/]  {usage.completion_tokens} tokens  "
            f"{t.tokens_per_s:.0f} tok/s  ttft {t.ttft_s * 1000:.0f} ms"
            f"  cached {usage.cached_tokens or 0}/{usage.prompt_tokens}"
        )

    def _on_tool_call(self, e: Any) -> None:
        args = json.dumps(e.call.arguments, ensure_ascii=False)
        early = " [dim](early)[/]" if e.early else ""
        self.console.print(f"  → {e.call.name}({_clip(args, 120)}){early}", markup=True)

    def _on_tool_result(self, e: Any) -> None:
        r = e.result
        mark = "[green]✓[/]" if r.ok else "[red]✗[/]"
        reused = " (reused)" if e.reused else ""
        self.console.print(
            f"  {mark} {r.name} {r.duration_s * 1000:.0f} ms{reused}  {_clip(r.content, 100)!r}"
        )

    def _on_repair(self, e: Any) -> None:
        reasons = _clip("; ".join(e.reasons), 160)
        self.console.print(f"  [yellow]repair {e.consecutive}[/]: {reasons}")

    def _on_approval(self, e: Any) -> None:
        names = ", ".join(c.name for c in e.calls)
        self.console.print(f"  [magenta]approval needed[/]: {names}")

    def _on_error(self, e: Any) -> None:
        self.console.print(f"[red]error[/] {e.error_type}: {e.message}")

    def _on_final(self, e: Any) -> None:
        r = e.result
        limit = f" ({r.limit})" if r.limit else ""
        self.console.print(
            f"[bold]{r.status}{limit}[/] after {r.steps} steps, {r.tool_calls} tool calls, "
            f"{r.usage.total_tokens} tokens"
        )


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _report(result: Any, as_json: bool) -> None:
    if as_json:
        payload = dataclasses.asdict(result)
        payload["trace"] = payload.pop("trace_path")
        click.echo(json.dumps(payload, ensure_ascii=False, default=str))
        return
    answer = result.answer
    if answer is not None:
        click.echo(answer if isinstance(answer, str) else json.dumps(answer, indent=2))
    if result.error:
        click.echo(f"error: {result.error}", err=True)
