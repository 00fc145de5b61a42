"""A recording proxy in front of a suite's local services, so checks see what they received.

Each sample reaches a recorded service through its own base URL,
``http://127.0.0.1:PORT/NAME/TOKEN``, handed to the case as ``{NAME_url}``: the proxy
strips ``/NAME/TOKEN``, records the request under that sample's token, and forwards it to
the service's ``url``. So concurrent samples (and trials of one case) never see each
other's requests, with one listening socket for the whole eval. A request that does not
start with a known ``/NAME/TOKEN`` is answered 404 (the model left the URL it was given).

Trade-off: the model sees a longer base URL than the service's own; services that answer
with absolute URLs of their own bypass the proxy (and are not recorded).

>>> Recorder({"api": "http://127.0.0.1:9"}).url("api", "s1")
'http://127.0.0.1:0/api/s1'
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs

import httpx

from evals.checks import HttpRecord

__all__ = ["Recorder"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}


class Recorder:
    """Records requests per sample token; :meth:`take` hands a sample's records over."""

    def __init__(self, services: dict[str, str]) -> None:
        self.services = {name: url.rstrip("/") for name, url in services.items()}
        self.port = 0
        self._records: dict[str, dict[str, list[HttpRecord]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def url(self, service: str, token: str) -> str:
        """The base URL sample ``token`` uses for ``service``."""
        return f"http://127.0.0.1:{self.port}/{service}/{token}"

    def take(self, token: str) -> dict[str, list[HttpRecord]]:
        """Every recorded service's requests from sample ``token`` (and forget them)."""
        got = self._records.pop(token, {})
        return {name: list(got.get(name, [])) for name in self.services}

    async def start(self) -> Recorder:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=_METHODS)])
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._client = httpx.AsyncClient(trust_env=False, timeout=30.0)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
            await asyncio.sleep(0.005)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> Recorder:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _handle(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        service, _, rest = request.path_params["path"].partition("/")
        token, _, path = rest.partition("/")
        if service not in self.services or not token:
            return JSONResponse(
                {"error": "not a recorded service URL; use the URL you were given"}, 404
            )
        body = await request.body()
        query = request.url.query
        assert self._client is not None
        try:
            upstream = await self._client.request(
                request.method,
                f"{self.services[service]}/{path}" + (f"?{query}" if query else ""),
                content=body,
                headers={
                    k: v for k, v in request.headers.items() if k.lower() not in ("host", *_HOP)
                },
            )
            status, content, headers = upstream.status_code, upstream.content, upstream.headers
        except httpx.HTTPError as exc:
            logging.getLogger(__name__).warning("recorded service %s: %s", service, exc)
            status, content, headers = 502, b'{"error": "service unreachable"}', httpx.Headers()
        self._records[token][service].append(
            HttpRecord(
                request.method,
                "/" + path,
                parse_qs(query, keep_blank_values=True),
                body.decode("utf-8", errors="replace"),
                status,
            )
        )
        kept = {k: v for k, v in headers.items() if k.lower() not in _HOP}
        return Response(content, status, headers=kept)


_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
