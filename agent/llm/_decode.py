"""Turn streamed vLLM chunks into the format core's events, one decoder per API.

Both decoders expose the same three calls, so the HTTP loop in :mod:`agent.llm.vllm`
does not care which endpoint it reads:

- ``feed(choice) -> list[event]`` for ``choices[0]`` of one chunk;
- ``close() -> list[event]`` once the stream has ended;
- ``result() -> (text, content, tool_calls, errors)`` for the :class:`Generation`.

:class:`CompletionsDecoder` feeds raw text to ``agent.hermes.StreamParser`` (our own
parser: the reason the completions path is the default). :class:`ChatDecoder` assembles
OpenAI-style ``delta.tool_calls`` by index: a call is finished when a later index starts
or the stream ends; its ``arguments`` string is decoded then, and a call whose arguments
are not a JSON object becomes ``ToolCallMalformed`` with the decoder's reason. Trade-off:
a chat-mode call is only reported once the next one begins, because the protocol has no
"call complete" marker.

>>> d = ChatDecoder(); d.feed({"delta": {"content": "Hi"}})
[TextDelta(text='Hi')]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent.chatml import render_call
from agent.errors import StreamInterrupted
from agent.hermes import (
    StreamParser,
    TextDelta,
    ToolCallMalformed,
    ToolCallParsed,
    ToolCallStarted,
)
from agent.llm import _failures as _f
from agent.llm import _http
from agent.llm._wire import Response
from agent.llm.base import Generation
from agent.types import Malformed, Message, Timings, ToolCall, ToolSpec, Usage, new_call_id

__all__ = [
    "END",
    "ChatDecoder",
    "CompletionsDecoder",
    "StreamState",
    "read_stream",
    "structural_tag",
    "to_openai_messages",
]


class CompletionsDecoder:
    """Raw Hermes text from ``/v1/completions`` through the incremental parser.

    ``calls=False`` (``tool_choice="none"``): nothing is read as a call; all is text.
    """

    def __init__(self, *, calls: bool = True) -> None:
        self._parser = StreamParser() if calls else None
        self._parts: list[str] = []

    def feed(self, choice: dict[str, Any]) -> list[Any]:
        text = choice.get("text")
        if not text:
            return []
        self._parts.append(text)
        return self._parser.feed(text) if self._parser else [TextDelta(text)]

    def close(self) -> list[Any]:
        return self._parser.close() if self._parser else []

    def result(self) -> tuple[str, str, list[ToolCall], list[Malformed]]:
        text = "".join(self._parts)
        if self._parser is None:
            return text, text, [], []
        # The parser's own tally: the calls carry the ids the caller already saw.
        out = self._parser.result
        return text, out.content, out.tool_calls, out.errors


@dataclass
class _PendingCall:
    index: int
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatDecoder:
    """OpenAI chat-completion deltas (content and ``tool_calls``) into Hermes events."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._pending: dict[int, _PendingCall] = {}
        self._order: list[int] = []
        self._done = 0  # calls in _order already reported
        self._calls: list[ToolCall] = []
        self._errors: list[Malformed] = []
        self._n = 0  # our own running index: servers may restart theirs per chunk

    def feed(self, choice: dict[str, Any]) -> list[Any]:
        delta = choice.get("delta") or {}
        events: list[Any] = []
        if text := delta.get("content"):
            self._content.append(text)
            events.append(TextDelta(text))
        for tc in delta.get("tool_calls") or ():
            events.extend(self._feed_call(tc))
        return events

    def _feed_call(self, tc: dict[str, Any]) -> list[Any]:
        index = tc.get("index", len(self._order))
        fn = tc.get("function") or {}
        events: list[Any] = []
        call = self._pending.get(index)
        if call is not None and self._order.index(index) < self._done:
            # A fragment for a call already decoded (and perhaps already running): never
            # merge it silently into a call whose arguments were taken as whole.
            raw = json.dumps(tc)
            reason = "more arguments arrived after this tool call was complete"
            self._errors.append(Malformed(raw, reason))
            return [ToolCallMalformed(call.index, raw, reason)]
        if call is None:
            # A new index: earlier calls whose arguments are already whole JSON are done
            # (vLLM streams calls one after another); one still incomplete keeps waiting,
            # in case a server interleaves fragments of several calls.
            events.extend(self._finish_pending(only_whole=True))
            call = self._pending[index] = _PendingCall(self._n)
            self._n += 1
            self._order.append(index)
        if tc.get("id"):
            call.id = tc["id"]
        if fn.get("name"):
            started = not call.name
            call.name += fn["name"]
            if started:
                events.append(ToolCallStarted(call.index, call.name))
        if fn.get("arguments"):
            call.arguments.append(fn["arguments"])
        return events

    def _finish_pending(self, *, only_whole: bool = False) -> list[Any]:
        """Decode pending calls in order; with ``only_whole``, stop at the first whose
        arguments do not parse yet."""
        events = []
        while self._done < len(self._order):
            call = self._pending[self._order[self._done]]
            if only_whole and not _is_whole_json("".join(call.arguments)):
                break
            self._done += 1
            events.append(self._decode(call))
        return events

    def _decode(self, call: _PendingCall) -> Any:
        raw = "".join(call.arguments)
        reason = None
        args: Any = {}
        if not call.name:
            reason = "the tool call has no function name"
        elif raw.strip():
            try:
                args = json.loads(raw)
            except ValueError as exc:
                reason = f"arguments are not valid JSON: {exc}"
        if reason is None and not isinstance(args, dict):
            reason = f"arguments must be a JSON object, got {type(args).__name__}"
        if reason is not None:
            self._errors.append(Malformed(raw, reason))
            return ToolCallMalformed(call.index, raw, reason)
        parsed = ToolCall(call.name, args, id=call.id or new_call_id())
        self._calls.append(parsed)
        return ToolCallParsed(call.index, parsed, raw)

    def close(self) -> list[Any]:
        return self._finish_pending()

    def result(self) -> tuple[str, str, list[ToolCall], list[Malformed]]:
        content = "".join(self._content)
        # A Hermes-shaped rendering, so traces look the same in both modes.
        blocks = [render_call(c) for c in self._calls]
        text = "\n".join([content, *blocks]) if blocks else content
        return text, content, self._calls, self._errors


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Our messages in the chat-completions shape (tool calls with JSON-string arguments).

    >>> to_openai_messages([Message("user", "hi")])
    [{'role': 'user', 'content': 'hi'}]
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and m.tool_calls:
            d["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            if m.tool_call_id:
                d["tool_call_id"] = m.tool_call_id
            if m.name:
                d["name"] = m.name
        out.append(d)
    return out


END = object()
"""Sentinel for the end of a chunk stream."""


class StreamState:
    """What one streamed response has told us so far."""

    __slots__ = ("chunks", "finish", "first", "started", "stop_reason", "usage")

    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None
        self.finish: str | None = None
        self.stop_reason: str | int | None = None
        self.usage: Usage | None = None
        self.chunks = 0

    def take(self, chunk: dict[str, Any], decoder: Any) -> list[Any]:
        events: list[Any] = []
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            events = decoder.feed(choice)
            if self.first is None and events:
                self.first = time.perf_counter()
            self.chunks += 1
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.stop_reason = choice.get("stop_reason")
        if usage := chunk.get("usage"):  # (the last chunk's, with stream_options)
            details = usage.get("prompt_tokens_details") or {}
            self.usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_tokens=details.get("cached_tokens"),
            )
        return events

    def generation(self, decoder: Any, prompt: str | None, url: str) -> Generation:
        """The whole :class:`Generation` once the stream has ended."""
        text, content, calls, errors = decoder.result()
        usage = self.usage or Usage(completion_tokens=self.chunks)
        total = time.perf_counter() - self.started
        ttft = (self.first or time.perf_counter()) - self.started
        decode_s = total - ttft
        tps = (usage.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0
        return Generation(
            text=text,
            content=content,
            tool_calls=calls,
            errors=errors,
            finish_reason=self.finish or "stop",
            stop_reason=self.stop_reason,
            usage=usage,
            timings=Timings(ttft_s=ttft, total_s=total, tokens_per_s=max(tps, 0.0)),
            prompt=prompt,
            url=url,
        )


async def read_stream(
    url: str, response: httpx.Response, deadline: float, decoder: Any, state: StreamState
) -> AsyncIterator[Any]:
    """The events of one streamed response, each read under the request's ``deadline``.

    Raises ``_failures.Retry`` for a reset or a stream without a finish reason (the loop
    in :mod:`agent.llm.vllm` decides whether a retry is still possible).
    """
    own = isinstance(response, Response)
    if own:  # our own HTTP client: payloads as bytes, the deadline held by the client
        chunks: AsyncIterator[dict[str, Any] | None] = _payloads(response.events(), url)
    else:  # a caller's httpx client
        chunks = _http.sse_events(response)
    try:
        while True:
            if own:
                chunk = await anext(chunks, END)
            else:
                # The deadline wraps each read, never a yield: a timeout must not fire
                # while the caller's own code runs between events.
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(chunks, END)
            if chunk is END:
                break
            if chunk is None:
                # [DONE]: one more pull reads the body's end (briefly), so the connection
                # is reused instead of closed.
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout(_http.DRAIN_S):
                        await anext(chunks, END)
                break
            for event in state.take(chunk, decoder):
                yield event
    except TimeoutError as exc:
        raise _f.timeout(url) from exc
    except _f.RESETS as exc:
        raise _f.Retry(_f.reset(url, exc)) from exc
    finally:
        await chunks.aclose()
    if state.finish is None:
        raise _f.Retry(
            StreamInterrupted(f"stream from {url} ended without a finish reason", url=url)
        )


async def _payloads(
    events: AsyncIterator[bytes | None], url: str
) -> AsyncIterator[dict[str, Any] | None]:
    payload = _http.payload
    async for data in events:
        yield None if data is None else payload(data, url)


def structural_tag(
    tools: Sequence[ToolSpec], *, required: bool = False, first_only: bool = False
) -> str:
    """vLLM ``structured_outputs.structural_tag`` (xgrammar's ``triggered_tags`` format):
    every ``<tool_call>`` body is JSON for one of ``tools``, free text elsewhere; with
    ``required``, at least one call is forced; with ``first_only``, the generation ends
    after the first call. vLLM takes it as a JSON string.

    The legacy shape (``structures`` + ``triggers``) only constrained a body once the
    model chose to open ``<tool_call>``: it could never force a call (measured on vLLM
    0.32: plain text, no call, with ``tool_choice`` required). ``name`` comes first in the
    schema so that a streamed call is known, and may start, as early as possible.

    >>> json.loads(structural_tag([ToolSpec("f")], required=True))["format"]["at_least_one"]
    True
    """
    schema = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"],
            }
            for t in tools
        ]
    }
    tag = {
        "begin": "<tool_call>\n",
        "content": {"type": "json_schema", "json_schema": schema},
        "end": "\n</tool_call>",
    }
    return json.dumps(
        {
            "type": "structural_tag",
            "format": {
                "type": "triggered_tags",
                "triggers": ["<tool_call>"],
                "tags": [tag],
                "at_least_one": required,
                "stop_after_first": first_only,
            },
        }
    )


def _is_whole_json(raw: str) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True
