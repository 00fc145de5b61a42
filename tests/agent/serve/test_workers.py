"""``agent serve --workers N``: N processes on one port, replicas of one store.

A stream served by a worker that does not run the run gets all its events; ``kill -9`` of
the worker running a run: a sibling takes it over and finishes it without repeating a
completed tool call, and the parent starts a new worker; SIGTERM stops them all. The
supervisor replaces workers that exit and stops when one cannot start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from agent.serve._workers import STARTUP_FAILURE, supervise
from tests.agent.serve._procs import ServeProc
from tests.agent.serve.conftest import held_two_fetch_task, http_task, sse

pytestmark = pytest.mark.slow


def _connection_to(url: str, pid: int) -> httpx.Client:
    """A keep-alive client whose connection the worker ``pid`` accepted."""
    for _ in range(100):
        client = httpx.Client(base_url=url, timeout=30)
        response = client.get("/healthz")
        client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        if _accepted_by(pid, client_port):
            return client
        client.close()
    raise AssertionError(f"no connection reached worker {pid}")


def _accepted_by(pid: int, client_port: int) -> bool:
    """Whether process ``pid`` holds the server side of the loopback connection from
    ``client_port`` (its socket's inode, from /proc/net/tcp, among its fds)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == client_port:  # remote end: the client
            inodes.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd) in inodes for fd in fds.iterdir() if fd.is_symlink())


def _owner_pid(store: Path, run_id: str) -> int:
    with sqlite3.connect(store / "serve.db") as db:
        (pid,) = db.execute(
            "SELECT owner_pid FROM serve_jobs WHERE run_id = ?", (run_id,)
        ).fetchone()
    return pid


def _metrics_count_every_worker(url: str) -> None:
    """Whichever worker answers, /metrics counts the run done (by the worker that took it
    over) once, and no run active (the killed worker's gauges are gone)."""
    deadline = time.monotonic() + 30
    answers: list[tuple[str | None, str | None]] = []
    while len(answers) < 10:
        text = httpx.get(f"{url}/metrics", timeout=30).text  # a new connection each
        done = re.search(r'^agent_runs_total\{status="done"\} (\S+)$', text, re.M)
        active = re.search(r"^agent_runs_active (\S+)$", text, re.M)
        answers.append((done and done[1], active and active[1]))
        if answers[-1] != ("1", "0"):
            answers.clear()  # a snapshot not shared yet: try again
            assert time.monotonic() < deadline, text
            time.sleep(0.1)


def test_two_workers_stream_take_over_a_killed_one_and_stop_on_sigterm(
    tmp_path: Path, local_api
) -> None:
    task, script = held_two_fetch_task(tmp_path, local_api)
    store = tmp_path / "store"
    args = [str(task), "--sim", str(script), "--store", str(store), "--workers", "2"]
    serve = ServeProc(args, tmp_path)
    try:
        serve.wait_ready(timeout=90)
        with httpx.Client(base_url=serve.url, timeout=30) as c:
            run_id = c.post("/v1/runs", json={"task": "two"}).json()["run_id"]
        local_api.wait_arrived("/hold/h")
        owner = _owner_pid(store, run_id)
        (other_pid,) = {int(p) for p in re.findall(r"worker (\d+) started", serve.text())} - {owner}
        with contextlib.closing(_connection_to(serve.url, other_pid)) as other:
            events: list = []
            reader = threading.Thread(target=lambda: events.extend(sse(other, run_id)))
            reader.start()
            os.kill(owner, signal.SIGKILL)
            local_api.release("/hold/h")
            reader.join(60)
        assert not reader.is_alive()
        assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
        final = events[-1][2]["result"]
        assert (final["status"], final["answer"]) == ("done", "Both fetched.")
        assert sum(1 for _, k, d in events if k == "run_started" and d["resumed"]) == 1
        assert local_api.hits["/once"] == 1  # completed before the kill: not run again
        assert _owner_pid(store, run_id) != owner
        _metrics_count_every_worker(serve.url)
        deadline = time.monotonic() + 30
        while "starting another" not in serve.text():
            assert time.monotonic() < deadline, serve.text()
            time.sleep(0.1)
        serve.terminate()
        assert serve.proc.wait(60) == 0
        started = [int(p) for p in re.findall(r"worker (\d+) started", serve.text())]
        assert len(started) == 3
        assert not [pid for pid in started if Path(f"/proc/{pid}").exists()]
    finally:
        serve.close()


def _exit_with(code: int, folder: str, parent: int) -> None:
    """A worker that records its start, then exits with ``code`` (the first one of the
    folder with ``code``, later ones with 3 if ``code`` is negative)."""
    starts = len(list(Path(folder).glob("*.started")))
    Path(folder, f"{os.getpid()}.started").touch()
    assert parent == os.getppid()
    raise SystemExit(abs(code) if code >= 0 or starts == 0 else STARTUP_FAILURE)


def _signal_after(folder: Path, starts: int) -> None:
    def watch() -> None:
        while len(list(folder.glob("*.started"))) < starts:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


def test_a_worker_that_cannot_start_stops_them_all(tmp_path: Path) -> None:
    assert supervise(2, _exit_with, (STARTUP_FAILURE, str(tmp_path)), grace_s=10) == 1
    assert 1 <= len(list(tmp_path.glob("*.started"))) <= 2


def test_a_worker_that_exits_is_replaced_until_a_signal(tmp_path: Path) -> None:
    _signal_after(tmp_path, 3)
    assert supervise(1, _exit_with, (0, str(tmp_path)), grace_s=10) == 0
    assert len(list(tmp_path.glob("*.started"))) >= 3


def test_a_replacement_that_cannot_start_is_retried_not_fatal(tmp_path: Path) -> None:
    """Once the service has started, one replacement failing to start (a database that
    is briefly away) must not stop the workers that serve: it is tried again."""
    _signal_after(tmp_path, 3)
    assert supervise(1, _exit_with, (-1, str(tmp_path)), grace_s=10) == 0
    assert len(list(tmp_path.glob("*.started"))) >= 3


def test_workers_stop_when_their_parent_is_killed(tmp_path: Path, local_api) -> None:
    """``kill -9`` of the parent must not leave workers serving the port with nobody to
    stop them (the next start would find it taken)."""
    task = http_task(tmp_path, "one", local_api)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["Done."]))
    args = [str(task), "--sim", str(script), "--store", str(tmp_path / "store")]
    serve = ServeProc([*args, "--workers", "2"], tmp_path)
    try:
        serve.wait_ready(timeout=90)
        deadline = time.monotonic() + 30
        while len(started := re.findall(r"worker (\d+) started", serve.text())) < 2:
            assert time.monotonic() < deadline, serve.text()
            time.sleep(0.1)
        serve.proc.kill()
        serve.proc.wait(30)
        while alive := [p for p in started if Path(f"/proc/{p}").exists()]:
            assert time.monotonic() < deadline + 30, f"workers {alive} outlived their parent"
            time.sleep(0.1)
    finally:
        serve.close()
