"""``agent ui [TASK.yaml]``: the web UI, on http://127.0.0.1:7861 by default.

Needs the ``ui`` extra (Gradio); without it the command says how to install it (exit 2).
It listens on loopback unless told otherwise, and refuses any other address without
``--auth``. Exit codes: 0 stopped by Ctrl-C / SIGTERM, 2 bad input (task file, option,
missing extra, port in use).
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from agent.cli._options import model_url_option, sim_script_option

__all__ = ["ui_cmd"]

INSTALL = "pip install 'hermes-vllm-agent[ui]'"


@click.command("ui")
@click.argument("task", required=False, type=click.Path(dir_okay=False, path_type=Path))
@model_url_option("vLLM URL; overrides the task file's model.url.")
@sim_script_option("Start the simulated vLLM server with this script and use it (no GPU needed).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    envvar="GRADIO_SERVER_PORT",
    show_envvar=True,
    default=7861,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on.",
)
@click.option(
    "--auth",
    envvar="AGENT_UI_AUTH",
    show_envvar=True,
    metavar="USER:PASSWORD",
    help="Ask for this login (required to listen on a non-loopback address).",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Folder the file and SQL tools see (default: the task's, else the current one).",
)
@click.option(
    "--store",
    envvar="AGENT_STORE",
    show_envvar=True,
    help="Run store folder, shared with agent runs (default: the task's, else .agent).",
)
@click.pass_context
def ui_cmd(
    ctx: click.Context,
    task: Path | None,
    model_url: str | None,
    sim_script: Path | None,
    host: str,
    port: int,
    auth: str | None,
    workspace: Path | None,
    store: str | None,
) -> None:
    """Serve the web UI: chat, function calling and JSON modes on the real agent loop.

    Example: agent ui examples/sales_duckdb/task.yaml --sim examples/sales_duckdb/script.yaml
    """
    from agent.ui.app import is_loopback

    given = ctx.get_parameter_source("model_url") == click.core.ParameterSource.COMMANDLINE
    if sim_script is not None and given:
        raise click.UsageError("give --model-url or --sim, not both")
    if sim_script is not None:
        model_url = None  # AGENT_MODEL_URL gives way to the simulator
    login = _auth(auth)
    if not is_loopback(host) and login is None:
        raise click.UsageError(
            f"--host {host} is reachable from other machines: give --auth USER:PASSWORD "
            "(or AGENT_UI_AUTH) to require a login, or keep the default 127.0.0.1"
        )
    if not has_gradio():
        click.echo(f"error: agent ui needs the ui extra (Gradio): {INSTALL}", err=True)
        sys.exit(2)
    from agent.errors import ConfigError
    from agent.ui.app import base_task

    try:
        base = base_task(task, workspace=workspace, store=store)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _serve(base, model_url, sim_script, host, port, login)


def _check_url(url: str) -> str:
    from agent.errors import ConfigError
    from agent.ui.settings import Settings

    try:
        return Settings(model_url=url).check_url()
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--model-url") from None


def has_gradio() -> bool:
    """Whether the ``ui`` extra is installed (without importing Gradio)."""
    return importlib.util.find_spec("gradio") is not None


def _auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise click.BadParameter("use USER:PASSWORD", param_hint="--auth")
    return user, password


def _serve(
    base: Any, model_url: str | None, script: Path | None, host: str, port: int, login: Any
) -> None:
    from agent.ui.app import build_app

    with contextlib.ExitStack() as stack:
        simulated = None
        if script is not None:
            from agent.errors import ConfigError
            from agent.sim import ScriptPolicy
            from agent.testing import run_sim

            try:
                policy = ScriptPolicy.from_file(script)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from None
            server = stack.enter_context(run_sim(policy))
            model_url, simulated = server.url, f"at {server.url} replays {script}"
        url = _check_url(base.model.urls(model_url)[0])
        app = build_app(base, url, simulated=simulated)
        try:
            local = app.launch(host, port, auth=login, quiet=True)
        except OSError as exc:
            raise click.UsageError(f"cannot listen on {host}:{port}: {exc}") from None
        stack.callback(app.close)
        model = f"SIMULATED ({simulated})" if simulated else url
        click.echo(f"agent ui: {local}  model: {model}  (Ctrl-C stops)", err=True)
        _wait_for_signal()


def _wait_for_signal() -> None:
    """Until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
