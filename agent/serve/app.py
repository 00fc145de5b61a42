"""``create_app(ServeConfig(...))``: the ASGI application behind ``agent serve``.

Mount it in your own ASGI application or run it with any ASGI server; its lifespan opens
the stores and the tasks' agents, starts the event writer and the housekeeping loop,
and resumes runs that no live replica owns (after a crash or a restart). On shutdown it
drains: no new runs, running ones stop at a step boundary and are released for a
restart or another replica to resume. When mounting it inside another Starlette app,
run its lifespan too (``lifespan=app.router.lifespan_context``).

>>> app = create_app(ServeConfig(tasks=[Path("examples/sales_duckdb/task.yaml")]))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from agent._io import io
from agent.serve._catalog import TaskCatalog
from agent.serve._errors import HTTPError, error_response
from agent.serve._hub import EventHub
from agent.serve._jobs import JobStore
from agent.serve._metrics import Metrics
from agent.serve._openai import OPENAI_ROUTES
from agent.serve._openapi import openapi
from agent.serve._routes import ROUTES
from agent.serve._runner import RunManager
from agent.serve._security import Guard, SecurityConfig

__all__ = ["ServeConfig", "Service", "create_app"]

_log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """What ``agent serve`` takes; every field has a sensible default."""

    tasks: list[Path] = field(default_factory=list)
    """Task files to serve."""
    tasks_dir: Path | None = None
    """A folder of task files (``*.yaml``, ``*/task.yaml``)."""
    store: str = ".agent"
    """Folder (SQLite) or ``postgresql://`` URL shared by every task (and every replica)."""
    model_url: str | None = None
    """Overrides the tasks' model URL."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    max_active_per_token: int = 64
    """Runs in progress at once per token on this replica (more: 429)."""
    cors_origins: list[str] = field(default_factory=list)
    """Origins allowed by CORS; none: CORS off."""
    drain_s: float = 10.0
    """On shutdown, how long runs may take to reach a step boundary."""
    lease_s: float = 15.0
    """A replica renews its runs' leases every third of this; past it, others take over."""
    tick_s: float = 0.5
    """How often cancel requests and orphaned runs are looked for."""
    poll_s: float = 0.3
    """How often a listener polls the store for a run this replica does not run."""
    peers: Path | None = None
    """A folder shared by the workers of one host on one store (``agent serve --workers``
    makes one): each worker hands the others there the events it stores, so a stream
    served by another worker than the run's gets them at once, not at its next poll; and
    shares its metrics (:mod:`agent.serve._peers`). It must be this user's and writable
    by no one else."""
    tracer: Any = None
    """An OpenTelemetry tracer for the runs' spans (``agent.tracing.tracer()``)."""


