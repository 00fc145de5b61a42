"""The Starlette routes of the simulated vLLM server.

Endpoints: ``/health``, ``/version``, ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` (streamed or not), ``/tokenize``, ``/detokenize``, ``/metrics``.
Handlers parse, call :mod:`agent.sim.generate`, and shape the answer with
:mod:`agent.sim.shapes`; state lives on the :class:`~agent.sim.server.SimServer`.
An injected disconnect raises inside the response, which makes uvicorn close the socket
without finishing the body, the way a crashed or killed server looks to a client.

>>> callable(build_app)
True
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from agent.sim import chat, metrics, shapes
from agent.sim.generate import Job, RequestError, SimulatedDisconnect, prepare, token_chunks
from agent.sim.tokens import SPECIAL_TOKENS, detokenize, pieces, token_ids

if TYPE_CHECKING:
    from agent.sim.server import SimServer

__all__ = ["build_app"]


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(shapes.error_body(str(exc), exc.status, exc.param), exc.status)


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


class _AbortResponse(Response):
    """Starts a response, sends half the body, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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


class _Handlers:
    def __init__(self, server: SimServer) -> None:
        self.s = server

    # -- small endpoints ----------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return Response(status_code=503 if self.s.faults.down else 200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": "0.12.0+simulated"})

    async def models(self, request: Request) -> Response:
        cfg = self.s.config
        card = {
            "id": cfg.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": cfg.model,
            "parent": None,
            "max_model_len": cfg.max_model_len,
            "permission": [],
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def tokenize(self, request: Request) -> Response:
        try:
            body = await _json(request)
            if "messages" in body:
                prompt, special = chat.render_chat(body), body.get("add_special_tokens", False)
            else:
                prompt, special = str(body.get("prompt", "")), body.get("add_special_tokens", True)
        except RequestError as exc:
            return _error(exc)
        ids = token_ids(prompt)
        strs = pieces(prompt)
        if special:
            ids, strs = [SPECIAL_TOKENS["<|begin_of_text|>"], *ids], ["<|begin_of_text|>", *strs]
        return JSONResponse(
            {
                "count": len(ids),
                "max_model_len": self.s.config.max_model_len,
                "tokens": ids,
                "token_strs": strs if body.get("return_token_strs") else None,
            }
        )

    async def detokenize(self, request: Request) -> Response:
        try:
            body = await _json(request)
        except RequestError as exc:
            return _error(exc)
        return JSONResponse({"prompt": detokenize(list(body.get("tokens") or []))})

    async def metrics(self, request: Request) -> Response:
        e, c = self.s.engine, self.s.counters
        text = metrics.render(
            self.s.config.model,
            {
                "num_requests_running": len(e.running),
                "num_requests_waiting": len(e.waiting),
                "kv_cache_usage_perc": e.kv_usage,
            },
            {
                "prefix_cache_queries": e.cache.queries,
                "prefix_cache_hits": e.cache.hits,
                "prompt_tokens": c["prompt_tokens"],
                "generation_tokens": c["generation_tokens"],
                "request_success": c["request_success"],
            },
            {"time_to_first_token_seconds": e.ttft, "inter_token_latency_seconds": e.itl},
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # -- generation ---------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        try:
            body = await _json(request)
            self.s.requests.append(body)
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str):
                raise RequestError("the simulator accepts one string prompt", 400, "prompt")
            job = prepare(
                self.s,
                body,
                prompt,
                add_special=body.get("add_special_tokens", True),
                endpoint="/v1/completions",
            )
        except RequestError as exc:
            return _error(exc)
        if body.get("stream"):
            return _sse(self._stream_completion(job, body))
        return await self._whole(
            job,
            lambda use: shapes.completion_response(
                job.rid, self.s.config.model, job.text, job.finish, job.stop_reason, use
            ),
        )

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = await _json(request)
            self.s.requests.append(body)
            try:
                prompt = chat.render_chat(body)
            except (KeyError, TypeError, ValueError) as exc:
                raise RequestError(f"cannot render the messages: {exc}", 400, "messages") from exc
            job = prepare(
                self.s,
                body,
                prompt,
                add_special=body.get("add_special_tokens", False),
                endpoint="/v1/chat/completions",
            )
        except RequestError as exc:
            return _error(exc)
        if body.get("stream"):
            return _sse(self._stream_chat(job, body))
        return await self._whole(job, lambda use: self._chat_body(job, body, use))

    def _chat_body(self, job: Job, body: dict[str, Any], use: dict[str, Any]) -> dict[str, Any]:
        content, calls = _parse(job.text, body)
        finish = "tool_calls" if calls and job.finish == "stop" else job.finish
        return shapes.chat_response(
            job.rid, self.s.config.model, content, calls, finish, job.stop_reason, use
        )

    async def _whole(self, job: Job, build: Any) -> Response:
        seq = self.s.engine.submit(job.ids, job.out_pieces, job.n_tokens)
        try:
            disconnect = False
            try:
                async for _chunk in token_chunks(seq, job, self.s.closing):
                    pass
            except SimulatedDisconnect:
                disconnect = True
            payload = build(self._usage(job, seq.cached_tokens))
        finally:
            self.s.engine.cancel(seq)
        if disconnect:
            return _AbortResponse(json.dumps(payload).encode(), media_type="application/json")
        return JSONResponse(payload)

    def _usage(self, job: Job, cached: int) -> dict[str, Any]:
        c = self.s.counters
        c["prompt_tokens"] += len(job.ids)
        c["generation_tokens"] += job.n_tokens
        c["request_success"] += 1
        return shapes.usage(
            len(job.ids), job.n_tokens, cached if self.s.config.prompt_tokens_details else None
        )

    async def _stream_completion(self, job: Job, body: dict[str, Any]) -> AsyncIterator[bytes]:
        model, sent = self.s.config.model, 0
        seq = self.s.engine.submit(job.ids, job.out_pieces, job.n_tokens)
        try:
            async for chunk in token_chunks(seq, job, self.s.closing):
                sent += len(chunk)
                last = sent >= job.n_tokens
                yield shapes.sse(
                    shapes.completion_chunk(
                        job.rid,
                        model,
                        "".join(chunk),
                        job.finish if last else None,
                        job.stop_reason if last else None,
                    )
                )
            async for tail in self._tail(job, body, seq.cached_tokens, "text_completion"):
                yield tail
        finally:
            self.s.engine.cancel(seq)

    async def _stream_chat(self, job: Job, body: dict[str, Any]) -> AsyncIterator[bytes]:
        model, buf = self.s.config.model, ""
        tools_on = _tools_on(body)
        seq = self.s.engine.submit(job.ids, job.out_pieces, job.n_tokens)
        try:
            yield shapes.sse(
                shapes.chat_chunk(job.rid, model, {"role": "assistant", "content": ""})
            )
            async for chunk in token_chunks(seq, job, self.s.closing):
                safe, buf = (
                    chat.split_content_stream(buf + "".join(chunk))
                    if tools_on
                    else (buf + "".join(chunk), "")
                )
                if safe:
                    yield shapes.sse(shapes.chat_chunk(job.rid, model, {"content": safe}))
            _content, calls = _parse(job.text, body)
            if buf and not buf.startswith(chat.TOOL_OPEN):
                yield shapes.sse(shapes.chat_chunk(job.rid, model, {"content": buf}))
            for delta in chat.tool_call_deltas(calls):
                yield shapes.sse(shapes.chat_chunk(job.rid, model, delta))
            finish = "tool_calls" if calls and job.finish == "stop" else job.finish
            yield shapes.sse(shapes.chat_chunk(job.rid, model, {}, finish, job.stop_reason))
            async for tail in self._tail(job, body, seq.cached_tokens, "chat.completion.chunk"):
                yield tail
        finally:
            self.s.engine.cancel(seq)

    async def _tail(
        self, job: Job, body: dict[str, Any], cached: int, obj: str
    ) -> AsyncIterator[bytes]:
        use = self._usage(job, cached)
        if (body.get("stream_options") or {}).get("include_usage"):
            yield shapes.sse(shapes.usage_chunk(job.rid, obj, self.s.config.model, use))
        yield shapes.sse("[DONE]")


def _tools_on(body: dict[str, Any]) -> bool:
    return bool(body.get("tools")) and body.get("tool_choice") != "none"


def _parse(text: str, body: dict[str, Any]) -> tuple[str | None, list[dict[str, Any]]]:
    return chat.parse_output(text) if _tools_on(body) else (text, [])


def _sse(gen: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream")


def build_app(server: SimServer) -> Starlette:
    """The ASGI app serving ``server``'s state."""
    h = _Handlers(server)
    return Starlette(
        routes=[
            Route("/health", h.health, methods=["GET"]),
            Route("/version", h.version, methods=["GET"]),
            Route("/v1/models", h.models, methods=["GET"]),
            Route("/v1/completions", h.completions, methods=["POST"]),
            Route("/v1/chat/completions", h.chat_completions, methods=["POST"]),
            Route("/tokenize", h.tokenize, methods=["POST"]),
            Route("/detokenize", h.detokenize, methods=["POST"]),
            Route("/metrics", h.metrics, methods=["GET"]),
        ]
    )
