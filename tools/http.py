"""The ``http_request`` tool: one HTTP exchange under an :class:`HttpPolicy`, as text.

The URL, method and headers come from the model, so every one is untrusted. The walls, each
of which holds on its own:

- the URL: http/https only, no ``user@`` part, host on the task's allowlist (exact names,
  ``*.suffix``, or ``*`` for any public host), numeric hosts in every encoding classified;
- the connection: :class:`~tools._netguard.GuardedBackend` resolves once per connection,
  refuses if any answer is not public, and dials the checked address, for every hop;
- the method: the *effective* one. ``X-HTTP-Method-Override``, ``X-HTTP-Method`` and
  ``X-Method-Override`` are refused unless the method they name is allowed too, and a body on
  GET or HEAD is refused (many servers read ``_method=DELETE`` in it as the method);
- redirects: followed by hand (at most ``max_redirects``), each target checked like the first
  URL; 301/302 turn POST into GET and 303 turns anything but HEAD into GET, dropping the body;
  when the origin changes only a safe list of headers goes on (no ``Authorization``,
  cookies, ``X-Api-Key`` or other custom credentials), and a 307/308 body only with a method
  the policy allows;
- resources: one total deadline (``asyncio.timeout``; httpx's own timeouts are per read, so a
  server dripping a byte at a time would outlive them), a byte cap counted on *decoded* bytes
  with bounded inflation, a declared Content-Length over the cap refused up front, and h11's
  100 KiB limit on response headers;
- the environment: ``trust_env=False``, so proxy variables, ``SSL_CERT_FILE`` and ``.netrc``
  are ignored.

Trade-offs: a body longer than the cap is *truncated* with a note (the model can still use
the start of a page), while a declared Content-Length over the cap is an error before any
byte is read. Only gzip and deflate are accepted, because those are the encodings whose
inflation can be bounded with the stdlib. The transport reuses httpx's HTTP transport with
its connection pool rebuilt on the guarded backend (httpx 0.28 has no ``network_backend``
argument); a check at construction fails loudly if httpx's internals move.

>>> asyncio.run(http_request(HttpPolicy(), "https://example.com/"))  # doctest: +ELLIPSIS
Traceback (most recent call last):
agent.errors.ToolPolicyError: host 'example.com' is not in the task's allowed hosts []; add it...
"""

from __future__ import annotations

import asyncio

import httpcore
import httpx

from agent.errors import ToolArgumentError, ToolExecutionError, ToolPolicyError, ToolTimeout
from tools._netguard import (
    GuardedBackend,
    Resolver,
    check_hostname,
    classify,
    host_allowed,
    literal_ip,
)
from tools._webtext import Inflater, render_body
from tools.policy import HttpPolicy

__all__ = ["Resolver", "has_side_effects", "http_request"]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers the tool itself controls: framing, routing and encoding must match what was checked.
_RESERVED_HEADERS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
    "trailer", "upgrade", "accept-encoding", "expect",
})  # fmt: skip
# Headers that make many servers treat a request as another method (Rails, Symfony, ASP.NET).
_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# What still goes to another origin after a redirect: nothing that can carry a credential.
_CROSS_ORIGIN_SAFE = frozenset({
    "accept", "accept-language", "content-language", "content-type", "user-agent",
    "cache-control", "pragma", "range",
})  # fmt: skip
_DEFAULT_HEADERS = {
    "User-Agent": "hermes-vllm-agent-http-tool/0.1",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
}


async def http_request(
    policy: HttpPolicy,
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    *,
    resolver: Resolver | None = None,
) -> str:
    """Fetch ``url`` under ``policy``; return status, content type and the body as text.

    Raises ToolPolicyError (refused), ToolTimeout (total deadline), ToolExecutionError
    (connection, protocol or size failures), ToolArgumentError (malformed URL or headers).

    >>> text = await http_request(HttpPolicy(allowed_hosts=["api.github.com"]), "https://api.github.com/zen")  # doctest: +SKIP
    """  # noqa: E501
    return await _request(policy, url, method, headers, body, GuardedBackend(policy, resolver))


