"""``agent tools`` and ``agent tool call``: list tools, run one call through the dispatcher.

``agent tool call`` uses the same dispatcher and sandbox as a run, with policies built
from its options: the workspace is the current directory unless ``--workspace`` says
otherwise, read-only unless ``--allow-write`` (which also lets SQL write), and no HTTP
host is allowed unless named with ``--allow-host``. For a tool that runs in the sandbox, a
workspace holding the Python environment or the project's code is refused (exit 2).

Exit codes: 0 the call succeeded; 1 the tool failed (policy, timeout, execution);
2 bad input (malformed ``--args`` JSON, unknown tool, arguments that fail the schema).

    agent tools --json
    agent tool call sql_query --args '{"query": "SELECT 42"}'
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

__all__ = ["tool_group", "tools_cmd"]


@click.command("tools")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
def tools_cmd(as_json: bool) -> None:
    """List the available tools (built-ins and plugins) and their argument schemas."""
    from tools.registry import ToolRegistry

    registry = _load_registry()
    if as_json:
        rows = [
            {
                **t.spec().to_openai()["function"],
                "sandbox": t.sandbox,
                "side_effects": t.side_effects if isinstance(t.side_effects, bool) else "depends",
                "source": registry.sources.get(t.name),
            }
            for t in registry
        ]
        click.echo(json.dumps({"tools": rows}, ensure_ascii=False))
        return
    _print_table(registry if isinstance(registry, ToolRegistry) else ToolRegistry())


@click.group("tool")
def tool_group() -> None:
    """Run tools by hand."""


@tool_group.command("call")
@click.argument("name")
@click.option(
    "--args",
    "args_json",
    default="{}",
    show_default=True,
    help="The call's arguments as a JSON object.",
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Folder the file and SQL tools are confined to.",
)
@click.option(
    "--allow-host", "hosts", multiple=True, help="Host http_request may reach (repeatable)."
)
@click.option("--allow-private-network", is_flag=True, help="Let http_request reach loopback/LAN.")
@click.option(
    "--allow-write", is_flag=True, help="Allow write_file, writing SQL and every HTTP method."
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Hard timeout of the call, seconds.",
)
def call_cmd(
    name: str,
    args_json: str,
    workspace: Path,
    hosts: tuple[str, ...],
    allow_private_network: bool,
    allow_write: bool,
    timeout: float,
) -> None:
    """Run one tool call NAME with --args JSON and print its result as one JSON object."""
    try:
        arguments = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise click.UsageError(
            f"--args is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            """pass an object, e.g. --args '{"path": "."}'"""
        ) from None
    if not isinstance(arguments, dict):
        raise click.UsageError(f"--args must be a JSON object, not {type(arguments).__name__}")
    if not workspace.is_dir():
        raise click.UsageError(f"--workspace {workspace} is not a directory")
    from tools.policy import ToolPolicies

    policies = ToolPolicies.model_validate(
        {
            "workspace": workspace.resolve(),
            "http": {
                "allowed_hosts": list(hosts),
                "allow_private_network": allow_private_network,
                "allowed_methods": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                if allow_write
                else ["GET"],
            },
            "files": {"allow_write": allow_write},
            "sql": {"read_only": not allow_write},
            "sandbox": {"call_timeout_s": timeout},
        }
    )
    registry = _load_registry()
    if name in registry:
        from agent.errors import ConfigError
        from tools.sandbox import check_workspace

        try:
            check_workspace(policies.workspace, [registry.get(name)])
        except ConfigError as exc:
            raise click.UsageError(f"--workspace: {exc}") from None
    out = asyncio.run(_call(registry, name, arguments, policies))
    click.echo(json.dumps(out, ensure_ascii=False))
    if out["status"] != "ok":
        sys.exit(2 if out["error"] == "arguments" else 1)


async def _call(
    registry: Any, name: str, arguments: dict[str, Any], policies: Any
) -> dict[str, Any]:
    from agent.types import ToolCall
    from tools.dispatch import Dispatcher

    artifacts = Path(tempfile.mkdtemp(prefix="agent-tool-artifacts-"))
    async with Dispatcher(registry, policies, run_id="cli", artifacts_dir=artifacts) as d:
        result = await d.call(ToolCall(name, arguments))
    out = dataclasses.asdict(result)
    if result.artifact_id:
        out["artifact_path"] = str(artifacts / f"{result.artifact_id}.txt")
    return out


def _load_registry() -> Any:
    from agent.errors import ToolDefinitionError
    from tools.registry import ToolRegistry

    try:
        return ToolRegistry.default()
    except ToolDefinitionError as exc:
        raise click.ClickException(str(exc)) from None


def _print_table(registry: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(registry)} tools", show_lines=True)
    for col in ("name", "arguments", "sandbox", "side effects", "description"):
        table.add_column(col)
    for t in registry:
        props = t.parameters.get("properties", {})
        required = set(t.parameters.get("required", []))
        args = "\n".join(
            f"{k}{'' if k in required else '?'}: {_type_of(v)}" for k, v in props.items()
        )
        effects = "depends" if callable(t.side_effects) else ("yes" if t.side_effects else "no")
        table.add_row(t.name, args, t.sandbox, effects, t.description.split("\n")[0])
    Console().print(table)


def _type_of(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type_of(schema.get('items', {}))}]"
    return str(kind)
