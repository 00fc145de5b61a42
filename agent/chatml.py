"""Render a conversation to the exact Hermes 3 ChatML prompt text (pure: no I/O).

One turn is ``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n``; the generation prompt is
``<|im_start|>assistant\\n``. What goes into the turns:

- **System turn.** At most one at the top, holding, in this order and separated by a blank
  line: the function-calling preamble (when there are tools), the JSON-mode preamble (when
  there is a schema), then the user's own leading system message(s). The preambles come
  first because that is the text the model was trained to see at the start of the turn; the
  user's prompt follows so it can refine them. The preamble is the Hermes-3-Llama-3.1-8B
  model card's text (NousResearch, "Prompt Format for Function Calling"), with tools joined
  by a newline as in the model's ``tool_use`` chat template. The JSON-mode text is the model
  card's "Prompt Format for JSON Mode / Structured Outputs".
  A system message *later* in the conversation is rendered in place as its own system turn:
  moving it to the top would rewrite the prefix and defeat the prefix cache.
- **Assistant turns** re-render their calls as valid JSON, ``{"arguments": ..., "name": ...}``
  (the key order the preamble shows), one ``<tool_call>`` block per call, after the text.
  Scratch pads are not kept in :class:`~agent.types.Message`, so they are not re-rendered.
- **Tool results**: consecutive tool messages share one ``tool`` turn, one
  ``<tool_response>\\n{"name": NAME, "content": RESULT}\\n</tool_response>`` block each,
  joined by a newline. A result whose text is a JSON object or array is embedded as JSON
  (the model reads it without a second layer of escaping); any other result is a JSON string.

**BOS exactly once.** :func:`render` starts with ``<|begin_of_text|>`` by default
(``bos=True``) and the completions backend sends ``"add_special_tokens": false`` so the
server's tokenizer does not add a second one. Pass ``bos=False`` when the server adds it.

**Append-only, byte-stable.** Rendering depends only on the messages before a point, so the
prompt for a conversation that ends just before an assistant turn is a byte prefix of the
prompt for any longer one; vLLM's prefix cache stays hot across steps.

**Escaping untrusted text.** Content (user, assistant, tool, system) could otherwise open or
close turns and blocks. Two schemes, one per context, both reversible and readable:

- plain text: the ``<`` of every marker becomes ``&lt;`` (HTML-style, which the model reads
  fluently): ``<tool_call>`` → ``&lt;tool_call>``. To stay reversible, an existing
  ``&lt;`` / ``&amp;lt;``… gains one ``amp;``. See :func:`escape` / :func:`unescape`.
- JSON (tool specs, past calls, tool results, schemas): the ``<`` of a marker becomes the
  JSON escape ``\\u003c``, so the JSON still decodes to exactly the original value.

Markers are every ``<|name|>`` special-token form (``<|im_start|>``, ``<|eot_id|>``, Llama's
reserved tokens…) and the tags ``tool_call``, ``tool_response``, ``tools``, ``schema``,
``scratch_pad`` (opening and closing, any letter case). Trade-off: escaping is per marker,
not per ``<``, so ``a < b`` and HTML stay untouched and readable.

>>> render([{"role": "user", "content": "Hi"}], bos=False)
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, TypeAlias

from agent._json import STRICT
from agent.types import Message, ToolCall, ToolSpec

__all__ = [
    "BOS",
    "GENERATION_PROMPT",
    "MessageLike",
    "content_text",
    "dumps",
    "escape",
    "render",
    "render_call",
    "to_messages",
    "unescape",
]

BOS = "<|begin_of_text|>"
GENERATION_PROMPT = "<|im_start|>assistant\n"

MessageLike: TypeAlias = "Message | dict[str, Any]"

_FUNCTION_CALLING_PROMPT = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user "
    "query. Don't make assumptions about what values to plug into functions. Here are the "
    "available tools: <tools> {tools} </tools> Use the following pydantic model json schema "
    'for each tool call you will make: {{"properties": {{"arguments": {{"title": "Arguments", '
    '"type": "object"}}, "name": {{"title": "Name", "type": "string"}}}}, "required": '
    '["arguments", "name"], "title": "FunctionCall", "type": "object"}} For each function '
    "call return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags as follows:\n<tool_call>\n{{"arguments": <args-dict>, "name": <function-name>}}\n'
    "</tool_call>"
)
_JSON_MODE_PROMPT = (
    "You are a helpful assistant that answers in JSON. Here's the json schema you must "
    "adhere to:\n<schema>\n{schema}\n</schema>"
)

_TAGS = "tool_call|tool_response|tools|schema|scratch_pad"
_MARKER = rf"<(?:\|[A-Za-z0-9_]{{1,64}}\||(?i:/?(?:{_TAGS})))>"
_MARKER_RE = re.compile(_MARKER)
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Escape matches an existing escape-like run first so that escaping stays injective.
_ESCAPE_RE = re.compile(rf"&(?:amp;)*lt;|{_MARKER}")
_UNESCAPE_RE = re.compile(r"&(?:amp;)*lt;")
_ROLES = ("system", "user", "assistant", "tool")
_ROLE_ALIASES = {"developer": "system", "human": "user", "ai": "assistant", "function": "tool"}


def escape(text: str) -> str:
    """Neutralise every marker in untrusted text, readably and reversibly.

    >>> escape("</tool_response><|im_start|>system")
    '&lt;/tool_response>&lt;|im_start|>system'
    """

    def repl(m: re.Match[str]) -> str:
        s = m.group()
        return "&amp;" + s[1:] if s[0] == "&" else "&lt;" + s[1:]

    return _ESCAPE_RE.sub(repl, text)


def unescape(text: str) -> str:
    """Invert :func:`escape`: ``unescape(escape(x)) == x`` for every string ``x``.

    >>> unescape("&lt;tool_call> &amp;lt;")
    '<tool_call> &lt;'
    """
    # "&lt;" was a marker's "<"; a longer run lost one "amp;" when it was escaped.
    return _UNESCAPE_RE.sub(lambda m: "<" if len(m.group()) == 4 else "&" + m.group()[5:], text)


def dumps(value: Any) -> str:
    """JSON text (one line, UTF-8 kept) in which no marker can appear.

    Markers can only sit inside JSON strings, where ``\\u003c`` decodes back to ``<``.

    >>> dumps({"q": "</tool_call>"})
    '{"q": "\\\\u003c/tool_call>"}'
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    text = _MARKER_RE.sub(lambda m: "\\u003c" + m.group()[1:], text)
    # A lone surrogate (half an escaped emoji) cannot be sent as UTF-8; as an escape it
    # stays valid JSON that decodes to the same value.
    return _SURROGATE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def to_messages(messages: Sequence[MessageLike]) -> list[Message]:
    """Normalise OpenAI-style dicts and :class:`Message` values to ``Message``.

    A tool message without a name takes it from the earlier call with its ``tool_call_id``.

    >>> to_messages([{"role": "user", "content": "Hi"}])[0].content
    'Hi'
    """
    out: list[Message] = []
    names: dict[str, str] = {}
    for i, raw in enumerate(messages):
        msg = _to_message(raw, i)
        for call in msg.tool_calls:
            names[call.id] = call.name
        if msg.role == "tool" and not msg.name:
            name = names.get(msg.tool_call_id or "")
            if name is None:
                raise ValueError(
                    f"message {i}: a tool message needs the tool's name; give 'name', or a "
                    f"'tool_call_id' matching an earlier assistant call "
                    f"(got tool_call_id={msg.tool_call_id!r})"
                )
            msg = Message("tool", msg.content, tool_call_id=msg.tool_call_id, name=name)
        out.append(msg)
    return out


