"""``agent serve``: the HTTP service (runs API, SSE, OpenAI-compatible facade) on uvicorn.

Parses options, builds :func:`agent.serve.create_app`, and runs it. SIGTERM or Ctrl-C
drains: ``/readyz`` turns 503, new runs are refused, event streams end (clients
reconnect with ``Last-Event-ID``), running runs stop at their next step boundary and are
released, so a restart — or another replica on the same ``--store`` — resumes them.
Exit codes: 0 after a clean shutdown (one process: by the signal, as uvicorn does), 2 for
bad options or task files; with ``--workers``, 1 when a worker could not start or had to
be killed (a second signal, or ``--drain-s`` long past).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
import uvicorn

from agent.cli._options import model_url_option, sim_script_option

__all__ = ["serve_cmd"]


@click.command("serve")
@click.argument("task_files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--tasks",
    "tasks_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Serve every task file in this folder (*.yaml, *.yml, */task.yaml).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs --token.",
)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--store",
    envvar="AGENT_STORE",
    show_envvar=True,
    default=".agent",
    show_default=True,
    help="Run store folder, or postgresql:// URL (replicas share it).",
)
@model_url_option("vLLM URL; overrides the tasks' model.url.")
@sim_script_option("Start the simulated vLLM server with this script and serve against it.")
@click.option(
    "--sim-profile",
    type=click.Choice(["instant", "h100", "h200"]),
    default="instant",
    show_default=True,
    help="Timing profile of --sim.",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    envvar="AGENT_SERVE_TOKENS",
    show_envvar=True,
    help="Bearer token clients must send (repeatable; env: comma-separated).",
)
@click.option("--cors-origin", "cors", multiple=True, help="Allow this browser origin (CORS).")
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--rate",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Requests per second per token (429 beyond, with Retry-After).",
)
@click.option("--burst", default=100, show_default=True, type=click.IntRange(1))
@click.option(
    "--max-runs",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Runs in progress at once per token.",
)
@click.option(
    "--max-streams",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Event streams and waits open at once per token (429 beyond).",
)
@click.option(
    "--drain-s",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGTERM, how long runs may take to reach a step boundary.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    envvar="AGENT_SERVE_WORKERS",
    show_envvar=True,
    help="Processes serving the port (up to one per core); replicas on the same --store.",
)
@click.option("--otel", is_flag=True, help="OpenTelemetry GenAI spans of runs (otel extra).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve_cmd(task_files: tuple[Path, ...], tasks_dir: Path | None, **o: Any) -> None:
    """Serve TASK.yaml files (or --tasks DIR) over HTTP; each task by its name.

    Routes: /v1/runs (POST; /wait), /v1/runs/{id} (GET; /events as SSE; /approval and
    /cancel POST), /v1/threads, /v1/tasks, /v1/chat/completions, /v1/models, /healthz,
    /readyz, /metrics, /openapi.json. See README, "HTTP service".
    """
    from agent.errors import ConfigError

    try:
        _serve(list(task_files), tasks_dir, o)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _serve(files: list[Path], tasks_dir: Path | None, o: dict[str, Any]) -> None:
    from agent.errors import ConfigError
    from agent.serve._security import is_loopback

    if not files and tasks_dir is None:
        raise ConfigError("no tasks to serve: give TASK.yaml files or --tasks DIR")
    tokens = [t.strip() for value in o["tokens"] for t in value.split(",") if t.strip()]
    if not tokens and not is_loopback(o["host"]):
        raise ConfigError(
            f"--host {o['host']}: a server reachable from other machines needs --token "
            "(or AGENT_SERVE_TOKENS); without one, bind to 127.0.0.1"
        )
    with ExitStack() as stack:
        model_url = o["model_url"]
        if o["sim_script"] is not None:
            model_url = _start_sim(o["sim_script"], o["sim_profile"], stack)
        plan = _Plan(files, tasks_dir, {**o, "tokens": tokens}, model_url)
        if o["workers"] == 1:
            plan.serve()
            return
        from agent.serve import create_app
        from agent.serve._workers import supervise

        # a bad task or store fails once, here, not in each worker
        checked = create_app(plan.config()).state.service
        for store in {checked.runs, checked.events}:  # one for Postgres
            store.db.close()
        plan.peers = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-serve-")))
        uvicorn_config = plan.uvicorn_config(None)
        sock = uvicorn_config.bind_socket()
        sock.listen(uvicorn_config.backlog)  # connections wait for a worker, not refused
        # a worker may wait its graceful shutdown out, then drain: time for both, and more
        grace_s = (int(o["drain_s"]) + 5) + o["drain_s"] + 10
        code = supervise(o["workers"], _worker, (plan, sock), grace_s)
        if code:
            raise SystemExit(code)


@dataclasses.dataclass
class _Plan:
    """What each server process builds (picklable: a worker gets it from the parent)."""

    files: list[Path]
    tasks_dir: Path | None
    o: dict[str, Any]
    model_url: str | None
    peers: Path | None = None
    server: Any = None
    """The server :meth:`serve` runs (a worker asks whether it ever started)."""

    def config(self) -> Any:
        from agent.serve import SecurityConfig, ServeConfig

        o, tracer = self.o, None
        if o["otel"]:
            from agent.tracing import cli_tracer

            tracer = cli_tracer()
        return ServeConfig(
            tasks=self.files,
            tasks_dir=self.tasks_dir,
            store=o["store"],
            model_url=self.model_url,
            security=SecurityConfig(
                o["tokens"], o["rate"], o["burst"], o["max_body_bytes"], o["max_streams"]
            ),
            max_active_per_token=o["max_runs"],
            cors_origins=list(o["cors"]),
            drain_s=o["drain_s"],
            tracer=tracer,
            peers=self.peers,
        )

    def uvicorn_config(self, app: Any) -> uvicorn.Config:
        o = self.o
        return uvicorn.Config(
            app,
            host=o["host"],
            port=o["port"],
            log_level=o["log_level"],
            timeout_graceful_shutdown=int(o["drain_s"]) + 5,
            lifespan="on",
        )

    def serve(self, sockets: list[socket.socket] | None = None) -> None:
        from agent._gc import tune_gc
        from agent.serve import create_app

        app = create_app(self.config())
        server = _Server(self.uvicorn_config(app))
        server.service = app.state.service
        server.worker = sockets is not None
        self.server = server
        tune_gc()  # many runs at once: fewer, cheaper collections
        server.run(sockets)


def _worker(plan: _Plan, sock: socket.socket, parent: int) -> None:
    """One worker of ``--workers N`` (in a process of its own)."""
    from agent.serve._workers import STARTUP_FAILURE, die_with_parent

    die_with_parent(parent)
    plan.uvicorn_config(None)  # configures uvicorn's logging, for a failure before it starts
    try:
        plan.serve([sock])
    except Exception:
        logging.getLogger("uvicorn.error").exception("worker %d failed", os.getpid())
    # uvicorn before 0.53 returns (not exits 3) when its lifespan fails to start
    if plan.server is None or not plan.server.started:
        raise SystemExit(STARTUP_FAILURE)


class _Server(uvicorn.Server):
    """uvicorn's server, told about SIGTERM first so that event streams end and runs stop
    at a step boundary while uvicorn waits for connections to close."""

    service: Any = None
    worker = False
    """A worker of ``--workers``: Ctrl-C reaches it and its parent's SIGTERM after it, which
    must not count as a second Ctrl-C (force exit); the parent forces if asked twice."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.service is not None:
            self.service.begin_shutdown()
        super().handle_exit(signal.SIGTERM if self.worker else sig, frame)


def _start_sim(script: Path, profile: str, stack: ExitStack) -> str:
    from agent.sim import ScriptPolicy, SimConfig
    from agent.testing import run_sim

    server = stack.enter_context(
        run_sim(ScriptPolicy.from_file(script), SimConfig(profile=profile))
    )
    click.echo(
        f"model: SIMULATED — the project's simulated vLLM server at {server.url} replays "
        f"{script}; no real model is running.",
        err=True,
    )
    return server.url
