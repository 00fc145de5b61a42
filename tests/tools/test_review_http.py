"""Security review: URL and redirect forms the checklist does not name, against the real path.

Same rules as ``test_http_attacks``: names resolve through ``FakeDNS`` only (never real DNS),
the dialer reaches loopback only, and 127.0.0.1/32 is the one "public" address.
"""

from __future__ import annotations

import pytest

from agent.errors import ToolArgumentError, ToolPolicyError
from tests.tools.test_http import LoopbackServer, Seen, fixed, respond
from tests.tools.test_http_attacks import ANY, FakeDNS, fetch
from tools.policy import HttpPolicy


@pytest.mark.parametrize(
    "url",
    [
        "http://[fe80::1%25eth0]/",
        "http://[fe80::1%eth0]/",
        "http://[::1%25lo]/",
        "http://[0:0:0:0:0:0:0:1]/",
        "HTTP://[::1]/",
        "hTtP://127.0.0.2/",
        "http://127。0。0。2/",  # ideographic full stops, folded by IDNA to dots
        "http://127.0.0.2%2e/",
        "http://0x7f.2/",
        "http://2130706434./",
        "http://0.0.0.0./",
    ],
)
async def test_more_internal_literal_forms_are_refused(url: str) -> None:
    result, dialed = await fetch(ANY, url, FakeDNS({}))
    assert isinstance(result, ToolPolicyError | ToolArgumentError), result
    assert dialed == []


@pytest.mark.parametrize("host", ["localhost.", "LOCALHOST.", "localhost。"])
async def test_trailing_dot_names_are_resolved_and_refused(host: str) -> None:
    dns = FakeDNS({"localhost.": ["127.0.0.2", "::1"]})
    result, dialed = await fetch(ANY, f"http://{host}/", dns)
    assert isinstance(result, ToolPolicyError) and "resolves to" in str(result)
    assert dns.lookups == ["localhost."] and dialed == []


@pytest.mark.parametrize(
    "url",
    [
        "http:\\\\127.0.0.1\\",
        "http://127.0.0.1:80@evil.test/",
        "http://api.test\\@127.0.0.2/",
        "http://api.test%2f@127.0.0.2/",
        "http://api.test%00.evil.test/",
        "http://１２７.０.０.１/",
        "http://\t127.0.0.1/",
        "http://api.test/\r\nHost: evil.test",
    ],
)
async def test_malformed_and_disguised_urls_are_refused(url: str) -> None:
    result, dialed = await fetch(HttpPolicy(allowed_hosts=["api.test"]), url, FakeDNS({}))
    assert isinstance(result, ToolPolicyError | ToolArgumentError), result
    assert dialed == []


@pytest.mark.parametrize(
    "location",
    ["data:text/plain,hi", "javascript:alert(1)", "//127.0.0.2/", "http://[::1]/", "file:/etc/x"],
)
async def test_redirects_to_other_schemes_and_scheme_relative_internal_are_refused(
    location: str,
) -> None:
    dns = FakeDNS({"public.test": ["127.0.0.1"]})
    async with LoopbackServer({"/": fixed(302, location=location)}) as server:
        result, dialed = await fetch(ANY, server.url("/", "public.test"), dns)
    assert isinstance(result, ToolPolicyError) and "redirect" in str(result), result
    assert dialed == [("127.0.0.1", server.port)]


@pytest.mark.parametrize("value", ["v\r\nHost: evil.test", "v\nX: y", "v\x00"])
async def test_header_values_with_line_breaks_are_refused(value: str) -> None:
    from tools.http import _request

    from .test_http_attacks import guarded

    guard, dialer = guarded(ANY, FakeDNS({}))
    with pytest.raises(ToolArgumentError, match="line break or NUL"):
        await _request(ANY, "http://public.test/", "GET", {"X-A": value}, None, guard)
    assert dialer.dialed == []