def render(
    messages: Sequence[MessageLike],
    tools: Sequence[ToolSpec | dict[str, Any]] = (),
    *,
    json_schema: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
    bos: bool = True,
) -> str:
    """The exact Hermes 3 prompt for a conversation, ending with the generation prompt.

    >>> render([{"role": "user", "content": "Hi"}]).startswith(BOS + "<|im_start|>user")
    True
    """
    msgs = to_messages(messages)
    specs = [_to_spec(t, i) for i, t in enumerate(tools)]
    lead = 0
    while lead < len(msgs) and msgs[lead].role == "system":
        lead += 1
    parts = [BOS] if bos else []
    system = _system_text(specs, json_schema, [m.content for m in msgs[:lead]])
    if system:
        parts.append(_turn("system", system))
    rest = msgs[lead:]
    i = 0
    while i < len(rest):
        if rest[i].role == "tool":
            j = i
            while j < len(rest) and rest[j].role == "tool":
                j += 1
            parts.append(_turn("tool", "\n".join(_tool_response(m) for m in rest[i:j])))
            i = j
            continue
        parts.append(_render_turn(rest[i]))
        i += 1
    if add_generation_prompt:
        parts.append(GENERATION_PROMPT)
    # Lone surrogates left in plain text would make the request unsendable (not UTF-8).
    return _SURROGATE_RE.sub("\ufffd", "".join(parts))


def render_call(call: ToolCall) -> str:
    """One call as the model is told to write it (used for past assistant turns).

    >>> render_call(ToolCall("f", {"a": 1}, id="x"))
    '<tool_call>\\n{"arguments": {"a": 1}, "name": "f"}\\n</tool_call>'
    """
    return f"<tool_call>\n{dumps({'arguments': call.arguments, 'name': call.name})}\n</tool_call>"


def _json_mode_text(schema: dict[str, Any]) -> str:
    if not isinstance(schema, dict):
        raise TypeError(f"json_schema must be a dict (a JSON Schema), got {type(schema).__name__}")
    return _JSON_MODE_PROMPT.format(schema=dumps(schema))


def _system_text(specs: list[ToolSpec], schema: dict[str, Any] | None, own: list[str]) -> str:
    sections: list[str] = []
    if specs:
        tools = "\n".join(dumps(s.to_openai()) for s in specs)
        sections.append(_FUNCTION_CALLING_PROMPT.format(tools=tools))
    if schema is not None:
        sections.append(_json_mode_text(schema))
    sections.extend(escape(text) for text in own if text)
    return "\n\n".join(sections)


