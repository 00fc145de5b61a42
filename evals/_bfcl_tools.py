"""BFCL functions as the project's tools, and the model's calls back as BFCL's decoded form.

Names: BFCL functions may be dotted (``math.power``); a tool name must match
``^[a-zA-Z0-9_-]{1,64}$``. :class:`ToolNames` maps each name of a case's function list to a
tool name and back: a valid name stays itself; any other character becomes ``_``
(``math.power`` → ``math_power``, what BFCL's own function-calling handlers show models),
and a result that is taken — by a valid name in the same list or an earlier mapping — gets
``_2``, ``_3``… So the map is a bijection on the list, whatever the names. Trade-off: it
depends on the list, not on the name alone, so keep the map with the case.

Schemas: BFCL writes parameters in its own types; :func:`to_json_schema` converts them
recursively (``dict``→``object``, ``float``→``number``, ``tuple``→``array``, ``any``→no
``type``) and keeps every other key (``enum``, ``items``, ``properties``, ``required``,
``description``, ``default``…) as it is.

>>> names = ToolNames.of(["math.power", "math_power"])
>>> names.tool("math.power"), names.bfcl("math_power_2")
('math_power_2', 'math.power')
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.types import ToolCall, ToolSpec

__all__ = ["ToolNames", "to_bfcl_calls", "to_json_schema", "to_tool_calls", "to_tool_specs"]

_VALID_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_INVALID_CHAR = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME = 64
# BFCL type → JSON Schema type; JSON Schema's own names pass through.
_JSON_TYPES = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
    "number": "number",
    "null": "null",
}


@dataclass(frozen=True)
class ToolNames:
    """A reversible map between a case's BFCL function names and tool names.

    >>> ToolNames.of(["math.power", "sum"]).tool("math.power")
    'math_power'
    """

    to_tool: dict[str, str]
    to_bfcl: dict[str, str]

    @classmethod
    def of(cls, names: Iterable[str]) -> ToolNames:
        """Map every name; valid names keep themselves, the rest avoid every name taken."""
        names = list(dict.fromkeys(names))
        taken = {n for n in names if _VALID_NAME.fullmatch(n)}
        to_tool = {}
        for name in names:
            if name in taken:
                to_tool[name] = name
                continue
            base = _INVALID_CHAR.sub("_", name)[:_MAX_NAME] or "_"
            tool, n = base, 2
            while tool in taken:
                suffix = f"_{n}"
                tool, n = base[: _MAX_NAME - len(suffix)] + suffix, n + 1
            taken.add(tool)
            to_tool[name] = tool
        return cls(to_tool, {tool: name for name, tool in to_tool.items()})

    @classmethod
    def for_functions(cls, functions: Iterable[dict[str, Any]]) -> ToolNames:
        """The map of a case's ``function`` list."""
        return cls.of(f["name"] for f in functions)

    def tool(self, name: str) -> str:
        """The tool name of a BFCL function name of the list (``KeyError`` otherwise)."""
        return self.to_tool[name]

    def bfcl(self, tool_name: str) -> str:
        """The BFCL name of a tool name; a name outside the map (a made-up tool) is kept."""
        return self.to_bfcl.get(tool_name, tool_name)


def to_json_schema(schema: dict[str, Any], where: str = "parameters") -> dict[str, Any]:
    """A BFCL parameter schema as JSON Schema (a new dict; the input is not changed).

    >>> to_json_schema({"type": "dict", "properties": {"x": {"type": "float"},
    ...                 "t": {"type": "tuple", "items": {"type": "any"}}}})
    {'type': 'object', 'properties': {'x': {'type': 'number'}, 't': {'type': 'array', 'items': {}}}}
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if value == "any":
                continue
            if not isinstance(value, str) or value not in _JSON_TYPES:
                raise ValueError(
                    f"{where}: BFCL type {value!r} has no JSON Schema equivalent here; known: "
                    f"{', '.join(sorted({*_JSON_TYPES, 'any'}))}"
                )
            out[key] = _JSON_TYPES[value]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub, f"{where}.{name}") for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = to_json_schema(value, f"{where}[]")
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_tool_specs(
    functions: list[dict[str, Any]], names: ToolNames | None = None
) -> list[ToolSpec]:
    """The case's functions as tool specs, named by ``names`` (default: the case's map).

    >>> to_tool_specs([{"name": "math.power", "description": "x**y",
    ...                 "parameters": {"type": "dict", "properties": {}}}])[0].name
    'math_power'
    """
    names = names or ToolNames.for_functions(functions)
    return [
        ToolSpec(
            names.tool(f["name"]),
            f.get("description", "") or "",
            to_json_schema(
                f.get("parameters") or {"type": "dict", "properties": {}}, f"{f['name']}.parameters"
            ),
        )
        for f in functions
    ]


def to_bfcl_calls(calls: Iterable[ToolCall], names: ToolNames) -> list[dict[str, dict[str, Any]]]:
    """Parsed calls in BFCL's decoded form ``[{"func_name": {"arg": value}}]``.

    >>> to_bfcl_calls([ToolCall("math_power", {"base": 2})], ToolNames.of(["math.power"]))
    [{'math.power': {'base': 2}}]
    """
    return [{names.bfcl(call.name): dict(call.arguments)} for call in calls]


def to_tool_calls(decoded: Iterable[dict[str, dict[str, Any]]], names: ToolNames) -> list[ToolCall]:
    """The inverse of :func:`to_bfcl_calls` (names outside the map are kept as they are).

    >>> to_tool_calls([{"math.power": {"base": 2}}], ToolNames.of(["math.power"]))[0].name
    'math_power'
    """
    calls = []
    for item in decoded:
        ((name, args),) = item.items()
        calls.append(ToolCall(names.to_tool.get(name, name), dict(args)))
    return calls
