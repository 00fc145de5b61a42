"""Test helpers shipped with the library: run the simulated vLLM server, pytest fixtures.

Users test their own agents the way this project does: against a real HTTP server on
loopback that answers from a script. :func:`run_sim` starts one in a background thread
with its own event loop (so sync tests, async tests and benchmarks can all use it);
:func:`arun_sim` is the same for ``async with``. Enable the fixtures with
``pytest_plugins = ["agent.testing"]`` in a ``conftest.py``:

- ``sim``: a running ``instant``-profile server whose policy answers ``""``; configure it
  in the test (``sim.policy = ScriptPolicy([...])``, ``sim.faults.fail_next = 1``);
- ``sim_factory``: a function starting more servers (e.g. two replicas for failover),
  each closed at the end of the test;
- ``real_vllm``: a *real* vLLM server (vLLM 0.32 on the CPU, SmolLM2-135M-Instruct) for the
  tests of a package, from the folder ``.ci/real_vllm.sh`` prepares; tests using it skip, naming
  that script, when the folder is not there. See :func:`run_real_vllm`.

:class:`ScriptedBackend` skips HTTP altogether: an in-process model whose turns say
exactly what it emits and when (text, parsed calls, pauses, exceptions), for tests of
timing and failure paths that a server cannot stage precisely.

>>> with run_sim(ScriptPolicy(["ok"])) as sim:
...     sim.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.errors import BackendError
from agent.hermes import TextDelta, ToolCallParsed
from agent.llm.base import Backend, Generation, GenerationDone, GenerationRequest
from agent.sim import Faults, FunctionPolicy, Policy, ScriptPolicy, SimConfig, SimServer
from agent.types import ToolCall

# The sim classes are re-exported so tests need one import.
__all__ = [
    "Faults",
    "FunctionPolicy",
    "RealVLLM",
    "ScriptPolicy",
    "ScriptedBackend",
    "SimConfig",
    "SimServer",
    "arun_sim",
    "real_vllm",
    "real_vllm_home",
    "run_real_vllm",
    "run_sim",
    "sim",
    "sim_factory",
]


@contextmanager
def run_sim(policy: Policy | None = None, config: SimConfig | None = None, *,
            faults: Faults | None = None, host: str = "127.0.0.1",
            port: int = 0) -> Iterator[SimServer]:
    """Run a simulated vLLM server for the ``with`` block; ``port=0`` picks a free port.

    >>> with run_sim() as sim:
    ...     type(sim.stats()["busy_s"]).__name__
    'float'
    """
    server = SimServer(policy, config, faults).start(host, port)
    try:
        yield server
    finally:
        server.close()


@asynccontextmanager
async def arun_sim(policy: Policy | None = None, config: SimConfig | None = None, *,
                   faults: Faults | None = None, host: str = "127.0.0.1",
                   port: int = 0) -> AsyncIterator[SimServer]:
    """:func:`run_sim` for ``async with``; start and stop run off the caller's loop."""
    server = SimServer(policy, config, faults)
    await asyncio.to_thread(server.start, host, port)
    try:
        yield server
    finally:
        # Closing waits for open streams; doing it in a thread keeps the caller's loop
        # (which may own those streams' clients) running meanwhile.
        await asyncio.to_thread(server.close)


@pytest.fixture
def sim() -> Iterator[SimServer]:
    """A running instant-profile simulated server with an empty ``FunctionPolicy``."""
    with run_sim(FunctionPolicy()) as server:
        yield server


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimServer]]:
    """Start more simulated servers: ``sim_factory(policy=None, config=None, faults=None)``."""
    started: list[SimServer] = []

    def start(policy: Policy | None = None, config: SimConfig | None = None,
              faults: Faults | None = None) -> SimServer:
        server = SimServer(policy, config, faults).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


class ScriptedBackend(Backend):
    """A model whose k-th call plays ``turns[k]``, one item at a time.

    Items: ``str`` — text (a text delta); ``ToolCall`` — a parsed call; a number — sleep
    that many seconds; an exception — raise it. ``requests`` records what it was asked.

    >>> backend = ScriptedBackend([["Hello"]])
    """

    def __init__(self, turns: list[list[Any]]) -> None:
        self.turns = list(turns)
        self.requests: list[GenerationRequest] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Any]:
        self.requests.append(request)
        if not self.turns:
            raise BackendError(f"ScriptedBackend has no turn left for call {len(self.requests)}")
        text, calls = "", []
        for item in self.turns.pop(0):
            if isinstance(item, ToolCall):
                calls.append(item)
                yield ToolCallParsed(len(calls) - 1, item, "")
            elif isinstance(item, str):
                text += item
                yield TextDelta(item)
            elif isinstance(item, BaseException):
                raise item
            else:
                await asyncio.sleep(float(item))
        yield GenerationDone(Generation(text=text, content=text, tool_calls=calls))


