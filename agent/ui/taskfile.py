""" "Load task file" on the page: a task file's model settings, never its policies.

A task file loaded from the page fills the left column — system prompt, mode, tools,
schema, sampling — and the message box with its input. Its policies (workspace, hosts,
writes), services and store are ignored: those are the server's, set where it started
(``agent ui TASK.yaml`` and its options), so a page user cannot widen what tools may do
or start processes on the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.task import Task, load_yaml_model

__all__ = ["read_task_file"]


def read_task_file(path: Path, shown_name: str | None = None) -> tuple[Any, ...]:
    """The left column's values from a task file (ConfigError naming the problems):
    mode, system, tools, schema, temperature, top_p, max_tokens, seed, input, status."""
    try:
        task = load_yaml_model(path, Task)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(str(path), shown_name or path.name)) from None
    _check_tools(task, shown_name or path.name)
    s = task.model.sampling
    mode = "json" if task.output_schema else ("tools" if task.tools.enabled else "chat")
    try:
        text = task.render_input()
    except ConfigError:
        text = task.input  # its {vars} are for the user to fill in
    return (
        mode,
        task.system or "",
        list(task.tools.enabled),
        json.dumps(task.output_schema, indent=2) if task.output_schema else "",
        s.temperature if s.temperature is not None else 0.7,
        s.top_p if s.top_p is not None else 1.0,
        s.max_tokens,
        "" if s.seed is None else str(s.seed),
        text,
        f"task: {task.name or shown_name or path.name} (model settings loaded; the "
        "server's policies apply)",
    )


def _check_tools(task: Task, name: str) -> None:
    from tools.registry import ToolRegistry

    registry = ToolRegistry.default()
    unknown = [name for name in task.tools.enabled if name not in registry]
    if unknown:
        raise ConfigError(
            f"{name}: tools.enabled: unknown tool(s) {', '.join(unknown)} "
            f"(available: {', '.join(registry.names())})"
        )
