"""A generic simulated model for LangChain's standard tests: it reads only what a real
model reads — the prompt and the request's constraints — and answers by three rules:

1. the system turn holds a JSON-mode ``<schema>`` and a user spoke last: a JSON instance
   of the schema;
2. tools are listed (or a call is forced by a structural tag) and a user spoke last: a
   call to a tool — the forced one, else the first tool the user names, else the first —
   with arguments that satisfy its schema;
3. otherwise: a sentence of text (after a tool result, one that uses it).

Values come from the user's last message the way a literal-minded model would take them:
integers in order for integer parameters, the first quoted phrase (else the message) for
strings. Nothing here knows which test is asking.

>>> answer_for("<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n", {})
'Hello! You said: hi'
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent.chatml import unescape
from agent.sim import SimRequest

__all__ = ["answer", "answer_for"]

_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.S)
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")


def answer(request: SimRequest) -> str:
    """The :class:`~agent.sim.FunctionPolicy` function."""
    return answer_for(request.prompt, request.body)


def answer_for(prompt: str, body: dict[str, Any]) -> str:
    turns = _TURN.findall(prompt)
    system = next((text for role, text in turns if role == "system"), "")
    last_role, last_text = turns[-1] if turns else ("user", "")
    user = unescape(next((t for r, t in reversed(turns) if r == "user"), ""))
    schema = _between(system, "<schema>\n", "\n</schema>")
    forced = _forced_tools(body)
    if schema is not None and last_role == "user":
        return json.dumps(_instance(json.loads(schema), user, schema), ensure_ascii=False)
    tools = forced or _listed_tools(system)
    if tools and (last_role == "user" or forced):
        tool = next((t for t in tools if t["name"] in user), tools[0])
        args = _instance(tool.get("parameters") or {}, user, tool.get("parameters") or {})
        call = json.dumps({"name": tool["name"], "arguments": args}, ensure_ascii=False)
        return f"<tool_call>\n{call}\n</tool_call>"
    if last_role == "tool":
        return "Done. The tool said: " + re.sub(r"\s+", " ", last_text)[:80]
    return f"Hello! You said: {user.strip()[:80] or 'nothing'}"


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    return text[i + len(start) : j] if i >= 0 and j >= 0 else None


def _listed_tools(system: str) -> list[dict[str, Any]]:
    block = _between(system, "<tools> ", " </tools>")
    if block is None:
        return []
    return [json.loads(line)["function"] for line in block.splitlines() if line.strip()]


def _forced_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools a forcing structural tag allows (an ``at_least_one`` triggered tag)."""
    raw = (body.get("structured_outputs") or {}).get("structural_tag")
    fmt = json.loads(raw).get("format", {}) if raw else {}
    if not fmt.get("at_least_one"):
        return []
    options = fmt["tags"][0]["content"]["json_schema"]["anyOf"]
    return [
        {"name": o["properties"]["name"]["const"], "parameters": o["properties"]["arguments"]}
        for o in options
    ]


def _instance(schema: dict[str, Any], text: str, root: dict[str, Any]) -> Any:
    numbers = iter(int(n) for n in re.findall(r"-?\d+", text))
    return _value(schema, text, root, numbers)


def _value(schema: dict[str, Any], text: str, root: dict[str, Any], numbers: Any) -> Any:
    if "$ref" in schema:  # "#/$defs/Name"
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return _value(target, text, root, numbers)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _value(options[0], text, root, numbers)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "string")
    kind = next((k for k in kind if k != "null"), "string") if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _value(v, text, root, numbers) for k, v in props.items()}
    if kind == "array":
        return []
    if kind == "integer":
        return next(numbers, 1)
    if kind == "number":
        return float(next(numbers, 1))
    if kind == "boolean":
        return False
    quoted = _QUOTED.search(text)
    return (quoted.group(1) or quoted.group(2)) if quoted else (text.strip()[:60] or "text")
