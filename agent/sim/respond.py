"""Answers to generation requests, whole or streamed, in vLLM 0.32's shapes.

:mod:`agent.sim.app` checks a request and makes a :class:`~agent.sim.generate.Job`; this
module runs the job's choices through the engine and shapes what comes out. What a client
sees, as vLLM sends it (checked against a real vLLM 0.32 by ``tests/real_vllm``):

- **Completions, streamed**: one chunk per engine step per choice; the last chunk of a
  choice carries its ``finish_reason``; with ``n`` > 1, chunks of the choices interleave.
- **Chat, streamed**: a first chunk per choice with ``{"role": "assistant", "content": ""}``;
  content deltas (held back from a ``<tool_call>`` on when tools are parsed); then each
  call's deltas; the finish reason rides on the last content delta, or on an empty delta
  after calls or a final stop token.
- **Usage**: a last chunk with empty ``choices`` when ``stream_options.include_usage``;
  ``system_fingerprint`` on the last chunk before ``[DONE]``.
- **Tool calls in chat**: parsed when ``tools`` are given and ``tool_choice`` is not
  ``"none"``; ``finish_reason`` is ``"tool_calls"`` except for a named ``tool_choice``
  (``"stop"``, as vLLM and OpenAI say); ``content`` is ``""`` beside calls that
  ``tool_choice`` forced, ``None`` beside calls the model chose to make with no text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from agent.sim import chat, shapes
from agent.sim.engine import SeqHandle
from agent.sim.generate import Choice, Job, SimulatedDisconnect, token_chunks
from agent.sim.logprobs import chat_logprobs, completion_logprobs

if TYPE_CHECKING:
    from agent.sim.server import SimServer

__all__ = ["AbortResponse", "stream_chat", "stream_completion", "whole"]


class AbortResponse(Response):
    """Starts a response, sends half the body, then drops the connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise SimulatedDisconnect("simulated disconnect before the body was complete")


def _submit(s: SimServer, job: Job) -> list[SeqHandle]:
    return [s.engine.submit(job.ids, c.out_pieces, c.n_tokens) for c in job.choices]


def _cancel(s: SimServer, seqs: list[SeqHandle]) -> None:
    # A request cut short by its client counts nowhere in request_success_total, not even
    # under "abort": that is what vLLM 0.32 does (measured by tests/real_vllm).
    for seq in seqs:
        s.engine.cancel(seq)


def _usage(
    s: SimServer, job: Job, cached: int, *, chat_api: bool, streamed: bool
) -> dict[str, Any]:
    c = s.counters
    c["prompt_tokens"] += len(job.ids)
    c["generation_tokens"] += job.n_tokens
    c["request_success"] += 1
    for choice in job.choices:
        s.finished["length" if choice.finish == "length" else "stop"] += 1
    details = cached if s.config.prompt_tokens_details else None
    return shapes.usage(len(job.ids), job.n_tokens, details, chat=chat_api, streamed=streamed)


async def _steps(
    s: SimServer, job: Job, seqs: list[SeqHandle]
) -> AsyncIterator[tuple[int, list[str]]]:
    """``(choice index, pieces)`` per engine step, the choices' steps interleaved."""
    if len(seqs) == 1:
        async for chunk in token_chunks(seqs[0], job, s.closing):
            yield 0, chunk
        return
    queue: asyncio.Queue[tuple[int, list[str]] | BaseException | None] = asyncio.Queue()

    async def pump(index: int, seq: SeqHandle) -> None:
        try:
            async for chunk in token_chunks(seq, job, s.closing):
                queue.put_nowait((index, chunk))
        except BaseException as exc:  # handed to the reader, which re-raises it
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    tasks = [asyncio.create_task(pump(i, seq)) for i, seq in enumerate(seqs)]
    try:
        done = 0
        while done < len(tasks):
            item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, SimulatedDisconnect):
                await task


# -- whole answers ------------------------------------------------------------------------------
async def whole(s: SimServer, job: Job, body: dict[str, Any], *, chat_api: bool) -> Response:
    """Run every choice to its end and answer with one JSON body."""
    seqs = _submit(s, job)
    try:
        disconnect = False
        try:
            async for _ in _steps(s, job, seqs):
                pass
        except SimulatedDisconnect:
            disconnect = True
        use = _usage(s, job, seqs[0].cached_tokens, chat_api=chat_api, streamed=False)
        model = job.model
        if chat_api:
            payload = shapes.chat_response(
                job.rid, model, [_chat_choice(job, c, body) for c in job.choices], use
            )
        else:
            choices = [
                shapes.completion_choice(
                    c.index,
                    c.text,
                    c.finish,
                    c.stop_reason,
                    None if job.logprobs is None else completion_logprobs(c.out_pieces, 0),
                )
                for c in job.choices
            ]
            payload = shapes.completion_response(job.rid, model, choices, use)
    finally:
        _cancel(s, seqs)
    if disconnect:
        return AbortResponse(json.dumps(payload).encode(), media_type="application/json")
    return JSONResponse(payload)


def tools_parsed(body: dict[str, Any]) -> bool:
    """Does the server parse tool calls out of this chat request's output?"""
    return bool(body.get("tools")) and body.get("tool_choice") != "none"


def _forced(body: dict[str, Any]) -> bool:
    return body.get("tool_choice") == "required" or isinstance(body.get("tool_choice"), dict)


