"""``agent sim``: run the simulated vLLM server in the foreground until Ctrl-C.

Parses options, then delegates to :class:`agent.sim.SimServer`. The banner says plainly
that the model is simulated, so nobody mistakes scripted answers for Hermes 3.

Example: ``agent sim --port 8000 --profile h200 --script examples/script.yaml``
"""

from __future__ import annotations

import threading

import click

__all__ = ["sim_cmd"]

_STRUCTURED = (
    "json",
    "regex",
    "choice",
    "grammar",
    "structural_tag",
    "json_object",
    "response_format",
)


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free).",
)
@click.option(
    "--profile",
    type=click.Choice(["instant", "h100", "h200"]),
    default="instant",
    show_default=True,
    help="Timing model of the simulated GPU.",
)
@click.option(
    "--speed",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Run modeled time this many times faster than real time.",
)
@click.option(
    "--script",
    "script",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/JSON list of raw assistant outputs, entry k for the k-th turn.",
)
@click.option(
    "--max-model-len",
    default=131072,
    show_default=True,
    type=click.IntRange(1),
    help="Context window in (approximate) tokens.",
)
@click.option(
    "--model",
    default="NousResearch/Hermes-3-Llama-3.1-8B",
    show_default=True,
    help="Model name to serve.",
)
@click.option(
    "--lora-module",
    "lora_modules",
    multiple=True,
    metavar="NAME",
    help="Also serve a LoRA adapter under this name (repeatable).",
)
@click.option(
    "--error-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Fault: fraction of requests failed (0 to 1).",
)
@click.option(
    "--error-status",
    default=500,
    type=click.IntRange(400, 599),
    show_default=True,
    help="Fault: HTTP status of failed requests (400-599).",
)
@click.option(
    "--disconnect-after", type=click.IntRange(0), help="Fault: drop connections after N tokens."
)
@click.option(
    "--stall", type=click.FloatRange(0), help="Fault: stall S seconds before the first token."
)
@click.option(
    "--refuse-structured",
    multiple=True,
    type=click.Choice(_STRUCTURED),
    help="Refuse this structured-output kind with a 400 (repeatable).",
)
def sim_cmd(
    host: str,
    port: int,
    profile: str,
    speed: float,
    script: str | None,
    max_model_len: int,
    model: str,
    lora_modules: tuple[str, ...],
    error_rate: float,
    error_status: int,
    disconnect_after: int | None,
    stall: float | None,
    refuse_structured: tuple[str, ...],
) -> None:
    """Run the simulated vLLM server (no GPU needed; answers come from a script)."""
    from agent.errors import ConfigError
    from agent.sim import Faults, FunctionPolicy, ScriptPolicy, SimConfig, SimServer

    try:
        policy = ScriptPolicy.from_file(script) if script else FunctionPolicy()
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--script") from exc
    config = SimConfig(
        profile=profile,
        speed=speed,
        max_model_len=max_model_len,  # type: ignore[arg-type]
        model=model,
        lora_modules=lora_modules,
        refuse_structured=frozenset(refuse_structured),
    )
    faults = Faults(
        error_rate=error_rate,
        error_status=error_status,
        disconnect_after_tokens=disconnect_after,
        stall_s=stall,
    )
    try:
        server = SimServer(policy, config, faults).start(host, port)
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc}") from exc
    answers = f"script {script}" if script else "an empty policy (no --script given)"
    click.echo(f"SIMULATED vLLM server (not a real model): {server.url}")
    click.echo(f"  model {model!r}, profile {profile}, speed {speed}x, answers from {answers}")
    click.echo("  token counts are a deterministic approximation, not the Llama 3 tokenizer")
    click.echo(f"  OpenAI base URL: {server.url}/v1   (Ctrl-C to stop)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        server.close()