async def _request(
    policy: HttpPolicy,
    url: str,
    method: str,
    headers: dict[str, str] | None,
    body: str | None,
    guard: GuardedBackend,
) -> str:
    """:func:`http_request` with the network guard given (tests pass one with seams set)."""
    method = _check_method(policy, method)
    target = _check_url(policy, url)
    sent = _check_headers(policy, headers or {})
    if body and method in ("GET", "HEAD"):
        raise ToolPolicyError(
            f"a body on {method} is refused: many servers read it as a form that can change "
            "the method (_method=DELETE). Put parameters in the URL's query, or use a method "
            "this task allows for sending data"
        )
    content = None if body is None else body.encode("utf-8")
    try:
        async with asyncio.timeout(policy.timeout_s):
            async with _client(policy, guard) as client:
                return await _exchange(client, policy, method, target, sent, content)
    except TimeoutError:
        raise ToolTimeout(
            f"request to {target.host!r} did not finish within its total deadline of "
            f"{policy.timeout_s:g} s (tools.http.timeout_s); ask for less data or raise it"
        ) from None
    except httpx.TimeoutException as exc:
        raise ToolTimeout(f"request to {target.host!r} timed out: {_describe(exc)}") from None
    except httpx.HTTPError as exc:
        raise ToolExecutionError(f"request to {target.host!r} failed: {_describe(exc)}") from None


def _describe(exc: httpx.HTTPError) -> str:
    hint = ""
    if isinstance(exc, httpx.RemoteProtocolError):
        hint = " (malformed or oversized response; headers over 100 KiB are refused)"
    return f"{type(exc).__name__}: {exc or 'no details'}{hint}"


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's HTTP transport whose connection pool dials through the guard."""

    def __init__(self, guard: GuardedBackend) -> None:
        super().__init__(trust_env=False, retries=0)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("httpx's transport no longer has a _pool: update tools/http.py")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=guard,
            max_connections=4,
        )


def _client(policy: HttpPolicy, guard: GuardedBackend) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=_GuardedTransport(guard),
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(policy.timeout_s),
        headers=_DEFAULT_HEADERS,
    )


async def _exchange(
    client: httpx.AsyncClient,
    policy: HttpPolicy,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    content: bytes | None,
) -> str:
    """Send, following redirects by hand; every hop re-checked before it is sent."""
    hops: list[str] = []
    for hop in range(policy.max_redirects + 1):
        request = client.build_request(method, url, headers=headers, content=content)
        try:
            response = await client.send(request, stream=True)
        except ToolPolicyError as exc:
            if not hops:
                raise
            raise ToolPolicyError(f"redirect to {hops[-1]} refused: {exc}") from None
        except httpx.InvalidURL as exc:
            # httpx parses a redirect's Location inside send() even when not following it;
            # a Location such as "data:text/plain,x" fails there, before our own check.
            raise ToolPolicyError(
                f"redirect refused: the server's Location is not a usable http(s) URL ({exc})"
            ) from None
        try:
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or not location:
                data, truncated = await _read_capped(response, policy.max_response_bytes)
                return _render(response, data, truncated, hops, policy)
            if hop == policy.max_redirects:
                raise ToolPolicyError(
                    f"more than {policy.max_redirects} redirects (tools.http.max_redirects); "
                    f"the last one pointed to {location!r}"
                )
            next_url = _redirect_target(policy, url, location)
        finally:
            await response.aclose()
        method, content, headers = _redirected(response.status_code, method, content, headers)
        _check_method(policy, method)
        if _origin(next_url) != _origin(url):
            headers = {k: v for k, v in headers.items() if k.lower() in _CROSS_ORIGIN_SAFE}
        hops.append(str(next_url))
        url = next_url
    raise AssertionError("unreachable: the loop returns or raises")


def _redirect_target(policy: HttpPolicy, current: httpx.URL, location: str) -> httpx.URL:
    try:
        target = current.join(location)
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise ToolExecutionError(f"redirect to an invalid URL {location!r}: {exc}") from None
    try:
        return _check_url(policy, target)
    except (ToolPolicyError, ToolArgumentError) as exc:
        raise ToolPolicyError(f"redirect from {current} to {location!r} refused: {exc}") from None


def _redirected(
    status: int, method: str, content: bytes | None, headers: dict[str, str]
) -> tuple[str, bytes | None, dict[str, str]]:
    """Method and body for the next hop (RFC 9110 §15.4, as browsers do it)."""
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        kept = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        return "GET", None, kept
    return method, content, headers


