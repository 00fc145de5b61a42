"""The registry: duplicates, lookups, built-ins, and plugins from real entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import ToolDefinitionError
from tools.base import tool
from tools.builtins import BUILTINS
from tools.registry import ToolRegistry


@tool
def ping() -> str:
    """Say pong."""
    return "pong"


def test_register_lookup_and_closest() -> None:
    reg = ToolRegistry([ping])
    assert reg.names() == ["ping"] and "ping" in reg and len(reg) == 1
    assert reg.get("ping") is ping
    assert reg.closest("pnig") == "ping"
    with pytest.raises(KeyError, match="did you mean 'ping'"):
        reg.get("pin")


def test_duplicate_names_are_refused() -> None:
    reg = ToolRegistry([ping])
    with pytest.raises(ToolDefinitionError, match=r"Duplicate tool name 'ping'.*name='other_name'"):
        reg.register(ping)


def test_default_has_the_builtins_registered_through_the_hook() -> None:
    reg = ToolRegistry.default(plugins=False)
    assert reg.names() == [t.name for t in BUILTINS]
    assert {reg.sources[n] for n in reg.names()} == {"built-in"}
    assert reg.get("sql_query").sandbox == "process"
    http = reg.get("http_request")
    assert not http.has_side_effects({"url": "u"})
    assert http.has_side_effects({"url": "u", "method": "POST"})
    assert reg.get("write_file").has_side_effects({})
    assert "ctx" not in str(reg.get("read_file").parameters)


def test_select_keeps_order_and_refuses_unknown() -> None:
    reg = ToolRegistry.default(plugins=False)
    assert reg.select(["read_file", "sql_query"]).names() == ["read_file", "sql_query"]
    with pytest.raises(KeyError):
        reg.select(["nope"])


def _make_distribution(root: Path, module: str, entry: str, body: str) -> None:
    """A real installed distribution: a module plus a *.dist-info with entry_points.txt."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[agent.tools]\n{module} = {entry}\n")


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    importlib.invalidate_caches()
    for name in [m for m in sys.modules if m.startswith("agentplug_")]:
        del sys.modules[name]


def test_entry_point_plugin_is_loaded(plugin_path: Path) -> None:
    _make_distribution(
        plugin_path,
        "agentplug_weather",
        "agentplug_weather:register",
        """
        from tools.base import tool

        @tool
        def get_weather(city: str) -> str:
            '''Weather of a city.

            Args:
                city: City name.
            '''
            return f"sunny in {city}"

        def register(registry):
            registry.register(get_weather)
    """,
    )
    importlib.invalidate_caches()
    reg = ToolRegistry.default()
    assert "get_weather" in reg and "read_file" in reg
    assert "agentplug_weather" in reg.sources["get_weather"]
    assert reg.get("get_weather").parameters["properties"]["city"]["description"] == "City name."


@pytest.mark.parametrize(
    ("entry", "body", "message"),
    [
        (
            "agentplug_bad:register",
            "def register(registry):\n    raise RuntimeError('boom')\n",
            "failed while registering its tools: RuntimeError: boom",
        ),
        ("agentplug_bad:register", "register = 42\n", "must name a function register"),
        ("agentplug_bad:missing", "x = 1\n", "could not be imported"),
        (
            "agentplug_bad:register",
            "def f(x):\n    '''Doc.'''\ndef register(registry):\n    registry.register(f)\n",
            "has no type annotation",
        ),
    ],
)
def test_broken_plugins_are_refused_naming_the_entry_point(
    plugin_path: Path, entry: str, body: str, message: str
) -> None:
    _make_distribution(plugin_path, "agentplug_bad", entry, body)
    importlib.invalidate_caches()
    with pytest.raises(ToolDefinitionError, match="agentplug_bad") as info:
        ToolRegistry().load_entry_points()
    assert message in str(info.value)
