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

A first frame ``template`` instead makes the process a pre-warmed template that forks
workers on request (`_template`); each forked worker then speaks the protocol above on the
pipes it was given, starting from ``init``.

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
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["MAX_FRAME_BYTES", "main", "unencodable", "valid_text"]

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest protocol frame either side accepts."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt(3) parameters
_PR_SET_PDEATHSIG = 1  # prctl(2)


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

    def close(self) -> None:
        self._stream.close()

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


def _apply_limits(limits: dict[str, int], *, cpu: bool = True) -> None:
    mib = 1024 * 1024
    _tame_malloc()
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mib,) * 2)
    if cpu:  # Soft CPU limit below the hard one: SIGXCPU first, SIGKILL if ignored.
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
    """Serve frames until stdin closes or a ``shutdown`` frame arrives.

    A first frame ``template`` makes this process a template instead (`_template`): it
    returns here only in the workers it forks, each with its own protocol, to serve them.
    """
    proto_in, writer = _protocol()
    init = _read_frame(proto_in)
    if init and init.get("op") == "template":
        proto_in, writer = _template(init, proto_in, writer)
        init = _read_frame(proto_in)
    if not init or init.get("op") != "init":
        sys.exit(2)
    _apply_limits(init["limits"])
    server = _Server(init, writer)
    writer.send({"op": "ready", "errors": server.errors, "pid": os.getpid()})
    while (msg := _read_frame(proto_in)) is not None and msg.get("op") != "shutdown":
        server.submit(msg)
    os._exit(0)  # don't join threads still running a tool: the parent asked us to go


def _protocol() -> tuple[BinaryIO, _Writer]:
    """The protocol's private copies of fds 0 and 1; fd 0 becomes /dev/null and fd 1 stderr."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to stderr, which the parent drains
    return proto_in, _Writer(proto_out)


def _template(
    init: dict[str, Any], proto_in: BinaryIO, writer: _Writer
) -> tuple[BinaryIO, _Writer]:
    """Be a pre-warmed template that forks workers; return in each worker forked.

    The template applies the workers' limits, imports their tools (and so DuckDB) once,
    answers ``ready``, then serves its control socket (``init["control_fd"]``, a
    ``SOCK_SEQPACKET`` pair with the parent, one JSON message per packet):

    - ``fork`` ``{"cwd", "env"}`` with three fds attached (the worker's stdin, stdout and
      stderr): answered ``{"op": "forked", "pid"}`` with a pidfd of the worker attached,
      so the parent can watch and signal it in any PID namespace (bubblewrap's);
    - each worker that exits is reaped here and reported ``{"op": "exited", "pid",
      "status"}`` (the parent is not its parent, so it cannot learn the status itself);
      its process group is killed just before it is reaped (`_report_exits`).

    It stays single-threaded (fork copies only the calling thread) and exits when the
    control socket closes; its workers get SIGKILL when it dies (``PR_SET_PDEATHSIG``).
    A forked worker inherits the memory and file-size limits and sets ``RLIMIT_CPU`` on
    itself, with a CPU count that starts at zero.
    """
    # Not the CPU limit: it counts a process's whole life, and the template's is long (each
    # fork costs it a little); each worker sets it on itself, starting from zero.
    _apply_limits(init["limits"], cpu=False)
    _preload(init["tools"].values())
    control = socket.socket(fileno=init["control_fd"])
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below
    writer.send({"op": "ready", "errors": {}, "pid": os.getpid()})
    template = os.getpid()
    with selectors.DefaultSelector() as sel:
        sel.register(control, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select():
                if key.fileobj == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    _report_exits(control)
                    continue
                msg, fds, _, _ = socket.recv_fds(control, 65536, 3)
                if not msg:
                    os._exit(0)  # the parent is gone
                request = json.loads(msg)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    control.close()
                    proto_in.close()
                    writer.close()
                    return _forked(request, fds, template)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                reply = json.dumps({"op": "forked", "pid": pid}).encode()
                socket.send_fds(control, [reply], [pidfd])
                os.close(pidfd)


def _preload(refs: Iterable[str]) -> None:
    """Import what a worker will: its own modules, the tools' modules, and the modules
    each of those names in ``SANDBOX_MODULES`` (imported lazily by its tools)."""
    modules = ["agent.errors", "tools.base", "tools.policy"]
    modules += [ref.partition(":")[0] for ref in refs]
    for name in modules:
        try:  # the worker reports what fails to import
            module = importlib.import_module(name)
            for extra in getattr(module, "SANDBOX_MODULES", ()):
                importlib.import_module(extra)
        except Exception:
            continue


def _report_exits(control: socket.socket) -> None:
    """Reap the workers that exited and report them; each one's process group is killed
    first (what a tool started there), while its pid, unreaped, still names only its group
    (the parent, which does not reap it, cannot know when that stops being so)."""
    while True:
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if exited is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(exited.si_pid, signal.SIGKILL)  # ESRCH if it died before setsid
        pid, status = os.waitpid(exited.si_pid, 0)
        code = os.waitstatus_to_exitcode(status)
        control.send(json.dumps({"op": "exited", "pid": pid, "status": code}).encode())


def _forked(request: dict[str, Any], fds: list[int], template: int) -> tuple[BinaryIO, _Writer]:
    """In a worker just forked: its own stdin, stdout, stderr, session, folder, env."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.setsid()  # one group to kill, as a worker started on its own
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != template:  # the template died before the line above
        os._exit(1)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR is read again
    return _protocol()


if __name__ == "__main__":
    main()
