"""``/openapi.json``: built from the route table and the pydantic bodies (OpenAPI 3.1).

Each :class:`Route` names its request model and its responses (a model, a media type,
or ``None`` for a small JSON object); the document is what schemathesis fuzzes in the
tests, so it must say exactly what the server accepts and answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

__all__ = ["Route", "openapi"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Any]
    summary: str
    body: type[BaseModel] | None = None
    responses: dict[int, Any] = field(default_factory=dict)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    errors: Sequence[int] = ()


def openapi(routes: Sequence[Route], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    from agent.serve._models import ErrorBody

    models = {ErrorBody}
    for route in routes:
        if route.body is not None:
            models.add(route.body)
        for shape in route.responses.values():
            parts = shape if isinstance(shape, tuple) else (shape,)
            models.update(p for p in parts if isinstance(p, type))
    refs, schema = models_json_schema(
        [(m, "validation" if _is_request(m, routes) else "serialization") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
    return doc


def _is_request(model: type[BaseModel], routes: Sequence[Route]) -> bool:
    return any(route.body is model for route in routes)


def _operation(route: Route, refs: dict[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": route.handler.__name__,
        "responses": {},
    }
    if route.parameters:
        op["parameters"] = route.parameters
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    for code, shape in route.responses.items():
        op["responses"][str(code)] = {
            "description": _describe(code),
            "content": _content(shape, refs),
        }
    from agent.serve._models import ErrorBody

    error = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
    for code in route.errors:
        op["responses"].setdefault(str(code), {"description": _describe(code), "content": error})
    return op


def _content(shape: Any, refs: dict[Any, Any]) -> dict[str, Any]:
    if isinstance(shape, tuple):  # alternatives, e.g. JSON or a stream
        return {k: v for part in shape for k, v in _content(part, refs).items()}
    if isinstance(shape, type):
        return {"application/json": {"schema": refs[(shape, "serialization")]}}
    if isinstance(shape, str):
        return {shape: {"schema": {"type": "string"}}}
    return {"application/json": {"schema": {"type": "object"}}}


def _describe(code: int) -> str:
    return {
        200: "OK",
        201: "Created",
        202: "Accepted",
        400: "Bad request",
        401: "Missing or wrong bearer token",
        403: "Forbidden (a client cannot widen a task; loopback only without tokens)",
        404: "Not found",
        409: "Conflict with the run's state",
        413: "Body too large",
        422: "Invalid body",
        429: "Rate or concurrency limit; see Retry-After",
        503: "Draining or not ready",
    }.get(code, "Response")
