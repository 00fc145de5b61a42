"""Each security rule of ``agent serve``: tokens, loopback, limits, names, narrowing, leaks."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.serve import SecurityConfig, create_app
from agent.serve._catalog import _tool_choice
from agent.serve._errors import HTTPError, scrub
from agent.serve._security import Guard
from agent.sim import FunctionPolicy, ScriptPolicy
from agent.task import Task
from tests.agent.serve.conftest import call, config, http_task, served, sse, write_task


@pytest.fixture
def greet(sim, tmp_path: Path) -> Path:
    sim.policy = FunctionPolicy(lambda r: "Hello.")
    return write_task(tmp_path, "greet", limits={"max_steps": 3})


def test_token_required_and_compared_in_constant_time(
    sim, tmp_path: Path, greet: Path, monkeypatch
) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest
    monkeypatch.setattr(
        "agent.serve._security.hmac.compare_digest",
        lambda a, b: compared.append(b) or real(a, b),
    )
    security = SecurityConfig(tokens=["first-token", "second-token"])
    with served(config(tmp_path, sim.url, greet, security=security)) as s:
        with httpx.Client(base_url=s.url) as anon:
            assert anon.get("/healthz").status_code == 200  # probes stay open
            no = anon.get("/v1/tasks")
            assert no.status_code == 401 and no.headers["www-authenticate"] == "Bearer"
            bad = anon.get("/v1/tasks", headers={"Authorization": "Bearer first-tokeN"})
            assert bad.status_code == 401
            assert anon.get("/metrics").status_code == 401
        compared.clear()
        with s.client("first-token") as c:
            assert c.get("/v1/tasks").status_code == 200
        assert len(compared) == 2  # every token compared, even after the first matched


def test_no_token_means_loopback_only(sim, tmp_path: Path, greet: Path) -> None:
    app = create_app(config(tmp_path, sim.url, greet))
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))

    async def remote() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
            return await c.get("/v1/tasks")

    import asyncio

    assert asyncio.run(remote()).status_code == 403
    result = CliRunner().invoke(main, ["serve", str(greet), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token" in result.output


def test_body_cap_rate_limit_and_concurrency(sim, tmp_path: Path, greet: Path, local_api) -> None:
    security = SecurityConfig(rate=5, burst=5, max_body_bytes=2000)
    with served(config(tmp_path, sim.url, greet, security=security)) as s, s.client() as c:
        big = c.post("/v1/runs", json={"task": "greet", "input": "x" * 5000})
        assert big.status_code == 413 and big.json()["error"]["type"] == "body_too_large"

        def chunks():
            yield b'{"task": "greet", "input": "'
            for _ in range(10):
                yield b"y" * 500
            yield b'"}'

        chunked = c.post("/v1/runs", content=chunks())  # no Content-Length
        assert chunked.status_code == 413
        codes = [c.get("/v1/tasks").status_code for _ in range(10)]
        assert 429 in codes
        limited = next(r for r in (c.get("/v1/tasks") for _ in range(5)) if r.status_code == 429)
        assert int(limited.headers["retry-after"]) >= 1
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/x"), "ok"])
    task = http_task(tmp_path, "slow", local_api)
    with served(config(tmp_path, sim.url, task, max_active_per_token=1)) as s, s.client() as c:
        assert c.post("/v1/runs", json={"task": "slow"}).status_code == 202
        second = c.post("/v1/runs", json={"task": "slow"})
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        local_api.release("/hold/x")


def test_a_burst_of_runs_keeps_to_the_per_token_limit(sim, tmp_path: Path, local_api) -> None:
    paths = itertools.count()

    def policy(request) -> str:  # each run fetches a path of its own, held until released
        if "<tool_response>" in request.prompt:
            return "done"
        return call("http_request", url=f"{local_api.url}/hold/{next(paths)}")

    sim.policy = FunctionPolicy(policy)
    task = http_task(tmp_path, "slow", local_api)

    async def burst(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            sent = [c.post("/v1/runs", json={"task": "slow"}) for _ in range(8)]
            return sorted(r.status_code for r in await asyncio.gather(*sent))

    with served(config(tmp_path, sim.url, task, max_active_per_token=2)) as s:
        # All 8 are in flight at once: each must see the runs the others are starting.
        assert asyncio.run(burst(s.url)) == [202, 202, *[429] * 6]
        for n in range(2):
            local_api.release(f"/hold/{n}")


@pytest.mark.parametrize(
    "name",
    ["../greet", "..", "/etc/passwd", "greet/../../x", "%2e%2e%2fgreet", "greet\x00", ""],
)
def test_task_names_resolve_only_among_served_tasks(
    sim, tmp_path: Path, greet: Path, name: str
) -> None:
    (tmp_path / "secret.yaml").write_text("name: secret\ninput: hi\n")
    with served(config(tmp_path, sim.url, greet)) as s, s.client() as c:
        for body in ({"task": name}, {"task": {"extends": name}}):
            response = c.post("/v1/runs", json=body)
            assert response.status_code in (404, 422), response.text
            assert str(tmp_path) not in response.text
        model = c.post("/v1/chat/completions", json={"model": name, "messages": [
            {"role": "user", "content": "x"}]})  # fmt: skip
        assert model.status_code in (404, 422)
        assert c.post("/v1/runs", json={"task": "secret"}).status_code == 404
        assert c.get("/v1/runs/..%2F..%2Fetc%2Fpasswd").status_code == 404


@pytest.mark.parametrize(
    ("options", "status"),
    [
        ({"limits": {"max_steps": 99}}, 403),
        ({"tools": ["write_file"]}, 403),
        ({"policies": {"allowed_hosts": ["evil.example.com"]}}, 403),
        ({"policies": {"allowed_methods": ["POST"]}}, 403),
        ({"policies": {"allow_write": True}}, 422),
        ({"policies": {"workspace": "/"}}, 422),
        ({"sampling": {"max_tokens": 10**6}}, 403),
        ({"limits": {"max_steps": 2}, "tools": []}, 202),
        ({"tool_choice": "none", "sampling": {"stop": ["END"]}}, 202),
        ({"tool_choice": "required"}, 422),  # greet has no tools to call
        ({"tool_choice": "write_file"}, 403),
    ],
)
def test_a_client_can_narrow_but_never_widen(
    sim, tmp_path: Path, greet: Path, options: dict, status: int
) -> None:
    with served(config(tmp_path, sim.url, greet)) as s, s.client() as c:
        response = c.post("/v1/runs", json={"task": "greet", "options": options})
        assert response.status_code == status, response.text
        if status == 403:
            assert response.json()["error"]["type"] == "policy_widening"


def test_tool_choice_only_narrows_the_tasks() -> None:
    tools = ["http_request", "read_file"]
    auto = Task(name="t", input="x", tools={"enabled": tools})
    forced = Task(name="t", input="x", tools={"enabled": tools}, model={"tool_choice": "none"})
    assert _tool_choice(auto, "read_file", tools) == "read_file"
    assert _tool_choice(auto, "required", tools) == "required"
    assert _tool_choice(forced, "none", tools) == "none"
    assert _tool_choice(forced, "auto", tools) == "none"  # auto: the task's own choice
    with pytest.raises(HTTPError, match="a run may only choose none") as widened:
        _tool_choice(forced, "required", tools)
    assert widened.value.status == 403
    with pytest.raises(HTTPError, match="not one of this run's tools"):
        _tool_choice(auto, "read_file", ["http_request"])  # narrowed away by options.tools
    named = Task(name="t", input="x", tools={"enabled": tools}, model={"tool_choice": "read_file"})
    with pytest.raises(HTTPError, match="leaves out 'read_file'") as unrunnable:
        _tool_choice(named, "auto", ["http_request"])  # the task's own call, narrowed away
    assert unrunnable.value.status == 422


def test_a_malformed_content_length_is_a_400() -> None:
    async def app(scope, receive, send) -> None:  # the service behind the guard
        raise AssertionError("the guard let it through")

    async def status(length: bytes) -> int:
        sent: list[dict] = []
        scope = {"type": "http", "path": "/v1/runs", "client": ("127.0.0.1", 1),
                 "headers": [(b"content-length", length)]}  # fmt: skip
        await Guard(app, SecurityConfig())(scope, None, _collect(sent))
        return sent[0]["status"]

    assert asyncio.run(status(b"\xb2")) == 400  # a digit to str.isdigit(), not to int()
    assert asyncio.run(status(b"12a")) == 400
    assert asyncio.run(status(b"99999999")) == 413


def _collect(sent: list[dict]):
    async def send(message: dict) -> None:
        sent.append(message)

    return send


def test_streamed_chats_at_once_keep_to_the_stream_cap(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/c"), "ok"])
    task = http_task(tmp_path, "slow", local_api)
    chat = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "?"}]}

    async def burst(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:

            async def one() -> int:
                async with c.stream("POST", "/v1/chat/completions", json=chat) as response:
                    return response.status_code

            return sorted(await asyncio.gather(*(one() for _ in range(6))))

    security = SecurityConfig(max_streams=1)
    with served(config(tmp_path, sim.url, task, security=security)) as s:
        assert asyncio.run(burst(s.url)) == [200, *[429] * 5]
        assert _jobs(tmp_path) == 1  # the refused ones started no run
        local_api.release("/hold/c")


def _jobs(folder: Path) -> int:
    """How many runs the server in ``folder`` has accepted (its job rows)."""
    with contextlib.closing(sqlite3.connect(folder / "store" / "serve.db")) as db:
        return db.execute("SELECT COUNT(*) FROM serve_jobs").fetchone()[0]


def test_a_model_urls_password_never_leaves_the_server(sim, tmp_path: Path, greet: Path) -> None:
    with_password = sim.url.replace("http://", "http://agent:hunter2@")
    dead = socket.socket()  # a port nobody listens on: the run fails, naming the URL
    dead.bind(("127.0.0.1", 0))
    down = f"http://agent:hunter2@127.0.0.1:{dead.getsockname()[1]}"
    for url, status in ((with_password, "done"), (down, "error")):
        with served(config(tmp_path, url, greet)) as s, s.client() as c:
            run_id = c.post("/v1/runs", json={"task": "greet"}).json()["run_id"]
            events = sse(c, run_id)
            assert events[-1][2]["result"]["status"] == status
            shown = json.dumps(events) + c.get(f"/v1/runs/{run_id}").text
            assert "hunter2" not in shown and "agent:***@" in shown
    dead.close()


def test_errors_show_no_host_paths_and_cors_is_off_unless_configured(
    sim, tmp_path: Path, greet: Path
) -> None:
    assert scrub("ConfigError: /home/me/tasks/a.yaml:3: bad") == "ConfigError: <path>:3: bad"
    assert scrub("postgresql://u:hunter2@db/x") == "postgresql://u:***@db/x"
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with served(config(tmp_path, sim.url, greet)) as s, s.client() as c:
        answer = c.options("/v1/runs", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        broken = c.post("/v1/runs", content=b"{not json")
        assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_json"
        typo = c.post("/v1/runs", json={"task": "greet", "inptu": "x"})
        assert typo.status_code == 422 and "inptu" in typo.json()["error"]["message"]
    cors = config(tmp_path, sim.url, greet, cors_origins=["https://app.example"])
    with served(cors) as s, s.client() as c:
        answer = c.options("/v1/runs", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"


def test_event_streams_per_token_are_capped(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/s"), "ok"])
    task = http_task(tmp_path, "slow", local_api)
    security = SecurityConfig(tokens=["a", "b"], max_streams=2)
    with served(config(tmp_path, sim.url, task, security=security)) as s:
        a, b = s.client("a"), s.client("b")
        run_id = a.post("/v1/runs", json={"task": "slow"}).json()["run_id"]
        events = f"/v1/runs/{run_id}/events"
        with a.stream("GET", events) as first, a.stream("GET", events) as second:
            assert (first.status_code, second.status_code) == (200, 200)
            third = a.get(events)
            assert third.status_code == 429 and third.headers["retry-after"] == "1"
            assert third.json()["error"]["type"] == "too_many_streams"
            jobs = _jobs(tmp_path)
            chat = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "?"}]}
            assert a.post("/v1/chat/completions", json=chat).status_code == 429
            assert a.post("/v1/runs/wait", json={"task": "slow"}).status_code == 429  # waits too
            assert _jobs(tmp_path) == jobs  # refused before a run starts: none was started
            assert "agent_sse_listeners 2" in a.get("/metrics").text
            other = b.post("/v1/runs", json={"task": "slow"}).json()["run_id"]
            with b.stream("GET", f"/v1/runs/{other}/events") as theirs:
                assert theirs.status_code == 200  # another token's streams are its own
        # A stream closed by its client frees its place (once the server sees it go).
        deadline = time.monotonic() + 10
        while True:
            with a.stream("GET", events) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed streams were never released"
            time.sleep(0.05)
        local_api.release("/hold/s")
        a.close()
        b.close()