async def test_cookies_set_by_one_host_are_not_sent_to_another() -> None:
    dns = FakeDNS({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    async with LoopbackServer({}) as server:

        async def first(seen: Seen, writer) -> None:  # type: ignore[no-untyped-def]
            headers = {"Set-Cookie": "sid=from-a; Path=/", "Location": server.url("/b", "b.test")}
            await respond(writer, 302, b"", headers)

        server.routes.update({"/a": first, "/b": fixed(200, b"ok")})
        result, _ = await fetch(ANY, server.url("/a", "a.test"), dns)
    assert isinstance(result, str) and result.startswith("HTTP 200"), result
    assert [s.path for s in server.seen] == ["/a", "/b"]
    assert "cookie" not in server.seen[1].headers


# --- second review: method overrides (finding 3) and cross-origin redirects (finding 7) ---

OVERRIDES = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"]


async def _send(
    policy: HttpPolicy,
    url: str,
    dns: FakeDNS,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> object:
    """The real request path with headers and a body; the result text or the exception."""
    from tools.http import _request

    from .test_http_attacks import guarded

    guard, _ = guarded(policy, dns)
    try:
        return await _request(policy, url, method, headers, body, guard)
    except Exception as exc:
        return exc


@pytest.mark.parametrize("name", [*OVERRIDES, "x-http-method-override", " X-Method-Override"])
async def test_method_override_headers_are_refused_on_a_get_only_policy(name: str) -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    async with LoopbackServer({"/": fixed(200, b"deleted")}) as server:
        result = await _send(ANY, server.url("/", "api.test"), dns, headers={name: "DELETE"})
    assert isinstance(result, ToolPolicyError) and "DELETE" in str(result), result
    assert server.seen == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_body_on_get_or_head_is_refused(method: str) -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = ANY.model_copy(update={"allowed_methods": ["GET", "HEAD"]})
    async with LoopbackServer({"/": fixed(200, b"deleted")}) as server:
        url = server.url("/", "api.test")
        result = await _send(policy, url, dns, method, body="_method=DELETE")
    assert isinstance(result, ToolPolicyError) and "body" in str(result), result
    assert server.seen == []


async def test_an_override_to_an_allowed_method_is_sent() -> None:
    dns = FakeDNS({"api.test": ["127.0.0.1"]})
    policy = ANY.model_copy(update={"allowed_methods": ["GET", "DELETE"]})
    async with LoopbackServer({"/": fixed(200, b"ok")}) as server:
        url = server.url("/", "api.test")
        result = await _send(policy, url, dns, headers={"X-HTTP-Method-Override": "delete"})
        same = await _send(ANY, url, dns, headers={"X-HTTP-Method": "GET"})
    assert isinstance(result, str) and result.startswith("HTTP 200"), result
    assert isinstance(same, str) and same.startswith("HTTP 200"), same
    assert server.seen[0].headers["x-http-method-override"] == "delete"


@pytest.mark.parametrize(
    ("arguments", "effects"),
    [
        ({"url": "https://a.test/"}, False),
        ({"url": "https://a.test/", "headers": {"Accept": "text/html"}}, False),
        ({"url": "https://a.test/", "headers": {"X-HTTP-Method-Override": "DELETE"}}, True),
        ({"url": "https://a.test/", "headers": {"x-method-override": "PUT"}}, True),
        ({"url": "https://a.test/", "headers": {"X-HTTP-Method": "GET"}}, False),
        ({"url": "https://a.test/", "body": "_method=DELETE"}, True),
        ({"url": "https://a.test/", "method": "POST"}, True),
    ],
)
def test_overrides_and_bodies_count_as_side_effects(
    arguments: dict[str, object], effects: bool
) -> None:
    from tools.builtins import http_request as tool

    assert tool.has_side_effects(arguments) is effects


CREDENTIALS = {
    "Authorization": "Bearer t0ken",
    "X-Api-Key": "k3y",
    "Api-Key": "k3y",
    "X-Auth-Token": "t0ken",
    "Cookie": "sid=1",
    "X-Custom": "anything",
}
SAFE = {"Accept": "application/json", "Accept-Language": "en", "User-Agent": "mine"}


async def test_a_cross_origin_redirect_forwards_only_safe_headers() -> None:
    dns = FakeDNS({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    async with LoopbackServer({}) as server:
        server.routes.update(
            {"/a": fixed(302, location=server.url("/b", "b.test")), "/b": fixed(200, b"ok")}
        )
        result = await _send(ANY, server.url("/a", "a.test"), dns, headers=CREDENTIALS | SAFE)
    assert isinstance(result, str) and result.startswith("HTTP 200"), result
    first, second = server.seen
    assert first.headers["x-api-key"] == "k3y"
    assert not {k.lower() for k in CREDENTIALS} & set(second.headers), second.headers
    assert second.headers["accept"] == "application/json" and second.headers["user-agent"] == "mine"


@pytest.mark.parametrize("status", [307, 308])
async def test_a_cross_origin_307_keeps_the_allowed_body_but_not_the_credentials(
    status: int,
) -> None:
    dns = FakeDNS({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    policy = ANY.model_copy(update={"allowed_methods": ["GET", "POST"]})
    headers = {"X-Api-Key": "k3y", "Content-Type": "application/json"}
    async with LoopbackServer({}) as server:
        server.routes.update(
            {"/a": fixed(status, location=server.url("/b", "b.test")), "/b": fixed(200, b"ok")}
        )
        url = server.url("/a", "a.test")
        result = await _send(policy, url, dns, "POST", headers, '{"x": 1}')
    assert isinstance(result, str) and result.startswith("HTTP 200"), result
    second = server.seen[1]
    assert (second.method, second.body) == ("POST", b'{"x": 1}')
    assert "x-api-key" not in second.headers
    assert second.headers["content-type"] == "application/json"


async def test_a_same_origin_redirect_keeps_every_header() -> None:
    dns = FakeDNS({"a.test": ["127.0.0.1"]})
    async with LoopbackServer({"/a": fixed(302, location="/b"), "/b": fixed(200)}) as server:
        result = await _send(ANY, server.url("/a", "a.test"), dns, headers={"X-Api-Key": "k3y"})
    assert isinstance(result, str), result
    assert server.seen[1].headers["x-api-key"] == "k3y"
