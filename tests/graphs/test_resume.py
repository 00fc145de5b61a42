"""kill -9 in the middle of a run, then ``agent run --resume``: no completed call repeats.

The turn under test makes two calls at once: ``/a`` answers at once, ``/b`` hangs until
the process is killed. ``/a``'s result is saved under its idempotency key before the
kill; the resumed run reuses it, and only ``/b``, which never completed, runs again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.runs import RunStore, read_trace

AGENT = str(Path(sys.executable).with_name("agent"))


class _Server:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()
        self.b_seen = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                if self.path == "/b" and server.hits["/b"] == 1:
                    server.b_seen.set()
                    server.release.wait(30)  # hang until the agent process is dead
                body = json.dumps({"path": self.path}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def api() -> Iterator[_Server]:
    server = _Server()
    yield server
    server.release.set()
    server.httpd.shutdown()


def _write_task(tmp: Path, port: int) -> tuple[Path, Path]:
    task = tmp / "task.yaml"
    task.write_text(
        "input: fetch both\n"
        "tools:\n"
        "  enabled: [http_request]\n"
        "  http: {allowed_hosts: ['127.0.0.1'], allow_private_network: true, timeout_s: 60}\n"
        "approval: {require: none}\n"
    )
    calls = "\n".join(
        "<tool_call>\n"
        + json.dumps({"name": "http_request", "arguments": {"url": f"http://127.0.0.1:{port}{p}"}})
        + "\n</tool_call>"
        for p in ("/a", "/b")
    )
    script = tmp / "script.yaml"
    script.write_text(json.dumps([calls, "Fetched a and b."]))
    return task, script


def _saved_results(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM store WHERE prefix LIKE 'tool_results%'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_kill_then_resume_repeats_no_completed_call(api: _Server, tmp_path: Path) -> None:
    task, script = _write_task(tmp_path, api.port)
    cmd = [AGENT, "run", str(task), "--sim", str(script), "--json"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        assert api.b_seen.wait(60), proc.stderr.read() if proc.poll() is not None else "no /b"
        deadline = time.monotonic() + 20
        while _saved_results(tmp_path / ".agent" / "store.db") < 1:
            assert time.monotonic() < deadline, "the result of /a was never saved"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    api.release.set()
    (run,) = RunStore(tmp_path / ".agent" / "runs.db").list()
    assert run.status == "interrupted"  # killed: its process is gone, nobody recorded an end

    resumed = subprocess.run(
        [*cmd, "--resume", run.run_id], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    out = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert (out["run_id"], out["status"], out["answer"]) == (run.run_id, "done", "Fetched a and b.")
    assert api.hits["/a"] == 1, "the completed call must not run again"
    assert api.hits["/b"] == 2, "the call cut by the kill runs again"
    results = [
        e
        for e in read_trace(
            out["trace"] if Path(out["trace"]).is_absolute() else tmp_path / out["trace"]
        )
        if e["type"] == "tool_result"
    ]
    assert any(e.get("reused") for e in results)
