"""Shared benchmark helpers: the simulated vLLM server in a child process.

A benchmark that measures *client* cost runs the simulator in its own process, so the
server's CPU (uvicorn, SSE encoding, the policy) is not charged to the client and the two
do not share a GIL. The child imports the policy by reference (``module:function``), so
any module-level function works as a ``FunctionPolicy``.

>>> with SimChild("bench.overhead:policy") as sim:  # doctest: +SKIP
...     sim.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import Sampling
    from agent.llm import VLLMBackend
    from agent.types import ToolSpec

__all__ = ["ROOT", "SimChild", "backend_conversation"]

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import importlib, json, sys, time
sys.path.insert(0, {root!r})
from agent.sim import FunctionPolicy, SimConfig, SimServer
module, _, name = {ref!r}.partition(":")
fn = getattr(importlib.import_module(module), name)
config = SimConfig(profile={profile!r}, speed={speed!r}, **{config!r})
server = SimServer(FunctionPolicy(fn), config).start()
print(server.url, flush=True)
for line in sys.stdin:
    if line.strip() == "stats":
        print(json.dumps(server.stats() | {{"cpu_s": time.process_time()}}), flush=True)
server.close()
"""


class SimChild:
    """A simulated server with a ``FunctionPolicy`` running in a child process.

    ``ref`` names the policy function as ``module:function`` (importable from the repo
    root); ``config`` holds more ``SimConfig`` fields (``cache_tokens=...``); closing stdin
    stops the child.
    """

    def __init__(
        self, ref: str, profile: str = "instant", speed: float = 1.0, **config: Any
    ) -> None:
        code = _CHILD.format(root=str(ROOT), ref=ref, profile=profile, speed=speed, config=config)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"simulator child exited ({self.proc.returncode}) before serving")

    def stats(self) -> dict[str, Any]:
        """The simulator's ``stats()`` (busy time, cache hits, requests) and its ``cpu_s``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> SimChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def backend_conversation(
    backend: VLLMBackend,
    system: str,
    user: str,
    tools: list[ToolSpec],
    *,
    steps: int,
    result: str,
    sampling: Sampling,
    session_id: str | None = None,
) -> None:
    """One conversation through the backend alone: no graph, no tools, no persistence.

    The baseline the agent benchmarks divide by: every call the model makes is answered
    with ``result`` at once, for at most ``steps`` model calls; an answer without calls
    ends it.
    """
    from agent.llm import GenerationRequest
    from agent.types import Message

    messages = [Message("system", system), Message("user", user)]
    for _ in range(steps):
        request = GenerationRequest(messages, tools, sampling, session_id=session_id)
        gen = await backend.generate(request)
        messages.append(Message("assistant", gen.content, tool_calls=gen.tool_calls))
        if not gen.tool_calls:
            return
        messages += [
            Message("tool", result, tool_call_id=c.id, name=c.name) for c in gen.tool_calls
        ]
