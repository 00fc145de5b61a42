"""The gate every request passes: authentication, rate limits, body size.

- **Bearer tokens.** With tokens configured, every route but ``/healthz`` and
  ``/readyz`` needs ``Authorization: Bearer TOKEN``; the token is compared with each
  configured one in constant time (``hmac.compare_digest`` over SHA-256 digests, so the
  comparison does not leak the length either). A token's identity (a digest prefix)
  scopes its runs, threads, idempotency keys, rate and concurrency limits. Without
  tokens the server must be bound to loopback (``agent serve`` refuses otherwise) and
  every request must come from a loopback address (checked here too, for apps that
  mount :func:`agent.serve.create_app` elsewhere).
- **Rate limit.** A token bucket per identity (``rate`` requests per second, ``burst``
  at once): past it, 429 with ``Retry-After``.
- **Body size.** ``Content-Length`` above ``max_body_bytes`` is a 413 before anything
  is read; a chunked body is counted as it arrives and cut off at the same size.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from dataclasses import dataclass, field
from typing import Any

from agent.serve._errors import error_response

__all__ = ["Guard", "SecurityConfig", "is_loopback", "read_body"]

_OPEN_PATHS = ("/healthz", "/readyz")


def is_loopback(host: str | None) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``; anything else (``0.0.0.0``) is not."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class SecurityConfig:
    """Tokens (none: loopback only), per-token request rate and open event streams, and
    the body size cap."""

    tokens: list[str] = field(default_factory=list)
    rate: float = 50.0
    burst: int = 100
    max_body_bytes: int = 1_000_000
    max_streams: int = 1000

    def identity(self, authorization: str | None) -> str | None:
        """The identity of a bearer header's token; None when it matches no token."""
        if not self.tokens:
            return "local"
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        digest = hashlib.sha256(given.strip().encode()).digest()
        found = None
        for token in self.tokens:  # no early exit: every token is compared every time
            expected = hashlib.sha256(token.encode()).digest()
            if hmac.compare_digest(digest, expected):
                found = "token:" + hashlib.sha256(expected).hexdigest()[:16]
        return found


def _route_path(scope: dict) -> str:
    """The path below the app's mount point: ``/healthz`` for ``/agent/healthz`` when the
    app is mounted at ``/agent`` (Starlette's ``Mount`` keeps the full ``path`` and sets
    ``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> float:
        """0 when a request may go now, else the seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Guard:
    """ASGI middleware applying :class:`SecurityConfig`; sets ``scope["state"]["identity"]``."""

    def __init__(self, app: Any, config: SecurityConfig, metrics: Any = None) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self._buckets: dict[str, _Bucket] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refuse(scope)
        if refusal is not None:
            await self._count(refusal.status_code)
            await refusal(scope, receive, send)
            return
        await self._call_capped(scope, receive, send)

    def _refuse(self, scope: dict) -> Any:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if _route_path(scope) in _OPEN_PATHS:
            scope.setdefault("state", {})["identity"] = "probe"
            return None
        client = (scope.get("client") or ("", 0))[0]
        if not self.config.tokens and not is_loopback(client):
            return error_response(403, "forbidden", "this server accepts loopback clients only")
        identity = self.config.identity(headers.get("authorization"))
        if identity is None:
            return error_response(
                401, "unauthorized", "a valid bearer token is required",
                {"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        scope.setdefault("state", {})["identity"] = identity
        bucket = self._buckets.setdefault(identity, _Bucket(self.config.rate, self.config.burst))
        wait = bucket.take()
        if wait:
            return error_response(
                429, "rate_limited", "too many requests for this token",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )  # fmt: skip
        length = headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            return error_response(
                400, "invalid_request", "Content-Length: a number of bytes, in ASCII digits"
            )
        if length is not None and int(length) > self.config.max_body_bytes:
            return error_response(
                413, "body_too_large", f"request body over {self.config.max_body_bytes} bytes"
            )
        return None

    async def _call_capped(self, scope: dict, receive: Any, send: Any) -> None:
        """Run the app, counting response codes (the body cap while reading is
        :func:`read_body`'s: a request without Content-Length is counted as it comes)."""

        async def watched_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                await self._count(message["status"])
            await send(message)

        scope.setdefault("state", {})["max_body_bytes"] = self.config.max_body_bytes
        await self.app(scope, receive, watched_send)

    async def _count(self, status: int) -> None:
        if self.metrics is not None:
            self.metrics.http.inc((str(status),))


async def read_body(request: Any) -> bytes:
    """The request's body, refused (413) past the cap as soon as it is exceeded."""
    from agent.serve._errors import HTTPError

    cap = request.scope.get("state", {}).get("max_body_bytes", 1_000_000)
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            raise HTTPError(413, "body_too_large", f"request body over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
