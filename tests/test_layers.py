"""The layers import only downwards: the format core and the plain values import nothing of
the framework above them, so they stay pure (string <-> dataclass, no I/O) and cheap."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("agent", "tools", "graphs", "evals")
# module -> the project modules it may import
ALLOWED = {
    "agent/types.py": set(),
    "agent/config.py": set(),
    "agent/errors.py": {"agent.types"},
    "agent/_json.py": set(),
    "agent/_hermes_call.py": {"agent._json", "agent.types"},
    "agent/hermes.py": {"agent._hermes_call", "agent.types"},
    "agent/chatml.py": {"agent._json", "agent.types"},
    "agent/jsonmode.py": {
        "agent._json",
        "agent.errors",
        "agent.types",
        "agent.chatml",
        "agent.hermes",
    },
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in PROJECT:  # from agent import x
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in PROJECT}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_core_modules_import_nothing_above_them(module: str) -> None:
    extra = _imports(ROOT / module) - ALLOWED[module]
    assert not extra, f"{module} imports {sorted(extra)}, above its layer"