def chat_outcome(
    choice: Choice, body: dict[str, Any]
) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool_calls, finish_reason) of one chat choice."""
    if not tools_parsed(body):
        return choice.text, [], choice.finish
    content, calls = chat.parse_output(choice.text)
    finish = choice.finish
    if calls:
        if _forced(body):
            content = ""
        if finish == "stop" and not isinstance(body.get("tool_choice"), dict):
            finish = "tool_calls"
    return content, calls, finish


def _chat_choice(job: Job, choice: Choice, body: dict[str, Any]) -> dict[str, Any]:
    content, calls, finish = chat_outcome(choice, body)
    lp = None if job.logprobs is None else chat_logprobs(choice.out_pieces, job.logprobs)
    return shapes.chat_choice(choice.index, content, calls, finish, choice.stop_reason, lp)


# -- streams ------------------------------------------------------------------------------------
def _fingerprinted(payload: dict[str, Any], last: bool, body: dict[str, Any]) -> bytes:
    """One chunk; the stream's last one before ``[DONE]`` carries ``system_fingerprint``
    when no usage chunk follows."""
    if last and not (body.get("stream_options") or {}).get("include_usage"):
        payload = {**payload, "system_fingerprint": shapes.FINGERPRINT}
    return shapes.sse(payload)


async def stream_completion(s: SimServer, job: Job, body: dict[str, Any]) -> AsyncIterator[bytes]:
    model = job.model
    sent = [0] * len(job.choices)
    offsets = [0] * len(job.choices)
    unfinished = len(job.choices)
    seqs = _submit(s, job)
    try:
        async for index, chunk in _steps(s, job, seqs):
            choice = job.choices[index]
            sent[index] += len(chunk)
            done = sent[index] >= choice.n_tokens
            unfinished -= done
            text = "".join(chunk)
            lp = None if job.logprobs is None else completion_logprobs(chunk, offsets[index])
            offsets[index] += len(text)
            payload = shapes.completion_chunk(
                job.rid,
                model,
                text,
                choice.finish if done else None,
                choice.stop_reason if done else None,
                index=index,
                logprobs=lp,
            )
            yield _fingerprinted(payload, unfinished == 0, body)
        async for tail in _tail(s, job, body, seqs[0].cached_tokens, chat_api=False):
            yield tail
    finally:
        _cancel(s, seqs)


class _ChatChoiceStream:
    """The streamed state of one chat choice: content sent, text held back."""

    def __init__(self, choice: Choice, parse: bool) -> None:
        self.choice = choice
        self.parse = parse
        self.sent = 0
        self.held = ""

    def take(self, chunk: list[str]) -> str:
        """Content safe to send now from this step's pieces."""
        self.sent += len(chunk)
        text = self.held + "".join(chunk)
        if not self.parse:
            self.held = ""
            return text
        safe, self.held = chat.split_content_stream(text)
        return safe

    @property
    def done(self) -> bool:
        return self.sent >= self.choice.n_tokens


async def stream_chat(s: SimServer, job: Job, body: dict[str, Any]) -> AsyncIterator[bytes]:
    model, rid = job.model, job.rid
    parse = tools_parsed(body)
    states = [_ChatChoiceStream(c, parse) for c in job.choices]
    unfinished = len(states)
    seqs = _submit(s, job)
    try:
        for c in job.choices:
            yield shapes.sse(
                shapes.chat_chunk(rid, model, {"role": "assistant", "content": ""}, index=c.index)
            )
        async for index, chunk in _steps(s, job, seqs):
            st = states[index]
            safe = st.take(chunk)
            lp = None if job.logprobs is None else chat_logprobs(chunk, job.logprobs)
            if not st.done:
                if safe:
                    yield shapes.sse(
                        shapes.chat_chunk(rid, model, {"content": safe}, index=index, logprobs=lp)
                    )
                continue
            unfinished -= 1
            out = _chat_step(rid, model, st, safe, lp, body)
            for i, payload in enumerate(out):
                yield _fingerprinted(payload, unfinished == 0 and i == len(out) - 1, body)
        async for tail in _tail(s, job, body, seqs[0].cached_tokens, chat_api=True):
            yield tail
    finally:
        _cancel(s, seqs)


def _chat_step(
    rid: str, model: str, st: _ChatChoiceStream, safe: str, lp: Any, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """The chunks that end a streamed chat choice: content, call deltas, finish."""
    _content, calls, finish = chat_outcome(st.choice, body)
    index, stop = st.choice.index, st.choice.stop_reason
    text = safe + ("" if st.held.startswith(chat.TOOL_OPEN) else st.held)
    if not calls and text:
        return [
            shapes.chat_chunk(rid, model, {"content": text}, finish, stop, index=index, logprobs=lp)
        ]
    out = (
        [shapes.chat_chunk(rid, model, {"content": text}, index=index, logprobs=lp)] if text else []
    )
    for delta in chat.tool_call_deltas(calls):
        out.append(shapes.chat_chunk(rid, model, delta, index=index))
    out.append(shapes.chat_chunk(rid, model, {}, finish, stop, index=index))
    return out


async def _tail(
    s: SimServer, job: Job, body: dict[str, Any], cached: int, *, chat_api: bool
) -> AsyncIterator[bytes]:
    """The usage chunk (when asked for) and ``[DONE]``."""
    use = _usage(s, job, cached, chat_api=chat_api, streamed=True)
    if (body.get("stream_options") or {}).get("include_usage"):
        obj = "chat.completion.chunk" if chat_api else "text_completion"
        yield shapes.sse(shapes.usage_chunk(job.rid, obj, job.model, use))
    yield shapes.sse("[DONE]")
