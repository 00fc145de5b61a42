"""The sandbox worker: a child process that runs ``sandbox="process"`` tools for many runs.

Started by the sandbox pool (`tools._pool`) as an isolated Python without ``site`` whose
``sys.path`` is set on the command line (`tools._codepaths`), inside bubblewrap when
available. Protocol: frames of a 4-byte big-endian length and a UTF-8 JSON object,
over the process's original stdin/stdout. The first frame is ``init`` (limits, tools by
``module:qualname`` reference, policies, workspace); the worker applies its rlimits before
importing any tool, answers ``ready``, then serves:

- ``call`` ``{"id", "run", "tool", "args", "call_id"}`` on a fixed set of threads, answered
  with ``{"id", "ok", "content" | "error_type" + "message", "cpu_s"}`` in completion order;
- ``cancel`` ``{"id"}``: the call's cancel hooks run (`tools.base.ToolContext.on_cancel`:
  a DuckDB query is interrupted), so a call past its hard timeout fails alone;
- ``release`` ``{"id", "run", "last"}``: the run is over; its state is closed and
  forgotten (with ``last``, the worker's shared state too: nothing stays open, no file
  stays locked, while the worker idles), then answered like a call.

Runs are kept apart inside the process: each has its own `ToolContext.state` (its DuckDB
engine, its open handles); only what a tool asks for with ``shared=True`` is common.

Trade-offs: JSON rather than pickle, so a compromised worker cannot make the parent
execute code by what it sends back. Tools are imported by reference, never sent as code.
Threads, not processes, run concurrent calls: one DuckDB connection is shared per worker,
and a hung call is dealt with by the parent killing the whole worker. The threads are all
started with the worker, before any call: under ``RLIMIT_AS`` a query that used up the
address space (DuckDB and malloc keep what they freed) left no room for a new thread's stack,
so a thread pool that grows on demand failed to serve the next calls, and the failure killed
the worker's main loop.

Tool code that prints must not corrupt the protocol, so fd 1 is pointed at stderr and
the protocol uses a private duplicate of the original stdout. Replies are valid UTF-8 (lone
surrogates become U+FFFD) and at most ``MAX_FRAME_BYTES``; a bigger result is an error
reply, and the parent kills a worker that sends a bigger frame anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import json
import os
import queue
import re
import resource
import signal
import struct
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["MAX_FRAME_BYTES", "main", "unencodable", "valid_text"]

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest protocol frame either side accepts."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt(3) parameters


def valid_text(text: str) -> str:
    """``text`` with lone surrogates (not encodable as UTF-8) replaced by U+FFFD.

    >>> valid_text("a\\ud800b") == "a\\ufffdb"
    True
    """
    return _SURROGATE.sub("\ufffd", text)


def unencodable(arguments: Any) -> str | None:
    """Where ``arguments`` hold a string UTF-8 cannot encode (``arguments.query``), or None.

    A call with such arguments never runs: the dispatcher answers with an argument error.

    >>> unencodable({"q": ["ok", "x\\ud800"]})
    'arguments.q[1]'
    """
    stack: list[tuple[str, Any]] = [("arguments", arguments)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str) and valid_text(value) != value:
            return where
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and valid_text(k) != k:
                    return f"a key of {where}"
                stack.append((f"{where}.{k}", v))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None


def _read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    return json.loads(stream.read(size))


class _Writer:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream, self._lock = stream, threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, ensure_ascii=False).encode()
        if len(data) > MAX_FRAME_BYTES:
            raise ValueError(
                f"the result is {len(data)} bytes, more than the sandbox's limit of "
                f"{MAX_FRAME_BYTES} bytes per result; return less"
            )
        with self._lock:  # frames from concurrent threads must not interleave
            self._stream.write(_HEADER.pack(len(data)) + data)
            self._stream.flush()


def _apply_limits(limits: dict[str, int]) -> None:
    mib = 1024 * 1024
    _tame_malloc()
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mib,) * 2)
    # Soft CPU limit below the hard one: SIGXCPU first, SIGKILL if ignored.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_size_mb"] * mib,) * 2)
    # Writing past RLIMIT_FSIZE should fail the write (EFBIG), not kill the worker.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _tame_malloc() -> None:
    """Make glibc's malloc fit ``RLIMIT_AS``, which counts address space, not memory used.

    By default every thread gets its own 64 MiB arena reservation (about 500 MiB of address
    space for DuckDB's and the tools' threads before any work), and blocks freed after a big
    query stay reserved. Two arenas and a fixed mmap threshold (big blocks are mapped and
    unmapped on their own) leave the limit to the work, and give it back after a failure.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)


def _resolve(ref: str) -> Any:
    module, _, qual = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


