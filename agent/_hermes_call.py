"""Judging one ``<tool_call>`` body: a :class:`ToolCall`, or a reason the model can act on.

The lenient half of :mod:`agent.hermes`, kept apart because it is pure (string in, verdict
out); the stream parser calls :func:`parse_call` and, for names, :func:`decode_short`:

- ``{"name", "arguments"}`` in either order; ``arguments`` as a JSON string is decoded once;
  missing or ``null`` ``arguments`` means ``{}``; extra keys are ignored;
- Python-dict style (single quotes, ``None``, ``True``) is read with ``ast.literal_eval`` —
  never ``eval`` — on bounded input, and only JSON-shaped values are accepted;
- every refusal ends with :data:`EXPECTED_FORM`, so the model sees how to write it.

>>> parse_call('{"arguments": {}, "name": "f"}')[0].name
'f'
"""

from __future__ import annotations

import ast
import json
import math
from typing import Any

from agent._json import STRICT
from agent.types import ToolCall

__all__ = ["EXPECTED_FORM", "decode_short", "parse_call"]

EXPECTED_FORM = '<tool_call>\n{"arguments": <args-dict>, "name": <function-name>}\n</tool_call>'
_MAX_LITERAL_CHARS = 100_000  # ast.literal_eval cost and memory grow with input; cap it.


def parse_call(body: str, *, allow_trailing: bool = False) -> tuple[ToolCall, str] | str:
    """Judge one block's body: ``(call, trailing_text)``, or a reason it is unusable.

    >>> parse_call("{'name': 'f', 'arguments': {'x': None}}")[0].arguments
    {'x': None}
    """
    text = body.lstrip()
    if not text.strip():
        return f"the <tool_call> block is empty. Write one call per block: {EXPECTED_FORM}"
    value, end, error = _decode_value(text.rstrip())
    if error:
        return f"the call is not valid JSON ({error}). Write it as: {EXPECTED_FORM}"
    trailing = text[end:]
    # Stray closing brackets after the object are a common slip, not a different call.
    if not trailing.strip(" \t\r\n}]"):
        trailing = ""
    elif not allow_trailing:
        return (
            f"unexpected text after the JSON object: {trailing.strip()[:80]!r}. "
            f"Put only the JSON object inside the block: {EXPECTED_FORM}"
        )
    return _call_from_value(value, trailing)


def _call_from_value(value: Any, trailing: str) -> tuple[ToolCall, str] | str:
    if not isinstance(value, dict):
        kind = (
            "a list (one call per <tool_call> block)"
            if isinstance(value, list)
            else (f"a {type(value).__name__}")
        )
        return f"the call must be a JSON object, got {kind}. Write it as: {EXPECTED_FORM}"
    name = value.get("name")
    if name is None:
        return f'the call has no "name" (the function to call). Write it as: {EXPECTED_FORM}'
    if not isinstance(name, str) or not name.strip():
        return f'"name" must be a non-empty string, got {name!r:.80}. Write it as: {EXPECTED_FORM}'
    args = value.get("arguments")
    if isinstance(args, str):
        decoded, end, error = _decode_value(args.strip()) if args.strip() else ({}, 0, "")
        if error or args.strip()[end:].strip():
            why = error or "text after the JSON value"
            return (
                f'"arguments" of {name!r} is a string that is not a JSON object ({why}). '
                f"Give the arguments as an object: {EXPECTED_FORM}"
            )
        args = decoded
    args = {} if args is None else args
    if not isinstance(args, dict):
        return (
            f'"arguments" of {name!r} must be an object of parameter names to values, got '
            f"{type(args).__name__} {args!r:.80}. Write it as: {EXPECTED_FORM}"
        )
    return ToolCall(name.strip(), args), trailing


def _decode_value(text: str) -> tuple[Any, int, str]:
    """JSON first, then Python-literal style; returns ``(value, end, error)``."""
    try:
        value, end = STRICT.raw_decode(text)
        return value, end, ""
    except json.JSONDecodeError as exc:
        json_error = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        return None, 0, "nested too deeply"
    except ValueError as exc:  # a number past Python's digit limit, NaN, Infinity
        return None, 0, str(exc)
    value = _literal(text)
    if value is not _FAIL:
        return value, len(text), ""
    if "'" in text:
        json_error += "; write strings with double quotes and escape quotes inside them"
    return None, 0, json_error


_FAIL = object()


def _literal(text: str) -> Any:
    if len(text) > _MAX_LITERAL_CHARS or not text.startswith(("{", "[")):
        return _FAIL
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _FAIL
    return _jsonable(value)


def _jsonable(value: Any, depth: int = 0) -> Any:
    if depth > 100:
        return _FAIL
    if isinstance(value, float) and not math.isfinite(value):
        return _FAIL
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [_jsonable(v, depth + 1) for v in value]
        return _FAIL if any(v is _FAIL for v in items) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _jsonable(v, depth + 1) for k, v in value.items()}
        return _FAIL if any(v is _FAIL for v in items.values()) else items
    return _FAIL


def decode_short(s: str) -> str:
    """A JSON (or Python) string body as text: ``decode_short(r"a\\u00e9")`` is ``"aé"``."""
    if "\\" not in s:
        return s
    try:
        return json.loads('"' + s + '"')
    except ValueError:
        return s.replace("\\'", "'")