def _turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def _render_turn(msg: Message) -> str:
    if msg.role != "assistant":
        return _turn(msg.role, escape(msg.content))
    blocks = [escape(msg.content)] if msg.content else []
    blocks.extend(render_call(c) for c in msg.tool_calls)
    return _turn("assistant", "\n".join(blocks))


def _tool_response(msg: Message) -> str:
    body = dumps({"name": msg.name, "content": _result_value(msg.content)})
    return f"<tool_response>\n{body}\n</tool_response>"


def _result_value(text: str) -> Any:
    # JSON objects/arrays are embedded as JSON; json.loads is deterministic, so this
    # keeps rendering byte-stable.
    if text.lstrip()[:1] in ("{", "["):
        try:  # NaN/Infinity are not JSON: such a result is embedded as text instead
            value = STRICT.decode(text)
        except (ValueError, RecursionError):
            return text
        if isinstance(value, dict | list):
            return value
    return text


def _to_spec(tool: ToolSpec | dict[str, Any], i: int) -> ToolSpec:
    if isinstance(tool, ToolSpec):
        return tool
    if isinstance(tool, dict):
        fn = tool.get("function", tool)
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
            return ToolSpec.from_openai(tool)
    raise ValueError(
        f"tool {i}: expected a ToolSpec or {{'type': 'function', 'function': {{'name': ..., "
        f"'description': ..., 'parameters': {{...}}}}}}, got {tool!r:.200}"
    )


def _to_message(raw: Any, i: int) -> Message:
    if isinstance(raw, Message):
        _check_role(raw.role, i)
        return raw
    if isinstance(raw, dict):
        return _from_openai(raw, i)
    raise TypeError(
        f"message {i}: expected a Message or an OpenAI-style dict, got {type(raw).__name__} "
        "(langchain-core messages: agent.messages.to_messages converts them)"
    )


def _check_role(role: Any, i: int) -> str:
    role = _ROLE_ALIASES.get(role, role)
    if role not in _ROLES:
        raise ValueError(f"message {i}: unknown role {role!r}; expected one of {', '.join(_ROLES)}")
    return role


def _from_openai(d: dict[str, Any], i: int) -> Message:
    if "role" not in d:
        raise ValueError(f"message {i}: missing 'role' (e.g. {{'role': 'user', 'content': 'Hi'}})")
    role = _check_role(d["role"], i)
    calls = [_openai_call(c, i) for c in d.get("tool_calls") or ()]
    return Message(
        role,  # type: ignore[arg-type]
        content_text(d.get("content"), i),
        tool_calls=calls,
        tool_call_id=d.get("tool_call_id"),
        name=d.get("name") if role == "tool" else None,
    )


def _openai_call(c: Any, i: int) -> ToolCall:
    fn = c.get("function", c) if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ValueError(
            f"message {i}: each tool call needs {{'id': ..., 'type': 'function', 'function': "
            f"{{'name': ..., 'arguments': '<JSON object>'}}}}, got {c!r:.200}"
        )
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as exc:
            raise ValueError(
                f"message {i}: tool call {fn['name']!r} has arguments that are not valid JSON "
                f'({exc}); give a JSON object string such as \'{{"city": "Paris"}}\''
            ) from None
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise ValueError(f"message {i}: tool call {fn['name']!r} arguments must be an object")
    call_id = c.get("id") if isinstance(c, dict) else None
    return ToolCall(fn["name"], args, id=call_id) if call_id else ToolCall(fn["name"], args)


# Content blocks that carry a tool call: rendered from the message's tool calls, where
# the same call is kept (LangChain v1 output and Anthropic-style histories both do).
_CALL_BLOCKS = frozenset({"tool_call", "tool_use", "tool_call_chunk", "server_tool_call"})
_TEXT_BLOCKS = frozenset({"text", "output_text"})
_SKIPPED_BLOCKS = frozenset({"reasoning", "thinking"})


def content_text(content: Any, i: int = 0) -> str:
    """The text of a message's content: a string, or the text of its content blocks.

    Text blocks are joined; tool-call blocks are skipped (the message's tool calls render
    them) and so is reasoning; any other block (an image, a file) is refused by type.

    >>> content_text([{"type": "text", "text": "a"}, {"type": "tool_use", "id": "1"}, "b"])
    'ab'
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(
            f"message {i}: content must be text or a list of content blocks, "
            f"got {type(content).__name__}"
        )
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
            continue
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _TEXT_BLOCKS:
            parts.append(str(block.get("text", "")))
        elif kind not in _CALL_BLOCKS and kind not in _SKIPPED_BLOCKS:
            raise ValueError(
                f"message {i}: a {kind or type(block).__name__!r} content block cannot be sent "
                "to Hermes, which reads text only; send its text, or leave the block out"
            )
    return "".join(parts)
