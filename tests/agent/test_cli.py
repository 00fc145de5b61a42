"""The ``agent`` command group: every command loads, has --help, and README documents it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import __version__
from agent.cli import _COMMANDS, main

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_every_command_has_help_and_is_documented(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert f"agent {name}" in README


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_readme_documents_every_task_key() -> None:
    from pydantic import BaseModel

    from agent.task import Task

    def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            sub = next(
                (
                    a
                    for a in getattr(field.annotation, "__args__", (field.annotation,))
                    if isinstance(a, type) and issubclass(a, BaseModel)
                ),
                None,
            )
            if sub is None and isinstance(field.annotation, type):
                sub = field.annotation if issubclass(field.annotation, BaseModel) else None
            if sub is not None and name != "services":
                out += keys(sub, f"{prefix}{name}.")
            else:
                out.append(prefix + name)
        return out

    def documented(key: str) -> bool:
        if f"`{key}`" in README or f"`{key}[]." in README:
            return True
        parent, _, leaf = key.rpartition(".")
        return any(f"`{parent}." in line and f"`{leaf}`" in line for line in README.splitlines())

    all_keys = keys(Task)
    assert "limits.max_steps" in all_keys and "tools.http.allowed_hosts" in all_keys
    missing = [k for k in all_keys if not documented(k)]
    assert not missing, f"README's task-file table does not document: {missing}"
