"""The chat-completions side: OpenAI messages → ChatML prompt, raw output → tool calls.

Like vLLM with ``--tool-call-parser hermes``, the server renders the conversation with a
chat template and parses ``<tool_call>`` blocks out of the generation. Unlike vLLM, both
steps use the project's own format core (``agent.chatml.render``, ``agent.hermes.parse``),
imported lazily so the simulator's other endpoints work without them. As in vLLM, the
tools are rendered even with ``tool_choice: "none"`` (only the parsing is off). Streaming
sends content deltas until a ``<tool_call>`` opens, then each call as vLLM 0.32 does: a
first delta with ``content: null`` and one call holding ``id`` (``chatcmpl-tool-…``),
``type``, ``index`` and ``function.name``, then ``function.arguments`` pieces.

>>> split_content_stream("Hi <tool_c")
('Hi ', '<tool_c')
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "TOOL_OPEN",
    "parse_output",
    "render_chat",
    "split_content_stream",
    "tool_call_deltas",
]

TOOL_OPEN = "<tool_call>"


def render_chat(body: dict[str, Any]) -> str:
    """The ChatML prompt for a chat request (BOS included, generation prompt open).

    ``agent.chatml.render`` accepts OpenAI message and tool dicts as they come; its
    ``ValueError``/``TypeError`` name the offending message.
    """
    from agent.chatml import render

    return render(body.get("messages") or [], list(body.get("tools") or []))


def parse_output(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Raw generation → (content, OpenAI ``tool_calls``), as vLLM's Hermes parser returns."""
    from agent.hermes import parse
    from agent.sim.shapes import new_id

    parsed = parse(text)
    calls = [
        {
            "id": new_id("chatcmpl-tool"),
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
        }
        for c in parsed.tool_calls
    ]
    content = parsed.content
    if calls and not (content or "").strip():
        content = None
    return content, calls


def split_content_stream(buffered: str) -> tuple[str, str]:
    """Split streamed text into (safe to send as content, held back).

    Text from a ``<tool_call>`` on is held back for good; a trailing fragment that could
    still become ``<tool_call>`` is held until the next token decides.
    """
    at = buffered.find(TOOL_OPEN)
    if at >= 0:
        return buffered[:at], buffered[at:]
    for n in range(min(len(TOOL_OPEN) - 1, len(buffered)), 0, -1):
        if TOOL_OPEN.startswith(buffered[-n:]):
            return buffered[:-n], buffered[-n:]
    return buffered, ""


def tool_call_deltas(calls: list[dict[str, Any]], piece: int = 16) -> list[dict[str, Any]]:
    """The ``delta`` objects that stream ``calls`` the way vLLM does.

    >>> [d["tool_calls"][0].get("id") for d in tool_call_deltas(
    ...     [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}])]
    ['c1', None]
    """
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        fn = call["function"]
        deltas.append(
            {
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "index": index,
                        "function": {"name": fn["name"]},
                    }
                ],
            }
        )
        args = fn["arguments"]
        for start in range(0, len(args), piece):
            deltas.append(
                {
                    "content": None,
                    "tool_calls": [
                        {"index": index, "function": {"arguments": args[start : start + piece]}}
                    ],
                }
            )
    return deltas
