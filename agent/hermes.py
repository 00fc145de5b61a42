"""Incremental parser of Hermes 3 output: text, scratch pads and ``<tool_call>`` blocks.

:class:`StreamParser` turns text deltas into events as soon as they are known;
:func:`parse` runs it over a whole output. Events (frozen dataclasses, tagged by ``kind``):

- :class:`TextDelta` — text outside calls and scratch pads (the answer);
- :class:`ScratchPadDelta` — text inside ``<scratch_pad>…</scratch_pad>`` (reasoning); kept
  apart so UIs can show or hide it and so it never leaks into ``content``;
- :class:`ToolCallStarted` — a call's name is known (before its block ends);
- :class:`ToolCallParsed` / :class:`ToolCallMalformed` — a block ended and was judged.

Cost is linear in the output. Outside a call only a possible partial tag at the end is held
back; inside a call a small lexer keeps its state (string quote, escape, bracket depth)
between deltas, so ``</tool_call>``, ``<tool_call>`` and braces inside strings neither end
nor start a call, and no delta re-scans earlier text. Any chunking of the same text gives
the same events (after merging adjacent text deltas).

Leniency, each a trade-off for outputs seen in the wild:

- every block is judged alone: one malformed call never drops the others;
- a block's body is judged by :func:`parse_call` (in :mod:`agent._hermes_call`): keys in
  either order, ``arguments`` as a JSON string, Python-dict style on bounded input;
- an unclosed final ``<tool_call>`` still parses; text after its JSON object is content;
- ``<tool_call>`` outside strings inside a call ends that call and starts the next one;
- if quoting is so broken that a block never ends, it is re-split at ``</tool_call>`` at the
  end of generation (first cut that leaves a valid call, else the first), so later calls
  survive;
- inside a scratch pad only ``</scratch_pad>`` ends it (it may quote tags). Pad text after a
  ``<tool_call>`` in a pad is held back until the pad closes; if it never does, the pad
  forgot its close tag, so it ended at that ``<tool_call>`` and the rest is parsed as output
  (at :meth:`StreamParser.close`: those calls are not streamed early).

>>> [e.kind for e in parse_events('Hi <tool_call>{"name": "f", "arguments": {}}</tool_call>')]
['text', 'call_started', 'call']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from agent._hermes_call import decode_short, parse_call
from agent.types import Malformed, ToolCall

__all__ = [
    "Event",
    "ParsedOutput",
    "ScratchPadDelta",
    "StreamParser",
    "TextDelta",
    "ToolCallMalformed",
    "ToolCallParsed",
    "ToolCallStarted",
    "parse",
    "parse_call",
    "parse_events",
]

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
PAD_OPEN, PAD_CLOSE = "<scratch_pad>", "</scratch_pad>"


@dataclass(frozen=True)
class TextDelta:
    """Text outside calls and scratch pads."""

    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True)
class ScratchPadDelta:
    """Text inside ``<scratch_pad>`` (the model's reasoning), tags excluded."""

    text: str
    kind: Literal["scratch_pad"] = "scratch_pad"


@dataclass(frozen=True)
class ToolCallStarted:
    """The ``index``-th call block of the turn has named its function."""

    index: int
    name: str
    kind: Literal["call_started"] = "call_started"


@dataclass(frozen=True)
class ToolCallParsed:
    """A usable call; ``raw`` is the block as written, tags included."""

    index: int
    call: ToolCall
    raw: str
    kind: Literal["call"] = "call"


@dataclass(frozen=True)
class ToolCallMalformed:
    """An unusable call block; ``reason`` says what was wrong and shows the expected form."""

    index: int
    raw: str
    reason: str
    kind: Literal["malformed"] = "malformed"


Event: TypeAlias = (
    TextDelta | ScratchPadDelta | ToolCallStarted | ToolCallParsed | ToolCallMalformed
)


@dataclass
class ParsedOutput:
    """A whole output: stripped ``content``, calls, malformed blocks and the scratch pad."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[Malformed] = field(default_factory=list)
    scratch_pad: str | None = None


_CALL_TOKEN = re.compile(r"""["'{}\[\]<:,]""")
_STRING_TOKEN = {'"': re.compile(r'["\\]'), "'": re.compile(r"['\\]")}
_NAME_CAP = 256  # depth-1 strings longer than this cannot be a key or a name worth streaming


class _CallLexer:
    """Lexical state inside one call block, carried across deltas."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.quote = ""
        self.escaped = False
        self.depth = 0
        self.acc: list[str] | None = None  # current depth-1 string, when short
        self.acc_len = 0
        self.last_string: str | None = None
        self.key: str | None = None
        self.name: str | None = None

    def raw(self) -> str:
        return "".join(self.parts)

    def close_string(self) -> str | None:
        """Called at a closing quote; returns the function name when this string is it."""
        s = "".join(self.acc) if self.acc is not None and self.acc_len <= _NAME_CAP else None
        self.quote, self.acc = "", None
        if self.depth != 1:
            return None
        if s is not None and self.key == "name" and self.name is None:
            self.name, self.key = decode_short(s), None
            return self.name
        self.last_string = s
        return None


class StreamParser:
    """Feed text deltas, get events; :meth:`close` at the end of generation.

    >>> p = StreamParser()
    >>> p.feed("Hello <tool_") + p.feed("call>{}") + p.close()  # doctest: +ELLIPSIS
    [TextDelta(text='Hello ', kind='text'), ToolCallMalformed(index=0, ...)]
    """

    def __init__(self) -> None:
        self._state: Literal["text", "pad", "call"] = "text"
        self._buf = ""
        self._index = 0
        self._lexer: _CallLexer | None = None
        self.result = ParsedOutput()
        """Accumulated so far; complete after :meth:`close` (``content`` stripped then)."""
        self._content: list[str] = []
        self._pad: list[str] | None = None
        self._held: list[str] | None = None  # pad text from a <tool_call> in it, not yet sent
        self._closed = False

    def feed(self, delta: str) -> list[Event]:
        """Consume one delta; return the events it completes."""
        if self._closed:
            raise RuntimeError("StreamParser.feed() after close(); make a new parser per output")
        self._buf += delta
        out: list[Event] = []
        progress = True
        while progress and self._buf:
            progress = self._scan_call(out) if self._state == "call" else self._scan_text(out)
        return out

    def close(self) -> list[Event]:
        """Flush held-back text and judge an unclosed final call."""
        if self._closed:
            return []
        self._closed = True
        out: list[Event] = []
        if self._state == "call":
            assert self._lexer is not None
            self._lexer.parts.append(self._buf)
            self._buf = ""
            self._finish_unclosed(self._lexer.raw(), out)
        elif self._state == "pad":
            self._finish_pad(out)
        elif self._buf:
            self._emit_text(self._buf, out)
            self._buf = ""
        self.result.content = "".join(self._content).strip()
        if self._pad is not None:
            self.result.scratch_pad = "".join(self._pad).strip()
        return out

    # -- text and scratch pad --------------------------------------------------------------

    def _scan_text(self, out: list[Event]) -> bool:
        buf, pos = self._buf, 0
        if self._state == "pad":
            wanted = (PAD_CLOSE,) if self._held is not None else (PAD_CLOSE, CALL_OPEN)
        else:
            wanted = (CALL_OPEN, PAD_OPEN)
        while True:
            j = buf.find("<", pos)
            if j < 0:
                self._emit_text(buf, out)
                self._buf = ""
                return False
            tag = next((t for t in wanted if buf.startswith(t, j)), None)
            if tag is not None:
                self._emit_text(buf[:j], out)
                self._buf = buf[j + len(tag) :]
                if self._state == "pad" and tag == CALL_OPEN:
                    self._held = [tag]  # quoted, or the pad's close tag was forgotten
                    return True
                if self._held is not None:
                    held, self._held = "".join(self._held), None
                    self._emit_text(held, out)
                self._enter(tag)
                return True
            if len(buf) - j < 14 and any(t.startswith(buf[j:]) for t in wanted):
                self._emit_text(buf[:j], out)  # a possible partial tag: wait for more
                self._buf = buf[j:]
                return False
            pos = j + 1

    def _enter(self, tag: str) -> None:
        if tag == CALL_OPEN:
            self._state, self._lexer = "call", _CallLexer()
        elif tag == PAD_OPEN:
            self._state = "pad"
            self._pad = self._pad if self._pad is not None else []
        else:
            self._state = "text"

    def _emit_text(self, text: str, out: list[Event]) -> None:
        if not text:
            return
        if self._held is not None:
            self._held.append(text)
        elif self._state == "pad":
            assert self._pad is not None
            self._pad.append(text)
            out.append(ScratchPadDelta(text))
        else:
            self._content.append(text)
            out.append(TextDelta(text))

    # -- inside a call ---------------------------------------------------------------------

    def _scan_call(self, out: list[Event]) -> bool:
        lx, buf = self._lexer, self._buf
        assert lx is not None
        pos, n = 0, len(buf)
        while pos < n:
            if lx.quote:
                pos = self._scan_string(lx, buf, pos, out)
                continue
            m = _CALL_TOKEN.search(buf, pos)
            if m is None:
                break
            j, c = m.start(), m.group()
            if c == "<":
                tag = CALL_CLOSE if buf.startswith(CALL_CLOSE, j) else None
                tag = tag or (CALL_OPEN if buf.startswith(CALL_OPEN, j) else None)
                if tag is not None:
                    lx.parts.append(buf[:j])
                    self._buf = buf[j + len(tag) :]
                    self._state, self._lexer = "text", None
                    if tag == CALL_CLOSE:
                        body = lx.raw()
                        self._judge(body, CALL_OPEN + body + CALL_CLOSE, out, closed=True)
                    else:  # the close tag was forgotten: judge like an unclosed block
                        self._emit_text(self._judge(lx.raw(), "", out, closed=False), out)
                        self._enter(CALL_OPEN)
                    return True
                if n - j < len(CALL_CLOSE) and (
                    CALL_CLOSE.startswith(buf[j:]) or CALL_OPEN.startswith(buf[j:])
                ):
                    lx.parts.append(buf[:j])
                    self._buf = buf[j:]
                    return False
            elif c in "\"'" and lx.depth >= 1:
                # Outside the call's object (junk after it, like "Let's go") a quote opens
                # no string, so a later </tool_call> still ends the block.
                lx.quote, lx.acc, lx.acc_len = c, ([] if lx.depth == 1 else None), 0
            elif c in "{[":
                lx.depth += 1
                lx.key = None
            elif c in "}]":
                lx.depth -= 1
            elif c == ":" and lx.depth == 1:
                lx.key = lx.last_string
            elif c == "," and lx.depth == 1:
                lx.key = lx.last_string = None
            pos = j + 1
        lx.parts.append(buf)
        self._buf = ""
        return False

    def _scan_string(self, lx: _CallLexer, buf: str, pos: int, out: list[Event]) -> int:
        if lx.escaped:
            lx.escaped = False
            self._acc(lx, buf[pos])
            return pos + 1
        m = _STRING_TOKEN[lx.quote].search(buf, pos)
        end = len(buf) if m is None else m.start()
        self._acc(lx, buf[pos:end])
        if m is None:
            return end
        if buf[end] == "\\":
            lx.escaped = True
            self._acc(lx, "\\")
        elif (name := lx.close_string()) is not None:
            out.append(ToolCallStarted(self._index, name))
        return end + 1

    @staticmethod
    def _acc(lx: _CallLexer, text: str) -> None:
        if lx.acc is not None and lx.acc_len <= _NAME_CAP:
            lx.acc.append(text)
            lx.acc_len += len(text)

    def _judge(self, body: str, raw: str, out: list[Event], *, closed: bool) -> str:
        """Emit the verdict on one block; return the text after its JSON (unclosed only).

        ``raw`` is the block with its tags; empty means ``<tool_call>`` + ``body``.
        """
        result = parse_call(body, allow_trailing=not closed)
        index, self._index = self._index, self._index + 1
        if isinstance(result, str):
            raw = raw or CALL_OPEN + body
            self.result.errors.append(Malformed(raw, result))
            out.append(ToolCallMalformed(index, raw, result))
            return ""
        call, trailing = result
        raw = raw or CALL_OPEN + body[: len(body) - len(trailing)]
        self.result.tool_calls.append(call)
        out.append(ToolCallParsed(index, call, raw))
        return trailing

    def _finish_unclosed(self, body: str, out: list[Event]) -> None:
        # Broken quoting can hide a real </tool_call>: cut at the first one that leaves a
        # valid call; else keep the whole block if it parses (a tag inside a string); else
        # cut at the first one. The rest is parsed afresh, so later calls survive.
        self._state = "text"
        cuts = [m.start() for m in re.finditer(re.escape(CALL_CLOSE), body)][:20]
        good = next((k for k in cuts if not isinstance(parse_call(body[:k]), str)), None)
        whole_ok = not isinstance(parse_call(body, allow_trailing=True), str)
        if good is None and (not cuts or whole_ok):
            self._emit_text(self._judge(body, "", out, closed=False), out)
            return
        k = cuts[0] if good is None else good
        self._judge(body[:k], CALL_OPEN + body[: k + len(CALL_CLOSE)], out, closed=True)
        self._reparse(body[k + len(CALL_CLOSE) :], out)

    def _finish_pad(self, out: list[Event]) -> None:
        # A scratch pad still open at the end that holds <tool_call> forgot its close tag:
        # the pad ended there and the rest is output.
        if self._held is None:
            self._emit_text(self._buf, out)
            return
        section, self._held, self._state = "".join(self._held) + self._buf, None, "text"
        self._reparse(section, out)

    def _reparse(self, text: str, out: list[Event]) -> None:
        rest = StreamParser()
        rest._index, rest.result = self._index, self.result
        rest._content, rest._pad = self._content, self._pad
        out.extend(rest.feed(text) + rest.close())
        self._pad = rest._pad


def parse_events(text: str) -> list[Event]:
    """All events for a whole output, as a stream would give them."""
    p = StreamParser()
    return p.feed(text) + p.close()


def parse(text: str) -> ParsedOutput:
    """Parse a whole output into content, calls, malformed blocks and scratch pad.

    >>> out = parse('<tool_call>{"arguments": "{\\\\"a\\\\": 1}", "name": "f"}</tool_call>')
    >>> (out.tool_calls[0].name, out.tool_calls[0].arguments)
    ('f', {'a': 1})
    """
    p = StreamParser()
    p.feed(text)
    p.close()
    return p.result
