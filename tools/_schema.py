"""Schema derivation for tools: a typed function's parameters as a flat JSON Schema.

:func:`parse_docstring` reads the description and per-argument docs from a Google-style
docstring; :func:`build_args_model` builds a pydantic model of the signature and its JSON
Schema, which :func:`flatten_schema` strips of ``title`` noise and ``$ref``s (a small model
follows flat schemas better); :func:`check_schema` vets a schema given by hand. Each
refuses a bad definition with a ``ToolDefinitionError`` that says how to fix it.

>>> def add(a: int, b: int = 1) -> int: ...
>>> build_args_model(add, "add", {"a": "first"}, skip=None)[1]["required"]
['a']
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from agent.errors import ToolDefinitionError

__all__ = ["build_args_model", "check_schema", "flatten_schema", "parse_docstring"]

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?|Attributes):\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None, name: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {arg: description}).

    >>> parse_docstring("Add.\\n\\nArgs:\\n    a (int): first\\n    b: second", "add")
    ('Add.', {'a': 'first', 'b': 'second'})
    """
    if not doc or not doc.strip():
        raise ToolDefinitionError(
            f"Tool {name!r} has no docstring. Add one: its first paragraph becomes the "
            "description the model sees, and an 'Args:' section describes each parameter."
        )
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section, current, args_indent = None, None, 0
    for line in lines:
        m = _SECTION.match(line.strip())
        if m and not line.startswith(" "):
            section, current = m.group(1), None
            continue
        if section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters") and line.strip():
            indent = len(line) - len(line.lstrip())
            am = _ARG_LINE.match(line.strip())
            if am and (current is None or indent <= args_indent):
                current, args_indent = am.group(1).lstrip("*"), indent
                args[current] = am.group(2).strip()
            elif current:
                args[current] = (args[current] + " " + line.strip()).strip()
    return "\n".join(summary).strip(), args


def build_args_model(
    fn: Callable[..., Any], name: str, arg_docs: dict[str, str], *, skip: str | None
) -> tuple[Any, dict[str, Any]]:
    """A pydantic model of ``fn``'s parameters and its flattened JSON Schema."""
    import pydantic

    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(
            f"Tool {name!r}: cannot resolve its type annotations ({type(exc).__name__}: {exc}). "
            "Use types importable at module level."
        ) from None
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if pname == skip:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind == param.VAR_POSITIONAL else "**"
            raise ToolDefinitionError(
                f"Tool {name!r} takes {star}{pname}; tools take named parameters only. "
                f"Replace it with a typed parameter, e.g. `{pname}: list[str]` or "
                f"`{pname}: dict[str, str]`."
            )
        if pname not in hints:
            raise ToolDefinitionError(
                f"Parameter {pname!r} of tool {name!r} has no type annotation. "
                f"Annotate it, e.g. `{pname}: str`, so its JSON Schema can be derived."
            )
        default = ... if param.default is param.empty else param.default
        fields[pname] = (
            hints[pname],
            pydantic.Field(default, description=arg_docs.get(pname) or None),
        )
    try:
        model = pydantic.create_model(f"{name}_args", **fields)
        schema = model.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        bad = _first_bad_param(fields) or "?"
        raise ToolDefinitionError(
            f"Tool {name!r}: the type of parameter {bad!r} cannot be expressed as JSON Schema "
            f"({type(exc).__name__}). Use str, int, float, bool, list[...], dict[str, ...], "
            "Literal[...], an Enum, Optional[...] or a pydantic model."
        ) from None
    return model, flatten_schema(schema)


def _first_bad_param(fields: dict[str, Any]) -> str | None:
    import pydantic

    for pname, (hint, _) in fields.items():
        try:
            pydantic.TypeAdapter(hint).json_schema()
        except Exception:
            return pname
    return None


def flatten_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref``s and drop pydantic's ``title`` noise; recursive models keep a ``$ref``.

    >>> flatten_schema({"title": "M", "type": "object",
    ...                 "properties": {"title": {"type": "string"}}})
    {'type': 'object', 'properties': {'title': {'type': 'string'}}}
    """
    defs = schema.pop("$defs", {})
    kept: dict[str, Any] = {}

    def walk(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(x, seen) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            key = ref.removeprefix("#/$defs/")
            if key in seen:  # recursion: keep the reference, define it once
                if key not in kept:
                    kept[key] = None
                    kept[key] = walk(defs[key], (key,))
                return {"$ref": ref}
            merged = {**defs[key], **{k: v for k, v in node.items() if k != "$ref"}}
            return walk(merged, (*seen, key))
        out = {}
        for k, v in node.items():
            if k == "title":
                continue
            if k in ("properties", "patternProperties"):
                out[k] = {pk: walk(pv, seen) for pk, pv in v.items()}
            else:
                out[k] = walk(v, seen)
        return out

    flat = walk(schema, ())
    flat.setdefault("properties", {})
    if kept:
        flat["$defs"] = kept
    return flat


def check_schema(name: str, schema: Any) -> None:
    """Refuse an explicit ``parameters`` schema that is not a valid JSON Schema object.

    ``check_schema("t", {"type": "object", "properties": {}})`` returns None.
    """
    import jsonschema

    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ToolDefinitionError(
            f'Tool {name!r}: parameters must be a JSON Schema object with "type": "object", '
            'e.g. {"type": "object", "properties": {"q": {"type": "string"}}}.'
        )
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ToolDefinitionError(f"Tool {name!r}: invalid JSON Schema: {exc.message}") from None
