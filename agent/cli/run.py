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
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import click

from agent.cli._options import model_url_option, parse_vars, sim_script_option

__all__ = ["run_cmd"]


@dataclasses.dataclass(frozen=True)
class _Options:
    task: Path
    vars: dict[str, str]
    model_url: str | None
    sim_script: Path | None
    resume: str | None
    approve: str | None
    as_json: bool
    trace_file: Path | None
    store: str | None
    otel: bool = False


@click.command("run")
@click.argument("task", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result.")
@model_url_option("vLLM URL; overrides the task file's model.url.")
@sim_script_option("Start the simulated vLLM server with this script and run against it.")
@click.option(
    "--resume",
    "resume",
    metavar="RUN_ID",
    help="Continue a run from its checkpoint (its id, or the start of its short id).",
)
@click.option(
    "--approve",
    type=click.Choice(["ask", "all", "none"]),
    default=None,
    help="Calls that need approval: ask, all, or none (deny). "
    "Default: ask on a terminal, none otherwise.",
)
@click.option(
    "--var",
    "vars_",
    multiple=True,
    metavar="K=V",
    help="Fill {K} in the task's input (repeatable).",
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Copy the trace here (its folder must exist).",
)
@click.option(
    "--store",
    envvar="AGENT_STORE",
    show_envvar=True,
    help="Run store folder (or postgresql:// URL); overrides the task file's store.",
)
@click.option(
    "--otel",
    is_flag=True,
    help="OpenTelemetry GenAI spans of the run (the otel extra): to the global provider "
    "(opentelemetry-instrument), else printed to stderr.",
)
def run_cmd(
    task: Path,
    as_json: bool,
    model_url: str | None,
    sim_script: Path | None,
    resume: str | None,
    approve: str | None,
    vars_: tuple[str, ...],
    trace_file: Path | None,
    store: str | None,
    otel: bool,
) -> None:
    """Run TASK.yaml until the model gives a final answer.

    Ctrl-C or SIGTERM stops the run (exit 130 or 143) and marks it interrupted; it
    prints the command that continues it.
    """
    from agent.errors import ConfigError

    if trace_file is not None and not trace_file.parent.is_dir():
        raise click.BadParameter(
            f"folder {trace_file.parent} does not exist (create it first)", param_hint="--trace"
        )
    started: list[str] = []
    try:
        options = _Options(
            task,
            parse_vars(vars_),
            model_url,
            sim_script,
            resume,
            approve,
            as_json,
            trace_file,
            store,
            otel,
        )
        code = _run_until_signal(options, started)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError) as stop:
        code = 143 if isinstance(stop, asyncio.CancelledError) else 130
        if started:
            click.echo(
                f"interrupted: run {started[0]} stopped; continue it with: agent run "
                f"{task} --resume {started[0].rsplit('_', 1)[-1]}",
                err=True,
            )
    sys.exit(code)


def _run_until_signal(options: _Options, started: list[str]) -> int:
    """Run in an event loop where SIGTERM cancels the run as Ctrl-C does."""

    async def main() -> int:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await _run(options, started)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


async def _run(o: _Options, started: list[str]) -> int:
    from agent.api import Agent
    from agent.task import load_task

    console = _console()
    task = load_task(o.task, o.vars)
    if o.store is not None:
        task = task.model_copy(update={"store": o.store})
    run_id = _resolve_run(task, o.resume) if o.resume else None
    result = None
    async with AsyncExitStack() as stack:
        model_url = o.model_url
        if o.sim_script is not None:
            model_url = await _start_sim(o.sim_script, stack, console)
        agent = Agent.from_task(task, vars=o.vars, model_url=model_url)
        stack.push_async_callback(agent.aclose)
        if o.otel:
            from agent.tracing import cli_tracer

            agent.tracer = cli_tracer()
        printer = _Progress(console, quiet=o.as_json, started=started)
        result = await agent.run(
            run_id=run_id,
            resume=run_id is not None,
            approve=_approver(o.approve, console),
            on_event=printer,
        )
    _report(result, o.as_json)  # the answer first: nothing below may lose it
    if o.trace_file is not None and result.trace_path and Path(result.trace_path).exists():
        try:
            shutil.copyfile(result.trace_path, o.trace_file)
        except OSError as exc:
            click.echo(
                f"error: --trace {o.trace_file}: {exc.strerror or exc} (the trace is "
                f"kept at {result.trace_path})",
                err=True,
            )
            return 2
    if result.error_kind == "backend_unavailable":
        return 3
    return 0 if result.ok else 1


def _resolve_run(task: Any, ref: str) -> str:
    """The full id of the run ``--resume REF`` names (a unique start of its id or short id)."""
    from agent.errors import ConfigError
    from agent.persistence import store_location
    from agent.runs import open_run_store

    location = store_location(task.store)
    folder = location.folder
    if location.postgres_url is None and (folder is None or not (folder / "runs.db").is_file()):
        raise ConfigError(f"no run {ref!r} to resume: no run store at {folder}")
    runs = open_run_store(location)
    assert runs is not None
    return runs.find(ref).run_id


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

    def __init__(self, console: Any, *, quiet: bool, started: list[str]) -> None:
        self.console, self.quiet, self.started = console, quiet, started

    def __call__(self, event: Any) -> None:
        if event.kind == "run_started":
            self.started[:] = [event.run_id]
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
