"""The runs API: runs, their events (SSE), approval, cancel, threads, tasks, probes.

Every handler parses (pydantic, ``extra="forbid"``), delegates to the
:class:`~agent.serve._runner.RunManager`, and renders; :data:`ROUTES` lists them with
their bodies and responses, which is also what ``/openapi.json`` is built from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from agent._io import io
from agent.serve._errors import HTTPError, invalid, scrub
from agent.serve._models import (
    ApprovalBody,
    RunBody,
    RunView,
    TaskList,
    TaskView,
    ThreadBody,
    ThreadView,
)
from agent.serve._openapi import Route
from agent.serve._security import read_body

__all__ = ["IDEMPOTENCY_KEY", "ROUTES", "parse", "run_view"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


async def parse(request: Request, model: type[BaseModel]) -> Any:
    """The request's JSON body as ``model``; 400 for bad JSON, 422 naming bad fields."""
    raw = await read_body(request)
    try:
        data = json.loads(raw or b"null")
    except (ValueError, RecursionError):
        raise HTTPError(400, "invalid_json", "the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc) from None


def _svc(request: Request) -> Any:
    return request.app.state.service


def _identity(request: Request) -> str:
    return request.scope["state"]["identity"]


def _path_id(request: Request, name: str) -> str:
    value = request.path_params[name]
    if not _ID.match(value):
        raise HTTPError(404, f"{name.removesuffix('_id')}_not_found", f"no {name} {value!r}")
    return value


# ---- runs ----------------------------------------------------------------------------


async def create_run(request: Request) -> Response:
    body = await parse(request, RunBody)
    svc = _svc(request)
    key = request.headers.get("idempotency-key")
    run_id, created = await svc.manager.submit(body, _identity(request), key)
    if created:  # nothing to read back yet
        view = RunView(run_id=run_id, status="pending", task=_task_name(body),
                       thread_id=body.thread_id, created_at=time.time())  # fmt: skip
    else:
        view = await run_view(svc, run_id)
    return JSONResponse(
        view.model_dump(mode="json"),
        status_code=202 if created else 200,
        # root_path: where the app is mounted (Starlette Mount, a proxy's --root-path)
        headers={"Location": f"{request.scope.get('root_path', '')}/v1/runs/{run_id}"},
    )


def _task_name(body: RunBody) -> str:
    return body.task if isinstance(body.task, str) else body.task.extends


async def wait_run(request: Request) -> Response:
    body = await parse(request, RunBody)
    svc = _svc(request)
    key = request.headers.get("idempotency-key")
    run_id, _, slot = await svc.submit_holding(body, _identity(request), key)
    await svc.final_result(run_id, slot)
    return JSONResponse((await run_view(svc, run_id)).model_dump(mode="json"))


async def get_run(request: Request) -> Response:
    svc, run_id = _svc(request), _path_id(request, "run_id")
    await svc.manager.check_access(run_id, _identity(request))
    return JSONResponse((await run_view(svc, run_id)).model_dump(mode="json"))


async def run_events(request: Request) -> Response:
    svc, run_id = _svc(request), _path_id(request, "run_id")
    await svc.manager.check_access(run_id, _identity(request))
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise HTTPError(400, "invalid_request", "Last-Event-ID: a non-negative event number")
    return StreamingResponse(
        _sse(svc.follow(run_id, int(raw), svc.stream_slot(_identity(request)))),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(batches: AsyncIterator[list[Any]]) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    async for events in batches:
        if not events:
            yield ": keep-alive\n\n"
        else:
            yield "".join(f"id: {e.seq}\nevent: {e.kind}\ndata: {e.data}\n\n" for e in events)


async def approve_run(request: Request) -> Response:
    svc, run_id = _svc(request), _path_id(request, "run_id")
    body = await parse(request, ApprovalBody)
    if (body.approve is None) == (body.decisions is None):
        raise HTTPError(422, "invalid_request", "give exactly one of approve or decisions")
    decision = body.approve if body.approve is not None else body.decisions
    await svc.manager.approve(run_id, _identity(request), decision)
    return JSONResponse({"run_id": run_id, "status": "running"}, status_code=202)


async def cancel_run(request: Request) -> Response:
    svc, run_id = _svc(request), _path_id(request, "run_id")
    status = await svc.manager.cancel(run_id, _identity(request))
    code = 200 if status == "cancelled" else 202
    return JSONResponse({"run_id": run_id, "status": status}, status_code=code)


async def run_view(svc: Any, run_id: str) -> RunView:
    """What ``GET /v1/runs/{id}`` shows: the run row, its last final event, its job."""
    job = await io(svc.jobs.get, run_id)
    record = await io(svc.runs.get, run_id)
    finals = await io(svc.events.events, run_id, -1, 1, "final")
    result = json.loads(finals[0].data)["result"] if finals else {}
    status = record.status if record is not None else ("pending" if job else "unknown")
    if job is not None and job.state == "cancelled":
        status = "cancelled"
    if status == "awaiting_approval" and job is not None and job.state != "paused":
        # The run has paused but this replica has not settled it yet: an approval sent
        # now would be refused (409), so it is not yet shown as waiting for one.
        status = "running"
    view = RunView(
        run_id=run_id,
        status=status,
        task=job.task if job else (record.task if record else ""),
        thread_id=(record.thread_id if record else None) or (job.thread_id if job else None),
        created_at=job.created_at if job else (record.started_at if record else 0.0),
        last_event_id=await io(svc.events.last_seq, run_id),
    )
    if record is not None:
        view.started_at, view.finished_at = record.started_at, record.finished_at
        view.duration_s, view.trace_id = record.duration_s, record.trace_id
        view.steps, view.tool_calls = record.steps, record.tool_calls
        view.usage = dataclasses.asdict(record.usage)
        view.error = scrub(record.error) if record.error else None
    for key in ("answer", "limit", "error_kind"):
        setattr(view, key, result.get(key))
    if status == "awaiting_approval":
        asks = await io(svc.events.events, run_id, -1, 1, "approval")
        view.pending_approval = json.loads(asks[0].data)["calls"] if asks else []
    if record is None and job is not None and job.error:
        view.error = scrub(job.error)
    return view


# ---- threads and tasks ---------------------------------------------------------------


async def create_thread(request: Request) -> Response:
    body = await parse(request, ThreadBody)
    svc = _svc(request)
    svc.catalog.get(body.task)
    thread_id = "thread_" + secrets.token_hex(8)
    created = await io(
        svc.jobs.create_thread, thread_id, _identity(request), body.task, body.metadata
    )
    view = ThreadView(
        thread_id=thread_id, task=body.task, created_at=created, metadata=body.metadata
    )
    return JSONResponse(view.model_dump(mode="json"), status_code=201)


async def get_thread(request: Request) -> Response:
    svc, thread_id = _svc(request), _path_id(request, "thread_id")
    row = await io(svc.jobs.thread, thread_id)
    if row is None or row["identity"] != _identity(request):
        raise HTTPError(404, "thread_not_found", f"no thread {thread_id!r}")
    agent = await svc.catalog.agent(row["task"])
    messages = await agent.history(thread_id)
    view = ThreadView(
        thread_id=thread_id,
        task=row["task"],
        created_at=row["created_at"],
        metadata=row["metadata"],
        runs=row["runs"],
        messages=[dataclasses.asdict(m) for m in messages],
    )
    return JSONResponse(view.model_dump(mode="json"))


async def list_tasks(request: Request) -> Response:
    tasks = [
        TaskView(
            name=name,
            description=task.description,
            tools=list(task.tools.enabled),
            vars=dict(task.vars),
            input=task.input,
        )
        for name, task in sorted(_svc(request).catalog.tasks.items())
    ]
    return JSONResponse(TaskList(tasks=tasks).model_dump(mode="json"))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    svc = _svc(request)
    if svc.manager.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        await asyncio.wait_for(io(svc.events.last_seq, "-"), 5)
    except Exception:
        return JSONResponse({"status": "store unreachable"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    text = await _svc(request).metrics_text()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


_RUN = {"in": "path", "name": "run_id", "required": True, "schema": {"type": "string"}}
_THREAD = {"in": "path", "name": "thread_id", "required": True, "schema": {"type": "string"}}
IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
}
_EVENT_NO = {"type": "string", "pattern": "^[0-9]{1,12}$"}
_LAST = {"in": "header", "name": "Last-Event-ID", "required": False, "schema": _EVENT_NO}
_AFTER = {
    "in": "query",
    "name": "after",
    "required": False,
    "description": "As Last-Event-ID, for clients that cannot set headers (the header wins).",
    "schema": _EVENT_NO,
}
_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429, 503)

ROUTES = [
    Route(
        "POST",
        "/v1/runs",
        create_run,
        "Start a run (202); the same Idempotency-Key returns the same run (200).",
        RunBody,
        {202: RunView, 200: RunView},
        [IDEMPOTENCY_KEY],
        _ERRORS,
    ),
    Route(
        "POST",
        "/v1/runs/wait",
        wait_run,
        "Start a run and answer when it ends or pauses.",
        RunBody,
        {200: RunView},
        [IDEMPOTENCY_KEY],
        _ERRORS,
    ),
    Route(
        "GET",
        "/v1/runs/{run_id}",
        get_run,
        "A run: status, answer, usage, timings.",
        None,
        {200: RunView},
        [_RUN],
        _ERRORS,
    ),
    Route(
        "GET",
        "/v1/runs/{run_id}/events",
        run_events,
        "The run's events as server-sent events, replayed after Last-Event-ID.",
        None,
        {200: "text/event-stream"},
        [_RUN, _LAST, _AFTER],
        _ERRORS,
    ),
    Route(
        "POST",
        "/v1/runs/{run_id}/approval",
        approve_run,
        "Approve or deny the calls a paused run waits on.",
        ApprovalBody,
        {202: None},
        [_RUN],
        _ERRORS,
    ),
    Route(
        "POST",
        "/v1/runs/{run_id}/cancel",
        cancel_run,
        "Cancel a run (200 cancelled, 202 cancelling on its replica).",
        None,
        {200: None, 202: None},
        [_RUN],
        _ERRORS,
    ),
    Route(
        "POST",
        "/v1/threads",
        create_thread,
        "Create a thread (a conversation) on a task.",
        ThreadBody,
        {201: ThreadView},
        [],
        _ERRORS,
    ),
    Route(
        "GET",
        "/v1/threads/{thread_id}",
        get_thread,
        "A thread: its runs and messages.",
        None,
        {200: ThreadView},
        [_THREAD],
        _ERRORS,
    ),
    Route(
        "GET",
        "/v1/tasks",
        list_tasks,
        "The tasks this server runs.",
        None,
        {200: TaskList},
        [],
        _ERRORS,
    ),
    Route("GET", "/healthz", healthz, "Liveness: the process answers.", None, {200: None}, [], ()),
    Route(
        "GET",
        "/readyz",
        readyz,
        "Readiness: not draining, the store answers.",
        None,
        {200: None, 503: None},
        [],
        (),
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics of this replica (with --workers: of all its workers).",
        None,
        {200: "text/plain"},
        [],
        (401, 403, 429),
    ),
]
