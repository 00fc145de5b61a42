"""Draining stops accepting: ``/readyz`` turns 503, new runs are refused (503 with
``Retry-After``), event streams end, reads still answer; and ``agent serve`` on SIGTERM
closes its listening socket at once while a request already in flight that would start a
run gets the 503. The drain window is held open deterministically: a tool call the local
API holds keeps a run in flight, and a request whose body is not sent yet keeps uvicorn
waiting for its connection."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from agent.runs import RunStore
from agent.sim import ScriptPolicy
from tests.agent.serve._procs import agent_serve_procs
from tests.agent.serve.conftest import call, config, http_task, served


def test_draining_turns_readyz_503_and_refuses_new_runs(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/r"), "Done."])
    task = http_task(tmp_path, "slow", local_api)
    with served(config(tmp_path, sim.url, task, drain_s=0.2)) as s, s.client() as c:
        assert c.get("/readyz").json() == {"status": "ready"}
        run_id = c.post("/v1/runs", json={"task": "slow"}).json()["run_id"]
        local_api.wait_arrived("/hold/r")  # the run is in flight: the drain has work
        with c.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            lines = stream.iter_lines()
            assert "event: tool_call" in _until(lines, "event: tool_call")  # live now
            s.service.begin_shutdown()  # what SIGTERM does first (agent/cli/serve.py)
            rest = list(lines)  # the stream ends (clients reconnect with Last-Event-ID)
        assert "event: final" not in rest
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        for route in ("/v1/runs", "/v1/runs/wait"):
            refused = c.post(route, json={"task": "slow"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["type"] == "draining"
            assert refused.headers["retry-after"] == "5"
        chat = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
        assert c.post("/v1/chat/completions", json=chat).status_code == 503
        assert c.get("/healthz").status_code == 200  # alive, just not ready
        assert c.get(f"/v1/runs/{run_id}").json()["status"] == "running"  # reads answer
        local_api.release("/hold/r")
    record = RunStore(tmp_path / "store" / "runs.db").get(run_id)
    assert record is not None and record.status == "interrupted"  # released, resumable
    assert len(RunStore(tmp_path / "store" / "runs.db").list()) == 1  # nothing else started


def test_a_wait_cut_short_by_a_drain_answers_503_with_the_run_id(
    sim, tmp_path: Path, local_api
) -> None:
    """Not a 200 showing a run still running, as if it had ended."""
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/w"), "Done."])
    task = http_task(tmp_path, "slow", local_api)
    with served(config(tmp_path, sim.url, task, drain_s=0.2)) as s, s.client() as c:

        def wait() -> httpx.Response:
            with s.client() as own:
                return own.post("/v1/runs/wait", json={"task": "slow"})

        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(wait)
            local_api.wait_arrived("/hold/w")
            s.service.begin_shutdown()
            answer = waiting.result(timeout=60)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["type"] == "draining"
        assert answer.headers["retry-after"] == "5"
        view = c.get(f"/v1/runs/{answer.headers['x-run-id']}")
        assert view.json()["status"] == "running"  # it goes on (here after a restart)
        local_api.release("/hold/w")


@pytest.mark.slow
def test_sigterm_stops_accepting_and_refuses_a_run_request_in_flight(
    tmp_path: Path, local_api
) -> None:
    task = http_task(tmp_path, "slow", local_api)
    script = tmp_path / "script.json"
    script.write_text(json.dumps([call("http_request", url=f"{local_api.url}/hold/d"), "Done."]))
    store = tmp_path / "store"
    args = [str(task), "--sim", str(script), "--store", str(store), "--drain-s", "0.5"]
    with agent_serve_procs(tmp_path, args) as (p,):
        with p.client() as c:
            run_id = c.post("/v1/runs", json={"task": "slow"}).json()["run_id"]
        local_api.wait_arrived("/hold/d")
        # A POST /v1/runs whose body is still to come: "100 Continue" says the app is
        # reading it, so uvicorn counts it as in flight and waits for it when draining.
        body = json.dumps({"task": "slow"}).encode()
        url = urlsplit(p.url)
        with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
            conn.sendall(
                b"POST /v1/runs HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                % (url.netloc.encode(), len(body))
            )
            assert conn.recv(1024).startswith(b"HTTP/1.1 100 ")
            p.terminate()
            _wait_refused(p.url)  # the listening socket is closed: no new connections
            assert p.proc.poll() is None  # ...while the drain goes on
            conn.sendall(body)
            status, headers, answer = _read_response(conn)
        assert status == 503, answer
        assert json.loads(answer)["error"]["type"] == "draining"
        assert headers["retry-after"] == "5"
        assert p.proc.wait(30) in (0, -signal.SIGTERM)
    local_api.release("/hold/d")
    runs = RunStore(store / "runs.db")
    record = runs.get(run_id)
    assert record is not None and record.status == "interrupted"
    assert [r.run_id for r in runs.list()] == [run_id]  # the refused request started nothing


def _until(lines: Iterator[str], wanted: str) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if line == wanted:
            break
    return seen


def _wait_refused(url: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/readyz", timeout=2)
        except httpx.ConnectError:
            return
        except httpx.HTTPError:  # accepted just before the close, then closed: try again
            pass
        assert time.monotonic() < deadline, "agent serve still accepts connections"
        time.sleep(0.02)


def _read_response(conn: socket.socket) -> tuple[int, dict[str, str], str]:
    """One HTTP/1.1 response read to the server's close (draining: no keep-alive)."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body.decode()
