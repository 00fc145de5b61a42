"""Structured outputs in the simulator: what a request constrains, and output that obeys it.

A real vLLM constrains decoding token by token, so its output always fits the constraint
(unless ``max_tokens`` cuts it). The simulator's output comes whole from a policy, so it
checks that output instead: an answer that already fits is sent as it is (scripted
transcripts keep working), and one that does not is replaced by what a constrained model
could have written, built from the schema by :func:`instance`. Kinds handled:

- JSON: ``structured_outputs.json``, ``structured_outputs.json_object``, and
  ``response_format`` of type ``json_schema`` or ``json_object``;
- tool calls: ``structured_outputs.structural_tag`` in xgrammar's ``triggered_tags`` shape
  (``at_least_one`` forces a call) or the legacy ``structures``/``triggers`` shape (calls
  are optional, bodies must fit), and, in chat, ``tool_choice`` ``"required"`` or a named
  function, which vLLM turns into the same kind of tag over ``<tool_call>`` blocks.

``regex``, ``choice`` and ``grammar`` are accepted and not enforced (the project never
sends them). A call that is required but missing is put first, the policy's text after it
(as xgrammar allows unless ``stop_after_first``). Trade-off: the replacement ignores what
the policy meant; the instance is the smallest one the schema allows, which keeps it obvious
in a trace that the simulator wrote it. Unlike vLLM 0.32, which constrains a forced call's
arguments only for tools marked ``strict``, the simulator always makes them fit the schema.

>>> enforce("not json", Constraint(schema={"type": "object", "required": ["a"],
...                                        "properties": {"a": {"type": "integer"}}}))
'{"a": 0}'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

__all__ = [
    "STRUCTURED_KINDS",
    "Constraint",
    "Tag",
    "constraint_for",
    "enforce",
    "instance",
    "structured_kinds",
]

STRUCTURED_KINDS = ("json", "regex", "choice", "grammar", "structural_tag", "json_object")


@dataclass(frozen=True)
class Tag:
    """One tag a structural tag allows: ``begin`` + JSON matching ``schema`` + ``end``."""

    begin: str
    schema: dict[str, Any]
    end: str


@dataclass(frozen=True)
class Constraint:
    """What the output must be: JSON for ``schema``, or text whose ``tags`` bodies fit."""

    schema: dict[str, Any] | None = None
    tags: tuple[Tag, ...] = ()
    at_least_one: bool = False
    """A call is required (a named ``tool_choice`` is a tag for that one tool)."""
    stop_after_first: bool = False


def structured_kinds(body: dict[str, Any]) -> list[str]:
    """The ``structured_outputs`` kinds a request sets (a 400 unless exactly one)."""
    so = body.get("structured_outputs")
    if not isinstance(so, dict):
        return []
    return [k for k in STRUCTURED_KINDS if so.get(k) not in (None, False)]


def constraint_for(body: dict[str, Any], *, chat: bool) -> Constraint | None:
    """The constraint a request asks for, or ``None``. Raises ``ValueError`` on a bad one."""
    so = body.get("structured_outputs") or {}
    if isinstance(so, dict):
        if so.get("json") is not None:
            schema = so["json"]
            return Constraint(schema=json.loads(schema) if isinstance(schema, str) else schema)
        if so.get("json_object"):
            return Constraint(schema={"type": "object"})
        if so.get("structural_tag") is not None:
            return _structural(so["structural_tag"])
    rf = body.get("response_format") or {}
    if isinstance(rf, dict):
        if rf.get("type") == "json_schema":
            spec = rf.get("json_schema") or {}
            return Constraint(schema=spec.get("schema") or spec.get("json_schema") or {})
        if rf.get("type") == "json_object":
            return Constraint(schema={"type": "object"})
        if rf.get("type") == "structural_tag":
            return _structural(rf)
    if chat:
        return _tool_choice(body)
    return None


def _structural(tag: Any) -> Constraint:
    data = json.loads(tag) if isinstance(tag, str) else tag
    if not isinstance(data, dict):
        raise ValueError("structural_tag must be a JSON object")
    fmt = data.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "triggered_tags":
        tags = tuple(
            Tag(t["begin"], _content_schema(t.get("content") or {}), t["end"])
            for t in fmt.get("tags") or []
        )
        return Constraint(
            tags=tags,
            at_least_one=bool(fmt.get("at_least_one")),
            stop_after_first=bool(fmt.get("stop_after_first")),
        )
    if "structures" in data:  # the legacy shape: constrains bodies, never forces a call
        tags = tuple(Tag(s["begin"], s.get("schema") or {}, s["end"]) for s in data["structures"])
        return Constraint(tags=tags)
    raise ValueError("structural_tag: neither a `format` nor a `structures` shape")


def _content_schema(content: dict[str, Any]) -> dict[str, Any]:
    if content.get("type") == "json_schema":
        return content.get("json_schema") or {}
    return {}  # other content kinds (any_text, regex...): bodies are not checked


def _tool_choice(body: dict[str, Any]) -> Constraint | None:
    tools = [t.get("function", t) for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "auto", "none"):
        return None
    named = None
    if isinstance(choice, dict):
        named = (choice.get("function") or {}).get("name") or choice.get("name")
        tools = [t for t in tools if t.get("name") == named]
        if not tools:
            raise ValueError(f"tool_choice names {named!r}, which is not in `tools`")
    elif choice != "required":
        raise ValueError(
            f"tool_choice must be 'none', 'auto', 'required' or a named function, got {choice!r}"
        )
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["name"]},
                "arguments": t.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for t in tools
    ]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return Constraint(
        tags=(Tag("<tool_call>\n", schema, "\n</tool_call>"),),
        at_least_one=True,
        stop_after_first=True,
    )


def enforce(text: str, c: Constraint) -> str:
    """``text`` if it obeys ``c``; otherwise output that does (see the module docstring)."""
    if c.schema is not None:
        return text if _fits(text, c.schema) else json.dumps(instance(c.schema))
    if not c.tags:
        return text
    checked = [(span, tag, _body_fits(text, span, tag)) for span, tag in _tagged(text, c.tags)]
    if not checked:  # no call: fine unless one is required
        if not c.at_least_one:
            return text
        # The call first; free text may follow it unless the tag stops after one call.
        tail = "" if c.stop_after_first or not text else "\n" + text
        return _render(c.tags[0]) + tail
    if all(ok for _, _, ok in checked):
        return text
    out, last = [], 0
    for (start, stop), tag, ok in checked:
        out += [text[last:start], text[start:stop] if ok else _render(tag)]
        last = stop
    return "".join(out) + text[last:]


def _render(tag: Tag) -> str:
    return tag.begin + json.dumps(instance(tag.schema)) + tag.end


def _tagged(text: str, tags: tuple[Tag, ...]) -> list[tuple[tuple[int, int], Tag]]:
    """Spans of ``begin…end`` blocks, with the tag each one opened, in order."""
    found = []
    pos = 0
    while True:
        starts = [(text.find(t.begin, pos), t) for t in tags]
        starts = [(i, t) for i, t in starts if i >= 0]
        if not starts:
            return found
        start, tag = min(starts, key=lambda s: s[0])
        end = text.find(tag.end, start + len(tag.begin))
        stop = len(text) if end < 0 else end + len(tag.end)
        found.append(((start, stop), tag))
        pos = stop


def _body_fits(text: str, span: tuple[int, int], tag: Tag) -> bool:
    block = text[span[0] + len(tag.begin) : span[1]]
    return block.endswith(tag.end) and _fits(block[: -len(tag.end)], tag.schema)


def _fits(text: str, schema: dict[str, Any]) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    try:
        jsonschema.validate(value, schema)
    except (jsonschema.ValidationError, jsonschema.SchemaError):
        return False
    return True


def instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """The smallest JSON value ``schema`` allows, as far as a short walk can tell.

    >>> instance({"type": "object", "properties": {"unit": {"enum": ["c", "f"]}},
    ...           "required": ["unit"]})
    {'unit': 'c'}
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 20:
        return None
    if "$ref" in schema:
        return instance(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return instance(schema[key][0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged = _merge(merged, part)
        return instance(merged, root, depth + 1)
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "null"
    return _typed(kind, schema, root, depth)


def _typed(kind: str, schema: dict[str, Any], root: Any, depth: int) -> Any:
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            k: instance(props.get(k, {}), root, depth + 1) for k in schema.get("required") or []
        }
    if kind == "array":
        item = schema.get("items") or {}
        return [instance(item, root, depth + 1) for _ in range(schema.get("minItems") or 0)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        value = schema.get("minimum", 0)
        if "exclusiveMinimum" in schema:
            value = max(value, schema["exclusiveMinimum"] + 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return int(value) if kind == "integer" else float(value)
    return {"boolean": False, "null": None}.get(kind)


def _string(schema: dict[str, Any]) -> str:
    if schema.get("format") == "uri":
        return "http://example.com"
    pattern = schema.get("pattern")
    length = schema.get("minLength") or 0
    text = "a" * length
    if pattern and not re.search(pattern, text):
        return ""  # a pattern we cannot satisfy by padding: the smallest string
    return text


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for part in ref.lstrip("#/").split("/"):
        if not part:
            continue
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = {**a, **b}
    if "properties" in a or "properties" in b:
        out["properties"] = {**a.get("properties", {}), **b.get("properties", {})}
    if "required" in a or "required" in b:
        out["required"] = [*a.get("required", []), *b.get("required", [])]
    return out