# -- a real vLLM server (the real-vLLM test tier) ------------------------------------------------
REAL_VLLM_MODEL = "SmolLM2-135M-Instruct"
"""The served model name of the tier's server."""
REAL_VLLM_ARGS = (
    "--dtype", "bfloat16", "--max-model-len", "8192", "--enforce-eager",
    "--enable-prompt-tokens-details", "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
)
_HOW_TO = "run `bash .ci/real_vllm.sh` (once: 3-5 minutes, 3.7 GB outside the checkout)"


def real_vllm_home() -> Path:
    """The tier's folder: ``$AGENT_REAL_VLLM_HOME``, else ``~/.cache/hermes-agent/real-vllm``."""
    env = os.environ.get("AGENT_REAL_VLLM_HOME")
    return Path(env) if env else Path.home() / ".cache" / "hermes-agent" / "real-vllm"


@dataclass
class RealVLLM:
    """A running real vLLM server: ``url`` (no ``/v1``), served ``model``, its log file."""

    url: str
    model: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float
    """Seconds from the start of the process to the first healthy ``/health``."""
    max_model_len: int = 8192

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server's whole process group (API server, engine core, worker): SIGTERM,
        then SIGKILL for whatever is still there after ``timeout`` seconds."""
        group = self.process.pid
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.2)  # the engine's children may outlive the API server briefly
        if _group_alive(group):
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def run_real_vllm(home: Path | None = None, *, extra_args: Sequence[str] = (),
                  timeout_s: float = 600.0) -> Iterator[RealVLLM]:
    """Start vLLM from the tier folder on a free loopback port; stop it after the block.

    Raises ``FileNotFoundError`` when the tier is not prepared, ``RuntimeError`` (with the
    end of the server's log) when the server dies or is not healthy within ``timeout_s``.
    """
    home = home or real_vllm_home()
    python, model_dir = home / "venv" / "bin" / "python", home / "model"
    if not (home / "READY").is_file() or not python.exists():
        raise FileNotFoundError(f"no real-vLLM tier at {home}: {_HOW_TO}")
    port = _free_port()
    log = home / "logs" / f"server-{port}.log"
    log.parent.mkdir(exist_ok=True)
    for old in sorted(log.parent.glob("server-*.log"), key=lambda p: p.stat().st_mtime)[:-5]:
        old.unlink(missing_ok=True)  # keep the last few logs, not one per run forever
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "TQDM_DISABLE": "1"}
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(model_dir), "--served-model-name", REAL_VLLM_MODEL,
           "--host", "127.0.0.1", "--port", str(port), *REAL_VLLM_ARGS, *extra_args]
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=home, env=env,
                                   start_new_session=True)
    server = RealVLLM(f"http://127.0.0.1:{port}", REAL_VLLM_MODEL, process, log, 0.0)
    try:
        _wait_healthy(server, started, timeout_s)
        yield server
    finally:
        server.stop()


def _wait_healthy(server: RealVLLM, started: float, timeout_s: float) -> None:
    while time.monotonic() - started < timeout_s:
        if server.process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {server.process.returncode} while starting; "
                               f"log {server.log}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                server.ready_s = time.monotonic() - started
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"vLLM not healthy after {timeout_s:g} s; log {server.log}:\n"
                       f"{server.log_tail()}")


@pytest.fixture(scope="package")
def real_vllm() -> Iterator[RealVLLM]:
    """A real vLLM server for the tests of one package, stopped once they are done (its
    4 GB and its CPU are not held through the rest of the run). Skips when the tier is not
    prepared; fails instead when ``AGENT_REQUIRE_REAL_VLLM=1``, as CI sets it."""
    home = real_vllm_home()
    if not (home / "READY").is_file():
        message = f"real-vLLM tier not prepared at {home}: {_HOW_TO}"
        if os.environ.get("AGENT_REQUIRE_REAL_VLLM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with run_real_vllm(home) as server:
        yield server
