"""``agent schema FORMAT``: print a file format's JSON Schema, for editors and validators.

Formats are registered in :data:`_FORMATS` as ``name -> ("module:function", help)``, so a
new one (an eval suite, say) is one line, and the module is imported only when asked for.

    agent schema task > task.schema.json     # then point your editor's YAML plugin at it
"""

from __future__ import annotations

import importlib
import json

import click

__all__ = ["schema_cmd"]

_FORMATS: dict[str, tuple[str, str]] = {
    "suite": ("evals.suite:suite_json_schema", "an eval suite (agent eval run SUITE.yaml)"),
    "task": ("agent.task:task_json_schema", "a task file (agent run TASK.yaml)"),
}


def _formats_help() -> str:
    rows = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in sorted(_FORMATS.items()))
    return f"\b\nFormats:\n{rows}"


@click.command("schema", epilog=_formats_help())
@click.argument("format", type=click.Choice(sorted(_FORMATS)), metavar="FORMAT")
def schema_cmd(format: str) -> None:
    """Print the JSON Schema of FORMAT (indent 2).

    Example: agent schema task > task.schema.json
    """
    module, attr = _FORMATS[format][0].split(":")
    schema = getattr(importlib.import_module(module), attr)()
    click.echo(json.dumps(schema, indent=2))