def _origin(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return url.scheme, url.raw_host, url.port


def _check_method(policy: HttpPolicy, method: str) -> str:
    normalized = method.strip().upper()
    allowed = [m.upper() for m in policy.allowed_methods]
    if normalized not in allowed:
        raise ToolPolicyError(
            f"method {normalized!r} is not allowed for this task (allowed: {allowed}); "
            "add it to tools.http.allowed_methods"
        )
    return normalized


def _check_url(policy: HttpPolicy, url: str | httpx.URL) -> httpx.URL:
    """Parse ``url`` and refuse what the policy forbids; the parsed URL is what gets sent."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise ToolArgumentError(f"invalid URL {str(url)!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ToolPolicyError(
            f"scheme {parsed.scheme or '(none)'!r} is not allowed; only http:// and https:// "
            "URLs can be fetched"
        )
    if parsed.userinfo:
        raise ToolPolicyError(
            f"the URL has a 'user@' part before the host {host!r}; credentials in URLs are "
            "refused (they also disguise the real host). Remove it; send an Authorization "
            "header if the task needs one"
        )
    if not host:
        raise ToolArgumentError(f"URL {str(url)!r} has no host")
    check_hostname(host)
    if not 0 < (parsed.port or 1) < 65536:
        raise ToolArgumentError(f"port {parsed.port} is out of range")
    _check_literal_ip(policy, host)
    if not host_allowed(host, policy.allowed_hosts):
        raise ToolPolicyError(
            f"host {host!r} is not in the task's allowed hosts {policy.allowed_hosts}; "
            "add it to tools.http.allowed_hosts"
        )
    return parsed


def _check_literal_ip(policy: HttpPolicy, host: str) -> None:
    """Refuse a numeric host naming a non-public address before any connection is tried."""
    ip = literal_ip(host)
    if ip is None or policy.allow_private_network:
        return
    why = classify(ip)
    if why is not None:
        raise ToolPolicyError(
            f"host {host!r} is the IP address {ip}, a {why} address; requests to non-public "
            "addresses are refused (set tools.http.allow_private_network only for trusted tasks)"
        )


def _check_headers(policy: HttpPolicy, headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ToolArgumentError("headers must map strings to strings")
        if any(c in name + value for c in "\r\n\0"):
            raise ToolArgumentError(f"header {name!r} contains a line break or NUL")
        low = name.strip().lower()
        if low in _RESERVED_HEADERS or low.startswith("proxy-"):
            raise ToolPolicyError(
                f"header {name!r} cannot be set: the tool controls it; remove it from headers"
            )
        if low in _METHOD_OVERRIDES:
            try:
                _check_method(policy, value)
            except ToolPolicyError as exc:
                raise ToolPolicyError(
                    f"header {name!r} asks the server to treat the request as "
                    f"{value.strip().upper()!r}: {exc}"
                ) from None
    return dict(headers)


def has_side_effects(arguments: dict[str, object]) -> bool:
    """Whether an ``http_request`` call may change state: its effective method is not GET.

    A method other than GET, a body, or a method-override header naming another method.

    >>> has_side_effects({"url": "https://a.test/", "headers": {"X-HTTP-Method": "DELETE"}})
    True
    """
    methods = [arguments.get("method") or "GET"]
    headers = arguments.get("headers") or {}
    if isinstance(headers, dict):
        methods += [v for k, v in headers.items() if str(k).strip().lower() in _METHOD_OVERRIDES]
    return bool(arguments.get("body")) or any(str(m).strip().upper() != "GET" for m in methods)


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` decoded bytes of the body, and whether more were there."""
    declared = response.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > cap:
        raise ToolExecutionError(
            f"the response declares Content-Length {declared} bytes, more than "
            f"tools.http.max_response_bytes={cap}; ask for a smaller resource "
            "(a narrower query, or a Range header)"
        )
    inflater = Inflater(response.headers.get("content-encoding"))
    out = bytearray()
    raw = 0
    async for chunk in response.aiter_raw():
        raw += len(chunk)
        out += inflater.decode(chunk, cap + 1 - len(out))
        if len(out) > cap:
            return bytes(out[:cap]), True
        if raw > 2 * cap + 65536:
            # Compressed input that inflates to almost nothing still costs reading: stop.
            return bytes(out), True
    return bytes(out), False


def _render(
    response: httpx.Response, data: bytes, truncated: bool, hops: list[str], policy: HttpPolicy
) -> str:
    content_type = response.headers.get("content-type", "")
    head = [f"HTTP {response.status_code} {response.reason_phrase}".rstrip()]
    head.append(f"Content-Type: {content_type or '(none)'}")
    if hops:
        head.append(f"Redirected {len(hops)} time(s); final URL: {hops[-1]}")
    text = render_body(content_type, data, str(response.url))
    if truncated:
        text += (
            f"\n\n[truncated: the body is longer than {policy.max_response_bytes} bytes "
            "(tools.http.max_response_bytes); only its start is shown. Ask for a smaller "
            "resource or a narrower query.]"
        )
    return "\n".join(head) + "\n\n" + text
