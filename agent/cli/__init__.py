"""The ``agent`` command: a thin click group whose commands parse, then delegate.

Commands live in their own modules and are imported only when invoked, so
``agent --help`` and ``agent parse`` stay fast (LangGraph alone costs about a second).

Exit codes, shared by every command:
  0  success
  1  the task ran but did not succeed (limit, loop, invalid output, tool or model failure)
  2  bad input: a task file, an option or an argument (the message names it)
  3  the model backend is unreachable (the message names the URL)
"""

from __future__ import annotations

import importlib

import click

from agent import __version__

__all__ = ["main"]

# command name -> ("module:attribute", one-line help); each module owns its command.
# The help line lives here so `agent --help` imports nothing.
_COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("agent.cli.eval:eval_group", "Run eval suites and BFCL; report, compare, query."),
    "parse": ("agent.cli.format:parse_cmd", "Parse raw model output into content, calls, errors."),
    "prompt": ("agent.cli.format:prompt_cmd", "Print the exact prompt for messages or a task."),
    "run": ("agent.cli.run:run_cmd", "Run a task file to a final answer, with live progress."),
    "runs": ("agent.cli.runs:runs_group", "List past runs and show one run's trace."),
    "serve": ("agent.cli.serve:serve_cmd", "Serve tasks over HTTP: runs API, SSE, OpenAI facade."),
    "schema": ("agent.cli.task:schema_cmd", "Print a file format's JSON Schema (e.g. task)."),
    "sim": ("agent.cli.sim:sim_cmd", "Run the simulated vLLM server (no GPU needed)."),
    "tools": ("agent.cli.tools:tools_cmd", "List the available tools and their schemas."),
    "tool": ("agent.cli.tools:tool_group", "Run one tool call through the dispatcher."),
    "ui": ("agent.cli.ui:ui_cmd", "Serve the web UI (Gradio; the ui extra) on 127.0.0.1:7861."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module, attr = _COMMANDS[cmd_name][0].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in sorted(_COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agent")
def main() -> None:
    """Tool-using agents for Hermes 3 on vLLM."""