class _Server:
    def __init__(self, init: dict[str, Any], writer: _Writer) -> None:
        from tools.base import as_tool
        from tools.policy import ToolPolicies

        self.writer = writer
        self.tools: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        for name, ref in init["tools"].items():
            try:
                self.tools[name] = as_tool(_resolve(ref))
            except Exception as exc:
                self.errors[name] = f"{type(exc).__name__}: {exc}"
        self.workspace = Path(init["workspace"])
        self.policies = ToolPolicies.model_validate(init["policies"])
        self.memory_mb = init["limits"]["memory_mb"]
        self.shared: dict[str, Any] = {}
        self.runs: dict[str, Any] = {}  # run id -> its ToolContext
        self.active: dict[int, Any] = {}  # call id -> the call's ToolContext (for cancel)
        self.lock = threading.Lock()
        self.calls: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        for i in range(init["threads"]):
            threading.Thread(target=self._serve, name=f"tool-{i}", daemon=True).start()

    def submit(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "cancel":
            with self.lock:
                ctx = self.active.get(msg.get("id", -1))
            if ctx is not None:
                ctx.cancel()
        else:
            self.calls.put(msg)

    def _serve(self) -> None:
        while True:
            msg = self.calls.get()
            if msg.get("op") == "release":
                self._release(str(msg.get("run", "")), last=bool(msg.get("last")))
                self.writer.send({"id": msg.get("id"), "ok": True, "content": ""})
            else:
                self._run(msg)

    def _run(self, msg: dict[str, Any]) -> None:
        try:
            content = self._invoke(msg)
            reply = {"id": msg["id"], "ok": True, "content": valid_text(content)}
        except BaseException as exc:  # every failure becomes a reply, never a dead thread
            reply = {"id": msg["id"], "ok": False, **self._describe(exc)}
        finally:
            with self.lock:
                self.active.pop(msg["id"], None)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
        try:
            self.writer.send(reply)
        except (MemoryError, ValueError) as exc:
            self.writer.send({"id": msg["id"], "ok": False, **self._describe(exc)})

    def _context(self, run_id: str, call_id: str, rid: int) -> Any:
        from dataclasses import replace

        from tools.base import ToolContext

        with self.lock:
            base = self.runs.get(run_id)
            if base is None:
                base = self.runs[run_id] = ToolContext(
                    run_id=run_id,
                    workspace=self.workspace,
                    policies=self.policies,
                    shared=self.shared,
                )
            # The run's state, lock and shared dict; cancel hooks of this call alone.
            ctx = replace(base, call_id=call_id, cancel_hooks=[])
            self.active[rid] = ctx
        return ctx

    def _release(self, run_id: str, *, last: bool) -> None:
        with self.lock:
            ctx = self.runs.pop(run_id, None)
            values = list(ctx.state.values()) if ctx is not None else []
            if last:
                values += list(self.shared.values())
                self.shared.clear()
        for value in values:
            with contextlib.suppress(Exception):
                if callable(getattr(value, "close", None)):
                    value.close()

    def _invoke(self, msg: dict[str, Any]) -> str:
        from agent.errors import ToolExecutionError
        from tools.base import render_result

        name = msg["tool"]
        if name not in self.tools:
            raise ToolExecutionError(
                f"tool {name!r} could not be loaded in the sandbox: {self.errors.get(name)}"
            )
        tool = self.tools[name]
        ctx = self._context(str(msg.get("run", "")), msg.get("call_id", ""), msg["id"])
        args, kwargs = tool.bind(msg["args"], ctx)
        result = tool.fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        return render_result(result)

    def _describe(self, exc: BaseException) -> dict[str, str]:
        from agent.errors import ToolError

        if isinstance(exc, MemoryError):
            return {
                "error_type": "ToolExecutionError",
                "message": f"MemoryError: out of memory (the sandbox allows {self.memory_mb} MiB)",
            }
        if isinstance(exc, ToolError):
            return {"error_type": type(exc).__name__, "message": valid_text(str(exc))[:100_000]}
        message = valid_text(f"{type(exc).__name__}: {exc}")[:100_000]
        return {"error_type": "ToolExecutionError", "message": message}


async def _await(awaitable: Any) -> Any:
    return await awaitable


def main() -> None:
    """Serve frames until stdin closes or a ``shutdown`` frame arrives."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints go to stderr, which the parent drains
    writer = _Writer(proto_out)
    init = _read_frame(proto_in)
    if not init or init.get("op") != "init":
        sys.exit(2)
    _apply_limits(init["limits"])
    server = _Server(init, writer)
    writer.send({"op": "ready", "errors": server.errors, "pid": os.getpid()})
    while (msg := _read_frame(proto_in)) is not None and msg.get("op") != "shutdown":
        server.submit(msg)
    os._exit(0)  # don't join threads still running a tool: the parent asked us to go


if __name__ == "__main__":
    main()
