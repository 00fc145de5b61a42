"""The one adapter between langchain-core messages and the format core's values.

The graph keeps its conversation as langchain-core messages (LangGraph's reducers and
checkpoints know them) and ``ChatHermes`` speaks them to LangChain; the format core,
the dispatcher and the events speak :class:`~agent.types.Message`,
:class:`~agent.types.ToolCall` and :class:`~agent.types.ToolResult`. Every conversion
between the two happens here, and nowhere else:

- :func:`to_messages` — any mix of langchain-core messages, OpenAI-style dicts and
  ``Message`` to ``Message`` (content blocks as :func:`agent.chatml.content_text` reads
  them: text joined, tool calls from the message's ``tool_calls``);
- :func:`ai_message` — a backend's ``Generation`` as an ``AIMessage`` (calls,
  malformed calls with their reasons, usage with cached tokens, finish reason, timings);
- :func:`tool_calls_of` — an ``AIMessage``'s calls as ``ToolCall`` values;
- :func:`tool_message` / :func:`malformed_messages` — results and parse errors as
  ``ToolMessage`` turns;
- :func:`message_chunk` — one streamed event of a backend as an ``AIMessageChunk``.

>>> from langchain_core.messages import HumanMessage
>>> to_messages([HumanMessage("Hi")])[0]
Message(role='user', content='Hi', tool_calls=[], tool_call_id=None, name=None)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk

from agent import chatml
from agent._hermes_call import EXPECTED_FORM
from agent.hermes import TextDelta, ToolCallMalformed, ToolCallParsed
from agent.llm.base import Generation, GenerationDone
from agent.types import Message, ToolCall, ToolResult, new_call_id

__all__ = [
    "ai_message",
    "malformed_messages",
    "message_chunk",
    "to_messages",
    "tool_calls_of",
    "tool_message",
    "usage_metadata",
]

_LC_ROLES = {
    "human": "user",
    "ai": "assistant",
    "AIMessageChunk": "assistant",
    "system": "system",
    "tool": "tool",
}


def to_messages(messages: Sequence[Any]) -> list[Message]:
    """Normalise langchain-core messages, OpenAI dicts and ``Message`` to ``Message``."""
    return chatml.to_messages(
        [_from_langchain(m, i) if isinstance(m, BaseMessage) else m for i, m in enumerate(messages)]
    )


def _from_langchain(m: BaseMessage, i: int) -> Message:
    kind = getattr(m, "role", m.type) if m.type == "chat" else m.type
    role = _LC_ROLES.get(kind, kind)
    if role not in ("system", "user", "assistant", "tool"):
        raise ValueError(f"message {i}: unknown role {kind!r}; expected human, ai, system or tool")
    calls = tool_calls_of(m) if role == "assistant" else []
    return Message(
        role,
        chatml.content_text(m.content, i),
        tool_calls=calls,
        tool_call_id=getattr(m, "tool_call_id", None),
        name=getattr(m, "name", None) if role == "tool" else None,
    )


def tool_calls_of(message: BaseMessage) -> list[ToolCall]:
    """The calls of an assistant message (an id is made up where langchain has none)."""
    return [
        ToolCall(c["name"], dict(c.get("args") or {}), id=c.get("id") or new_call_id())
        for c in getattr(message, "tool_calls", None) or ()
    ]


def usage_metadata(generation: Generation) -> dict[str, Any]:
    """LangChain's ``usage_metadata`` of a generation (cached tokens when reported)."""
    u = generation.usage
    usage: dict[str, Any] = {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.cached_tokens is not None:
        usage["input_token_details"] = {"cache_read": u.cached_tokens}
    return usage


def response_metadata(generation: Generation, model: str | None = None) -> dict[str, Any]:
    """Finish reason, model, server, timings and the reasons of malformed calls."""
    t = generation.timings
    return {
        "finish_reason": generation.finish_reason,
        "stop_reason": generation.stop_reason,
        "model_name": model,
        "url": generation.url,
        "timings": {"ttft_s": t.ttft_s, "total_s": t.total_s, "tokens_per_s": t.tokens_per_s},
        "tool_call_errors": [{"raw": e.raw, "reason": e.reason} for e in generation.errors],
    }


def ai_message(generation: Generation, model: str | None = None) -> AIMessage:
    """A generation as the assistant turn: calls, malformed calls (ids ``invalid_N``)."""
    return AIMessage(
        content=generation.content,
        tool_calls=[
            {"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"}
            for c in generation.tool_calls
        ],
        invalid_tool_calls=[
            {
                "name": None,
                "args": e.raw,
                "id": f"invalid_{i}",
                "error": e.reason,
                "type": "invalid_tool_call",
            }
            for i, e in enumerate(generation.errors)
        ],
        usage_metadata=usage_metadata(generation),  # type: ignore[arg-type]
        response_metadata=response_metadata(generation, model),
    )


def tool_message(result: ToolResult) -> ToolMessage:
    """The ``tool`` turn entry for one result."""
    return ToolMessage(
        content=result.content,
        tool_call_id=result.call_id,
        name=result.name,
        status="success" if result.ok else "error",
        additional_kwargs={"artifact_id": result.artifact_id} if result.artifact_id else {},
    )


def malformed_messages(ai: AIMessage) -> list[ToolMessage]:
    """One error entry per call of ``ai`` that could not be parsed."""
    return [
        ToolMessage(
            content=f"Error: your tool call could not be parsed: {c['error']} "
            f"Write each call as {EXPECTED_FORM} with valid JSON.",
            tool_call_id=c["id"],
            name="invalid_tool_call",
            status="error",
        )
        for c in ai.invalid_tool_calls
    ]


def message_chunk(
    event: Any, errors: list[dict[str, Any]], model: str | None
) -> AIMessageChunk | None:
    """One event of ``Backend.stream`` as a chunk: text, a call (or a malformed one, its
    reason appended to ``errors``), or the last chunk with usage and ``errors``. Scratch
    pad and call-started events have no langchain counterpart: ``None``."""
    if isinstance(event, TextDelta):
        return AIMessageChunk(content=event.text)
    if isinstance(event, ToolCallParsed):
        c = event.call
        tcc = tool_call_chunk(name=c.name, args=json.dumps(c.arguments), id=c.id, index=event.index)
        return AIMessageChunk(content="", tool_call_chunks=[tcc])
    if isinstance(event, ToolCallMalformed):
        errors.append({"index": event.index, "raw": event.raw, "reason": event.reason})
        tcc = tool_call_chunk(name=None, args=_unparsable(event.raw), id=None, index=event.index)
        return AIMessageChunk(content="", tool_call_chunks=[tcc])
    if isinstance(event, GenerationDone):
        g = event.generation
        meta = response_metadata(g, model)
        meta["tool_call_errors"] = errors
        return AIMessageChunk(
            content="",
            usage_metadata=usage_metadata(g),  # type: ignore[arg-type]
            response_metadata=meta,
            chunk_position="last",
        )
    return None


def _unparsable(raw: str) -> str:
    """``raw`` as chunk args that langchain will not read as a valid call.

    langchain re-parses chunk args with a lenient partial-JSON parser; a malformed block
    (say, one missing ``name``) could come out as a dict and pass as a valid call.
    """
    from langchain_core.utils.json import parse_partial_json

    try:
        ok = isinstance(parse_partial_json(raw), dict)
    except Exception:  # any failure means langchain will reject it too
        ok = False
    return json.dumps(raw) if ok else raw
