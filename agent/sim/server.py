"""The simulated vLLM server: configuration, state, and a uvicorn thread to run it in.

:class:`SimServer` owns everything a request touches (policy, faults, engine, the log of
received bodies) as plain attributes, so a test in another thread can swap the policy or
flip a fault between requests. :meth:`SimServer.start` runs uvicorn on its own event loop
in a daemon thread and returns once the socket is bound: binding the socket ourselves
makes ``port=0`` give a free port without races.

>>> SimConfig().max_model_len
131072
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

import uvicorn

from agent.sim.app import build_app
from agent.sim.engine import PROFILES, Engine
from agent.sim.faults import Faults
from agent.sim.generate import SimulatedDisconnect
from agent.sim.metrics import FINISHED_REASONS
from agent.sim.policy import FunctionPolicy, Policy

__all__ = ["SimConfig", "SimServer"]

ProfileName = Literal["instant", "h100", "h200"]


@dataclass(frozen=True)
class SimConfig:
    """How the simulated server behaves."""

    profile: ProfileName = "instant"
    """Timing model: ``instant`` (no modeled time), ``h100`` or ``h200``."""
    speed: float = 1.0
    """Modeled time runs this many times faster than real time."""
    max_model_len: int = 131072
    model: str = "NousResearch/Hermes-3-Llama-3.1-8B"
    lora_modules: tuple[str, ...] = ()
    """LoRA adapters served under their own names beside ``model`` (vLLM's
    ``--lora-modules``): requests may name one, and the answer says which was asked."""
    cache_tokens: int | None = None
    """KV cache capacity in tokens; ``None`` takes the profile's."""
    max_num_seqs: int | None = None
    """Cap on running sequences; ``None`` takes the profile's (1,024)."""
    refuse_structured: frozenset[str] = frozenset()
    """Structured-output kinds to refuse with a 400 (``json``, ``regex``, ``choice``,
    ``grammar``, ``structural_tag``, ``json_object``, ``response_format``)."""
    prompt_tokens_details: bool = True
    """Report ``usage.prompt_tokens_details.cached_tokens`` (vLLM's
    ``--enable-prompt-tokens-details``)."""
    api_key: str | None = None
    """vLLM's ``--api-key``: every ``/v1`` request must carry ``Authorization: Bearer KEY``
    (401 ``{"error": "Unauthorized"}`` otherwise, as vLLM answers); ``/health``,
    ``/metrics`` and ``/tokenize`` stay open, as there."""

    def engine(self) -> Engine:
        """A fresh engine for this configuration."""
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose from {sorted(PROFILES)}")
        profile = PROFILES[self.profile]
        overrides: dict[str, Any] = {}
        if self.cache_tokens is not None:
            overrides["cache_tokens"] = self.cache_tokens
        if self.max_num_seqs is not None:
            overrides["max_num_seqs"] = self.max_num_seqs
        return Engine(replace(profile, **overrides), self.speed)


class _DropSimulatedDisconnects(logging.Filter):
    """Keep uvicorn from logging a traceback for each disconnect we injected on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        return not isinstance(exc, SimulatedDisconnect)


_filter = _DropSimulatedDisconnects()


class SimServer:
    """A running (or ready to run) simulated vLLM server.

    ``policy``, ``faults`` and ``config`` may be replaced at any time; ``requests`` lists
    every generation request body received, in order.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        config: SimConfig | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.config = config or SimConfig()
        self.policy: Policy = policy or FunctionPolicy()
        self.faults = faults or Faults()
        self.engine = self.config.engine()
        self.requests: list[dict[str, Any]] = []
        self.counters = {"prompt_tokens": 0, "generation_tokens": 0, "request_success": 0}
        self.finished = dict.fromkeys(FINISHED_REASONS, 0)
        """Finished sequences by vLLM's ``finished_reason`` (only ``stop`` and ``length``
        happen here; a request whose client went away counts nowhere, as in vLLM 0.32)."""
        self.url = ""
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.closing = threading.Event()
        """Set by :meth:`close`; long injected stalls end early when it is."""
        self._failure: BaseException | None = None
        logging.getLogger("uvicorn.error").addFilter(_filter)

    def stats(self) -> dict[str, Any]:
        """Modeled busy time, prefix-cache counters and request counts.

        ``busy_s`` is the modeled GPU time of the work served; ``ideal_wall_s`` divides it
        by ``speed``: the wall time an ideal run of this server would need.
        """
        e = self.engine
        return {
            "profile": self.config.profile,
            "speed": self.config.speed,
            "busy_s": e.busy_s,
            "ideal_wall_s": e.busy_s / self.config.speed,
            "steps": e.steps,
            "requests": len(self.requests),
            "requests_finished": self.counters["request_success"],
            "prompt_tokens": self.counters["prompt_tokens"],
            "generation_tokens": self.counters["generation_tokens"],
            "prefix_cache_queries": e.cache.queries,
            "prefix_cache_hits": e.cache.hits,
            "prefix_cache_hit_rate": e.cache.hits / e.cache.queries if e.cache.queries else 0.0,
        }

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0) -> SimServer:
        """Serve in a background thread; returns once ready. ``port=0`` picks a free port."""
        # IPPROTO_TCP explicitly: asyncio disables Nagle only on sockets whose proto says
        # TCP, and accepted sockets inherit proto=0 from a socket created without it, which
        # left every small write after the headers waiting ~40 ms for a delayed ACK.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        bound = sock.getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        config = uvicorn.Config(
            build_app(self),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), daemon=True, name=f"agent-sim-{bound}"
        )
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            self.close()
            raise RuntimeError(f"simulated server did not start: {self._failure}")
        return self

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(sock))
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._failure = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self, sock: socket.socket) -> None:
        assert self._uvicorn is not None
        watcher = asyncio.create_task(self._watch_started())
        try:
            await self._uvicorn.serve(sockets=[sock])
        finally:
            watcher.cancel()
            await self.engine.aclose()
            sock.close()

    async def _watch_started(self) -> None:
        assert self._uvicorn is not None
        while not self._uvicorn.started:
            await asyncio.sleep(0.005)
        self._ready.set()

    def close(self) -> None:
        """Stop serving and wait for the thread. Safe to call twice."""
        self.closing.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SimServer(url={self.url!r}, profile={self.config.profile!r})"
