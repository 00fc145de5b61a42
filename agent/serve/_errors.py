"""Errors over HTTP: one JSON shape, ``{"error": {"type", "message"}}``, and no leaks.

Every message that leaves the server goes through :func:`scrub`: absolute file paths
become ``<path>`` (a task's folder, the store, the interpreter's site-packages must not
be learnt from an error), and URL passwords ``***``. Unexpected exceptions are logged
and answered with a 500 that says only that.

>>> scrub("cannot read /srv/tasks/a.yaml: denied")
'cannot read <path>: denied'
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse

__all__ = ["HTTPError", "error_response", "invalid", "scrub"]

_PATH = re.compile(r"(?<![\w:/.])(?:~|\.{1,2})?/(?:[\w.@+-]+/)*[\w.@+-]*")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


class HTTPError(Exception):
    """An error with its status, a stable ``type`` and a message for people."""

    def __init__(
        self, status: int, type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type, message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.type, self.message, self.headers)


def scrub(text: Any) -> str:
    """``text`` without absolute file paths or URL passwords."""
    text = _URL_PASSWORD.sub(r"\1***@", str(text))
    return _PATH.sub(lambda m: m[0] if m[0] == "/" or m[0].startswith("/v1/") else "<path>", text)


def invalid(exc: Any) -> HTTPError:
    """The 422 of a pydantic ``ValidationError``: each field's path and what is wrong."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
    )
    return HTTPError(422, "invalid_request", problems[:2000])


def error_response(
    status: int, type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": type, "message": scrub(message)}}, status_code=status, headers=headers
    )
