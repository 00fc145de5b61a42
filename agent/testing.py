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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from agent._realvllm import HOW_TO, RealVLLM, real_vllm_home, run_real_vllm
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
def run_sim(
    policy: Policy | None = None,
    config: SimConfig | None = None,
    *,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[SimServer]:
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
async def arun_sim(
    policy: Policy | None = None,
    config: SimConfig | None = None,
    *,
    faults: Faults | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[SimServer]:
    """:func:`run_sim` for ``async with``; start and stop run off the caller's loop."""
    server = SimServer(policy, config, faults)
    await asyncio.to_thread(server.start, host, port)
    try:
        yield server
    finally:
        # Closing waits for open streams; doing it in a thread keeps the caller's loop
        # (which may own those streams' clients) running meanwhile.
        await asyncio.to_thread(server.close)


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


try:  # the fixtures need pytest; the helpers above (and `agent run --sim`) do not
    import pytest
except ImportError:  # pragma: no cover - a plain install without the dev extra
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def sim() -> Iterator[SimServer]:
        """A running instant-profile simulated server with an empty ``FunctionPolicy``."""
        with run_sim(FunctionPolicy()) as server:
            yield server

    @pytest.fixture
    def sim_factory() -> Iterator[Callable[..., SimServer]]:
        """Start more simulated servers: ``sim_factory(policy=None, config=None, faults=None)``."""
        started: list[SimServer] = []

        def start(
            policy: Policy | None = None,
            config: SimConfig | None = None,
            faults: Faults | None = None,
        ) -> SimServer:
            server = SimServer(policy, config, faults).start()
            started.append(server)
            return server

        try:
            yield start
        finally:
            for server in started:
                server.close()

    @pytest.fixture(scope="package")
    def real_vllm() -> Iterator[RealVLLM]:
        """A real vLLM server for the tests of one package, stopped once they are done (its
        4 GB and its CPU are not held through the rest of the run). Skips when the tier is not
        prepared; fails instead when ``AGENT_REQUIRE_REAL_VLLM=1``, as CI sets it."""
        home = real_vllm_home()
        if not (home / "READY").is_file():
            message = f"real-vLLM tier not prepared at {home}: {HOW_TO}"
            if os.environ.get("AGENT_REQUIRE_REAL_VLLM") == "1":
                pytest.fail(message)
            pytest.skip(message)
        with run_real_vllm(home) as server:
            yield server
