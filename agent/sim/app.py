"""The Starlette routes of the simulated vLLM server.

Endpoints: ``/health``, ``/version``, ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` (streamed or not), ``/tokenize``, ``/detokenize``, ``/metrics``.
Handlers parse, call :mod:`agent.sim.generate`, and answer through :mod:`agent.sim.respond`
and :mod:`agent.sim.shapes`; state lives on the :class:`~agent.sim.server.SimServer`.
An injected disconnect raises inside the response, which makes uvicorn close the socket
without finishing the body, the way a crashed or killed server looks to a client.

>>> callable(build_app)
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.sim import chat, metrics, respond, shapes
from agent.sim.generate import RequestError, prepare
from agent.sim.tokens import SPECIAL_TOKENS, detokenize, pieces, token_ids

if TYPE_CHECKING:
    from agent.sim.server import SimServer

__all__ = ["build_app"]


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(shapes.error_body(str(exc), exc.status, exc.param, exc.kind), exc.status)


def _invalid(message: str, param: str) -> RequestError:
    """A body that fails vLLM's request validation (pydantic): type ``"Bad Request"``."""
    return RequestError(f"1 validation error:\n  {message}", 400, param, "Bad Request")


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _invalid(f"JSON decode error: {exc}", "body") from exc
    if not isinstance(body, dict):
        raise _invalid("Input should be a valid dictionary", "body")
    return body


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
        now = int(time.time())
        permission = {
            "id": shapes.new_id("modelperm"),
            "object": "model_permission",
            "created": now,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": cfg.model,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": cfg.model,
            "parent": None,
            "max_model_len": cfg.max_model_len,
            "permission": [permission],
        }
        # LoRA adapters are listed after the base model, their parent (as vLLM lists them).
        adapters = [
            {**card, "id": name, "root": f"/loras/{name}", "parent": cfg.model}
            for name in cfg.lora_modules
        ]
        return JSONResponse({"object": "list", "data": [card, *adapters]})

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
                "request_success": ("finished_reason", dict(self.s.finished)),
            },
            {"time_to_first_token_seconds": e.ttft, "inter_token_latency_seconds": e.itl},
        )
        text += metrics.cache_config(e.profile.cache_tokens)
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
            return _sse(respond.stream_completion(self.s, job, body))
        return await respond.whole(self.s, job, body, chat_api=False)

    async def chat_completions(self, request: Request) -> Response:
        try:
            body = await _json(request)
            self.s.requests.append(body)
            if not isinstance(body.get("messages"), list):
                raise _invalid("Input should be a valid list", "body.messages")
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
            return _sse(respond.stream_chat(self.s, job, body))
        return await respond.whole(self.s, job, body, chat_api=True)


class _RequireKey:
    """vLLM's ``--api-key`` check: a bearer token on every ``/v1`` request."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.expected = app, hashlib.sha256(f"Bearer {key}".encode()).digest()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(hashlib.sha256(given).digest(), self.expected):
                response = JSONResponse({"error": "Unauthorized"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _sse(gen: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream")


def build_app(server: SimServer) -> Starlette:
    """The ASGI app serving ``server``'s state."""
    h = _Handlers(server)
    key = server.config.api_key
    return Starlette(
        middleware=[Middleware(_RequireKey, key=key)] if key else [],
        routes=[
            Route("/health", h.health, methods=["GET"]),
            Route("/version", h.version, methods=["GET"]),
            Route("/v1/models", h.models, methods=["GET"]),
            Route("/v1/completions", h.completions, methods=["POST"]),
            Route("/v1/chat/completions", h.chat_completions, methods=["POST"]),
            Route("/tokenize", h.tokenize, methods=["POST"]),
            Route("/detokenize", h.detokenize, methods=["POST"]),
            Route("/metrics", h.metrics, methods=["GET"]),
        ],
    )
