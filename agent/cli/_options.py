"""Options and option parsing shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from agent.errors import ConfigError

__all__ = ["model_url_option", "parse_vars", "sim_script_option"]


def model_url_option(help: str) -> Callable[[Any], Any]:
    """``--model-url`` (env ``AGENT_MODEL_URL``), declared once for every command."""
    return click.option("--model-url", envvar="AGENT_MODEL_URL", show_envvar=True, help=help)


def sim_script_option(help: str) -> Callable[[Any], Any]:
    """``--sim SCRIPT``: start the simulated vLLM server with this script (``sim_script``)."""
    return click.option(
        "--sim",
        "sim_script",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help,
    )


def parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("year=2026", "who=Ada")`` -> ``{"year": "2026", "who": "Ada"}``; bad pairs raise.

    >>> parse_vars(("a=1", "b=x=y"))
    {'a': '1', 'b': 'x=y'}
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--var {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out