class Service:
    """The state behind the routes (``request.app.state.service``)."""

    def __init__(self, config: ServeConfig) -> None:
        from agent.runs import open_run_store

        self.config = config
        self.catalog = TaskCatalog(
            list(config.tasks), config.tasks_dir, store=config.store, model_url=config.model_url
        )
        self.catalog.tracer = config.tracer
        runs = open_run_store(config.store)
        assert runs is not None
        self.runs = runs
        self.events = _event_store(runs)
        self.replica = uuid.uuid4().hex[:12]
        self.jobs = JobStore(self.events.db, self.replica, config.lease_s)
        self.hub = EventHub(self.events, poll_s=config.poll_s)
        self.metrics = Metrics(
            t for task in self.catalog.tasks.values() for t in task.tools.enabled
        )
        self.manager = RunManager(
            self.catalog,
            self.runs,
            self.jobs,
            self.hub,
            self.metrics,
            max_active_per_token=config.max_active_per_token,
            drain_s=config.drain_s,
            tick_s=config.tick_s,
        )
        self._streams: dict[str, int] = {}  # identity -> its streams and waits open here
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        try:
            for name in self.catalog.tasks:  # open each task's databases before requests
                await self.catalog.agent(name)
            self._background = [
                asyncio.create_task(self.hub.run()),
                asyncio.create_task(self.manager.maintain()),
            ]
            if self.config.peers is not None:
                self.hub.peers = _peer_bus(self.config.peers)
                self.hub.peers.attach(self.hub.stored_elsewhere)
                self._background.append(asyncio.create_task(self._share_metrics_every_tick()))
            await self.manager.adopt_orphans()
        except BaseException:
            await self.stop()  # a lifespan whose start failed does not stop
            raise

    def stream_slot(self, identity: str) -> Callable[[], None]:
        """Take one of ``identity``'s places for an open stream or wait (a 429 when it has
        ``max_streams`` open here); the function that gives it back (once). Taken before a
        run starts, so a refused stream starts none."""
        cap = self.config.security.max_streams
        if self._streams.get(identity, 0) >= cap:
            raise HTTPError(
                429, "too_many_streams", f"{cap} event streams are open for this token",
                {"Retry-After": "1"},
            )  # fmt: skip
        self._streams[identity] = self._streams.get(identity, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._streams[identity] -= 1
                if not self._streams[identity]:
                    del self._streams[identity]

        return release

    def follow(self, run_id: str, after: int, slot: Callable[[], None]) -> AsyncIterator[Any]:
        """``run_id``'s events after number ``after`` for a client (batches, as
        :meth:`EventHub.follow`), holding ``slot`` (:meth:`stream_slot`) until they end or
        the client goes."""

        async def stream() -> AsyncIterator[Any]:
            try:
                async for events in self.hub.follow(run_id, after):
                    yield events
            finally:
                slot()

        events = stream()
        # One never started (its client left between the headers and the first event) is
        # released when it is collected. Untested: that window cannot be staged from a client.
        weakref.finalize(events, slot)
        return events

    async def final_result(self, run_id: str, slot: Callable[[], None]) -> dict[str, Any]:
        """The result of the run's first ``final`` event (it ended or paused), holding
        ``slot`` while it waits; 503 when this server stops first (the run goes on: its id
        in ``X-Run-Id``)."""
        async with contextlib.aclosing(self.follow(run_id, 0, slot)) as batches:
            async for events in batches:
                if events and events[-1].kind == "final":
                    return json.loads(events[-1].data)["result"]
        raise HTTPError(
            503, "draining", "the server stopped before the run ended",
            {"Retry-After": "5", "X-Run-Id": run_id},
        )  # fmt: skip

    async def submit_holding(
        self, body: Any, identity: str, key: str | None, request: Any = None
    ) -> tuple[str, bool, Callable[[], None]]:
        """:meth:`RunManager.submit` for a client that will stream or wait: its stream place
        is taken first (and given back if the run is refused)."""
        slot = self.stream_slot(identity)
        try:
            run_id, created = await self.manager.submit(body, identity, key, request)
        except BaseException:
            slot()
            raise
        return run_id, created, slot

    @property
    def listeners(self) -> int:
        """Event streams and waits open here (the runs API's and the chat facade's)."""
        return sum(self._streams.values())

    async def metrics_text(self) -> str:
        """``/metrics``: this process's, or with peers every worker's."""
        if self.hub.peers is None:
            return self.metrics.render(self.manager.running, self.listeners)
        await self._share_metrics()  # first: the sum then covers all this one counted
        return Metrics.render_all(await io(self.hub.peers.all_metrics))

    async def _share_metrics(self) -> None:
        assert self.hub.peers is not None
        snapshot = self.metrics.snapshot(self.manager.running, self.listeners)
        try:
            await io(self.hub.peers.write_metrics, snapshot)
        except OSError:
            _log.exception("sharing metrics with the other workers failed")

    async def _share_metrics_every_tick(self) -> None:
        while True:
            await self._share_metrics()
            await asyncio.sleep(self.config.tick_s)

    def begin_shutdown(self) -> None:
        """Stop taking runs and end event streams now (a SIGTERM arrived)."""
        self.manager.draining = True
        self.hub.begin_close()

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.manager.drain()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hub.aclose()
        if self.hub.peers is not None:
            await self._share_metrics()  # what happened while draining counts too
            self.hub.peers.close()
            self.hub.peers = None
        await self.catalog.aclose()
        if self.config.tracer is not None:  # the spans the drain ended, before the exit
            from agent.tracing import flush

            await io(flush)


def create_app(config: ServeConfig | None = None) -> Starlette:
    """The HTTP service as an ASGI app (see the module docstring)."""
    config = config or ServeConfig()
    service = Service(config)  # tasks load now: a bad task file fails here, not later
    routes = [*ROUTES, *OPENAI_ROUTES]
    document = openapi(routes, title="hermes-vllm-agent", version=_version())

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(
        routes=[
            *(StarletteRoute(r.path, r.handler, methods=[r.method]) for r in routes),
            StarletteRoute("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={
            HTTPError: lambda request, exc: exc.response(),
            Exception: _internal_error,
            404: lambda request, exc: error_response(404, "not_found", "no such route"),
            405: lambda request, exc: error_response(
                405, "method_not_allowed", "method not allowed"
            ),
        },
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(Guard, config=config.security, metrics=service.metrics)
    if config.cors_origins:  # outermost: preflight requests carry no token
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    return app


async def _internal_error(request: Request, exc: Exception) -> Response:
    _log.error("internal error", exc_info=exc)
    return error_response(500, "internal_error", "internal error (see the server's log)")


def _peer_bus(folder: Path) -> Any:
    from agent.errors import ConfigError
    from agent.serve._peers import PeerBus

    try:
        return PeerBus(folder)
    except OSError as exc:
        raise ConfigError(f"peers folder {folder}: {exc.strerror or exc}") from None


def _event_store(runs: Any) -> Any:
    """Where events and jobs go: the run store's database for Postgres; for SQLite a file
    of their own beside ``runs.db`` (``serve.db``), so that the service's writes and the
    runs' own record writes do not queue on one file's write lock."""
    from agent._db import SqliteDatabase
    from agent.runs import RunStore

    if runs.db.kind != "sqlite":
        return runs
    return RunStore(SqliteDatabase(Path(runs.path).with_name("serve.db")))


def _version() -> str:
    from agent import __version__

    return __version__
