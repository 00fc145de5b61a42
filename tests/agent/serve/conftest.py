"""Fixtures for the HTTP service: a real server on loopback, task files, a local API.

``served(config)`` runs :func:`agent.serve.create_app` under uvicorn in a thread (its own
event loop), on a free loopback port, and stops it (lifespan shutdown included) after.
``LocalAPI`` is a threaded HTTP server the tasks' ``http_request`` tool calls: it counts
hits per path, and ``/hold/NAME`` blocks its first caller until released — a tool call
that is provably in flight.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from agent.serve import SecurityConfig, ServeConfig, create_app
from tests.conftest import postgres_url


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def write_task(folder: Path, name: str, **fields: Any) -> Path:
    """A task file ``folder/NAME.yaml``; its workspace is ``folder/ws`` unless given."""
    (folder / "ws").mkdir(exist_ok=True)
    body = {"name": name, "input": "hello", "workspace": "ws", **fields}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@dataclass
class Served:
    url: str
    service: Any
    server: Any
    thread: threading.Thread
    tokens: list[str] = field(default_factory=list)

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        token = token if token is not None else (self.tokens[0] if self.tokens else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_uvicorn(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    """``app`` under uvicorn in a thread (its own event loop, lifespan on) on a free
    loopback port, once it listens: its URL, the server and the thread. Stop it with
    ``server.should_exit = True`` and ``thread.join()``."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


@contextmanager
def served(config: ServeConfig) -> Iterator[Served]:
    app = create_app(config)
    url, server, thread = start_uvicorn(app)
    s = Served(url, app.state.service, server, thread)
    s.tokens = list(config.security.tokens)
    try:
        yield s
    finally:
        s.stop()


def sse(client: httpx.Client, run_id: str, after: int | None = None, limit: int = 10_000):
    """The events of a run until its stream ends: [(id, event, data), ...]."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    out = []
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if "data" in fields:
                    out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                    if len(out) >= limit:
                        break
                fields = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    return out


def wait_status(client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/v1/runs/{run_id}").json()
        if view["status"] in statuses:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} stayed {view['status']}: {view}")
        time.sleep(0.05)


class LocalAPI:
    """Counts GETs per path; ``/hold/NAME`` holds its first caller until :meth:`release`."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.held: dict[str, threading.Event] = {}
        self.arrived: dict[str, threading.Event] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.hits[self.path] += 1
                if self.path.startswith("/hold/") and api.hits[self.path] == 1:
                    api.arrived.setdefault(self.path, threading.Event()).set()
                    api.held.setdefault(self.path, threading.Event()).wait(60)
                body = json.dumps({"path": self.path, "n": api.hits[self.path]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_arrived(self, path: str, timeout: float = 30) -> None:
        assert self.arrived.setdefault(path, threading.Event()).wait(timeout), path

    def release(self, path: str) -> None:
        self.held.setdefault(path, threading.Event()).set()

    def close(self) -> None:
        for event in self.held.values():
            event.set()
        self.server.shutdown()


@pytest.fixture
def local_api() -> Iterator[LocalAPI]:
    api = LocalAPI()
    yield api
    api.close()


def http_task(folder: Path, name: str, api: LocalAPI, **fields: Any) -> Path:
    """A task whose only tool is ``http_request``, allowed to reach ``api``."""
    tools = {
        "enabled": ["http_request"],
        "http": {"allowed_hosts": ["127.0.0.1"], "allow_private_network": True},
    }
    return write_task(folder, name, tools=tools, **fields)


def held_two_fetch_task(folder: Path, api: LocalAPI) -> tuple[Path, Path]:
    """Task ``two`` and its simulator script: fetch ``/once``, then ``/hold/h`` (held until
    released: provably in flight), then answer "Both fetched."."""
    task = http_task(folder, "two", api)
    script = folder / "script.json"
    script.write_text(
        json.dumps(
            [
                call("http_request", url=f"{api.url}/once"),
                call("http_request", url=f"{api.url}/hold/h"),
                "Both fetched.",
            ]
        )
    )
    return task, script


def config(tmp_path: Path, sim_url: str, *tasks: Path, **kw: Any) -> ServeConfig:
    security = kw.pop("security", SecurityConfig())
    return ServeConfig(
        tasks=list(tasks),
        store=kw.pop("store", str(tmp_path / "store")),
        model_url=sim_url,
        security=security,
        tick_s=kw.pop("tick_s", 0.1),
        **kw,
    )


@pytest.fixture
def pg_store() -> Iterator[str]:
    """A Postgres store URL in a schema of its own (dropped after the test)."""
    url = postgres_url()
    import psycopg

    schema = "serve_" + uuid.uuid4().hex[:10]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    yield f"{url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
