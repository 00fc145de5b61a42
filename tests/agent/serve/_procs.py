"""``agent serve`` as a real subprocess on a port it picks itself (``--port 0``), or on a
given one (a restart that clients reconnect to).

:func:`agent_serve_procs` starts several at once (their start-up, mostly imports, is
the slow part, so they overlap), waits until each answers ``/healthz``, and kills
whatever is still running at the end. The port comes from uvicorn's own start-up line,
so there is no race for a free port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ServeProc", "agent_serve_procs"]

_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class ServeProc:
    """One ``agent serve`` process; its stdout and stderr go to :attr:`log`."""

    def __init__(
        self, args: Sequence[str], cwd: Path, env: dict[str, str] | None = None, port: int = 0
    ):
        self.log = cwd / f"serve-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "agent.cli", "serve", *args, "--port", str(port)]
        argv += ["--log-level", "info"]  # uvicorn's start-up line names the port
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.url = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def spans(self, trace_id: str, expected: int, timeout: float = 15) -> list[Any]:
        """The spans of one trace that ``--otel`` printed (JSON objects in the log), once
        ``expected`` of them are there (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = [
                s for s in _printed_spans(self.text()) if s["context"]["trace_id"][2:] == trace_id
            ]
            if len(spans) >= expected or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not self.url:
            assert self.proc.poll() is None, f"agent serve exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"agent serve did not start:\n{self.text()}"
            if found := _RUNNING.search(self.text()):
                self.url = f"http://127.0.0.1:{found.group(1)}"
            else:
                time.sleep(0.05)
        assert httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._out.close()


@contextmanager
def agent_serve_procs(
    cwd: Path,
    *arg_lists: Sequence[str],
    env: dict[str, str] | None = None,
    one_at_a_time: bool = False,
) -> Iterator[list[ServeProc]]:
    """Start one ``agent serve`` per argument list, in parallel (``one_at_a_time``: each
    once the one before answers); yield them once all answer. Each is killed (if still
    running) on the way out."""
    with ExitStack() as stack:
        procs = []
        for args in arg_lists:
            proc = ServeProc(args, cwd, env)
            stack.callback(proc.close)
            procs.append(proc)
            if one_at_a_time:
                proc.wait_ready()
        for proc in procs:
            proc.wait_ready()
        yield procs


def _printed_spans(text: str) -> list[Any]:
    decoder, found = json.JSONDecoder(), []
    for start in (m.start() for m in re.finditer(r"^\{$", text, re.M)):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:  # still being written
            continue
        if isinstance(obj, dict) and "context" in obj:
            found.append(obj)
    return found
