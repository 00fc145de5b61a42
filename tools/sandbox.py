"""The sandbox: one persistent worker process per run for ``sandbox="process"`` tools.

The worker (`tools._worker`) is started lazily on the first call, and restarted lazily on
the next call after it died or was killed. It imports only from read-only places, never from
the workspace, and a workspace overlapping them is refused (`tools._codepaths`). Where
bubblewrap works it runs inside ``bwrap``:

- only read-only system paths (``/usr``, ``/lib*``, the Python prefixes, and every folder of
  the worker's import path: the venv, the project source, the tools' import roots) — no
  ``/etc``, no home; these are bound after (over) any writable bind;
- the workspace bound at its own path, read-write only if the files policy allows writes;
  with SQL writes allowed, the database file's folder too (DuckDB creates and removes its
  write-ahead log beside the file), so a task file behaves the same in both modes;
- a private ``/tmp``, minimal ``/proc`` and ``/dev``, ``--unshare-all`` (no network),
  ``--cap-drop ALL``, ``--die-with-parent``, ``--new-session``.

Otherwise it is a plain child process (``ToolResult.sandbox == "process"``): no filesystem
or network isolation beyond what each tool enforces itself. In both cases the worker
sets rlimits on itself before importing any tool: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU``
(cumulative over the worker's life) and ``RLIMIT_FSIZE``; its environment is empty but
for ``PATH``, ``LANG``, ``HOME`` and ``TMPDIR``, so no secrets are inherited.

A hard timeout kills the whole worker (its process group; bwrap's PID namespace takes
the rest), failing every call in flight on it: a thread stuck in C code cannot be
stopped any other way. The caller gets `ToolTimeout` for the call that hung and
`ToolExecutionError` for the others.

>>> bwrap_available() in (True, False)
True
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from agent.errors import (
    ConfigError,
    ToolArgumentError,
    ToolExecutionError,
    ToolPolicyError,
    ToolTimeout,
)
from tools import _codepaths
from tools._codepaths import import_path, import_roots, isolated_python
from tools._worker import MAX_FRAME_BYTES
from tools.base import Tool
from tools.policy import ToolPolicies

__all__ = ["SandboxWorker", "bwrap_argv", "bwrap_available", "check_workspace"]

_HEADER = struct.Struct(">I")
_SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache")
_START_TIMEOUT_S = 60.0


@functools.cache
def bwrap_available() -> bool:
    """Whether ``bwrap`` is installed and can create a sandbox here (checked once)."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    argv = [exe, "--unshare-all", "--ro-bind", "/", "/", "--", "/bin/true"]
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def bwrap_argv(
    workspace: Path, *, writable: bool, ro_paths: Iterable[Path], rw_paths: Iterable[Path] = ()
) -> list[str]:
    """The bubblewrap command line for a worker confined to ``workspace``.

    ``rw_paths``: folders inside the workspace that are writable even when it is not.
    Binds are made parents first (a deeper bind wins over the folder it sits in); at the
    same path the read-only code wins over a writable bind.

    >>> bwrap_argv(Path("/w"), writable=False, ro_paths=[])[:2]
    ['bwrap', '--unshare-all']
    """
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    binds = [(str(workspace), "--bind" if writable else "--ro-bind", 0)]
    binds += [(str(p), "--bind", 1) for p in rw_paths]
    for p in _SYSTEM_PATHS:
        if os.path.islink(p):
            argv += ["--symlink", os.readlink(p), p]
        elif os.path.exists(p):
            binds.append((p, "--ro-bind", 2))
    binds += [(str(p), "--ro-bind", 2) for p in ro_paths if _safe_to_expose(p)]
    seen: dict[str, str] = {}
    for path, kind, _ in sorted(binds, key=lambda b: (b[0].count("/"), b[0], b[2])):
        seen[path] = kind  # the last bind of a path is the one in force
    for path, kind in seen.items():
        argv += [kind, path, path]
    return [*argv, "--chdir", str(workspace)]


def check_workspace(workspace: Path, tools: Iterable[Tool]) -> None:
    """ConfigError when sandboxed ``tools`` could plant code through ``workspace``.

    See `tools._codepaths`: a workspace overlapping the interpreter's environment, the
    project or a tool's package is refused. Tools that do not run in the worker never
    touch the workspace, so with none of those there is nothing to check.
    """
    sandboxed = [t for t in tools if t.sandbox == "process"]
    if sandboxed:
        _codepaths.check_workspace(workspace, sandboxed)


def _safe_to_expose(p: Path) -> bool:
    home = Path.home().resolve()
    return p.is_dir() and p != Path("/") and p not in home.parents and p != home


class SandboxWorker:
    """The worker process of one run, and the calls in flight on it.

    >>> SandboxWorker({}, ToolPolicies(sandbox={"use_bwrap": False}), run_id="r").kind
    'process'
    """

    def __init__(self, tools: Mapping[str, Tool], policies: ToolPolicies, *, run_id: str) -> None:
        self.tools = {n: t for n, t in tools.items() if t.sandbox == "process"}
        self.policies = policies
        self.run_id = run_id
        self.workspace = Path(policies.workspace).resolve()
        use = policies.sandbox.use_bwrap
        self.kind: Literal["bwrap", "process"] = (
            "bwrap" if (use if use is not None else self.tools and bwrap_available()) else "process"
        )
        self.pid: int | None = None
        self.starts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=32)
        self._home: str | None = None
        self._load_errors: dict[str, str] = {}

    async def call(self, name: str, arguments: dict[str, Any], *, call_id: str = "") -> str:
        """Run ``name`` in the worker; return its text or raise a `ToolError` subclass."""
        proc = await self._ensure_started()
        self._next_id += 1
        rid = self._next_id
        frame = {"op": "call", "id": rid, "tool": name, "args": arguments, "call_id": call_id}
        try:
            data = json.dumps(frame, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ToolArgumentError(
                "the arguments hold a lone surrogate, which is not valid Unicode"
            ) from None
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        timeout = self.policies.sandbox.call_timeout_s
        try:
            assert proc.stdin is not None
            proc.stdin.write(_HEADER.pack(len(data)) + data)
            async with asyncio.timeout(timeout):
                await proc.stdin.drain()
                reply = await asyncio.shield(fut)
        except TimeoutError:
            await self._kill(
                proc,
                f"the worker was restarted because another call ({name}) "
                "timed out; retry this call",
            )
            raise ToolTimeout(
                f"{name} did not finish within {timeout:g} s and was killed "
                "(its sandbox worker is restarted for the next call)"
            ) from None
        except (ConnectionError, BrokenPipeError):
            reply = await fut  # the reader fails it with the worker's exit status
        finally:
            self._pending.pop(rid, None)
        if reply.get("ok") and isinstance(reply.get("content"), str):
            return reply["content"]
        message = reply.get("message")
        raise _error_class(reply.get("error_type"))(
            message if isinstance(message, str) else "tool failed (malformed worker reply)"
        )

    async def aclose(self) -> None:
        """Stop the worker (if running) and forget it."""
        if self._proc is not None:
            await self._kill(self._proc, "the run's tools were closed")
        if self._home:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    # -- lifecycle -----------------------------------------------------------------------
    async def _ensure_started(self) -> asyncio.subprocess.Process:
        async with self._lock:  # concurrent first calls must start one worker, not several
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            return await self._start()

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            check_workspace(self.workspace, self.tools.values())
        except ConfigError as exc:
            raise ToolPolicyError(f"the sandbox refuses to start: {exc}") from None
        path = import_path(import_roots(self.tools.values()))
        argv = isolated_python("from tools._worker import main; main()", path)
        if self.kind == "bwrap":
            argv = [*bwrap_argv(self.workspace, **self._mounts(path)), "--", *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(),
            cwd=self.workspace,
            start_new_session=True,  # one process group to kill on timeout
        )
        self._proc, self.pid = proc, proc.pid
        self.starts += 1
        self._tasks = [asyncio.create_task(self._drain_stderr(proc))]
        init = {
            "op": "init",
            "run_id": self.run_id,
            "workspace": str(self.workspace),
            "policies": json.loads(self.policies.model_dump_json()),
            "tools": {n: t.ref for n, t in self.tools.items()},
            "limits": {
                "memory_mb": self.policies.sandbox.memory_mb,
                "cpu_s": self.policies.sandbox.cpu_s,
                "file_size_mb": self.policies.sandbox.file_size_mb,
            },
            "threads": self.policies.max_concurrency,
        }
        data = json.dumps(init).encode()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(_HEADER.pack(len(data)) + data)
            async with asyncio.timeout(_START_TIMEOUT_S):
                await proc.stdin.drain()
                ready = await _read_frame(proc.stdout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            await self._kill(proc, "")
            tail = b"".join(self._stderr).decode(errors="replace").strip().splitlines()
            raise ToolExecutionError(
                f"the sandbox worker ({self.kind}) failed to start"
                + (f": {tail[-1]}" if tail else "")
            ) from None
        self._load_errors = ready.get("errors", {})
        self._tasks.append(asyncio.create_task(self._read_replies(proc)))
        return proc

    def _mounts(self, path: list[str]) -> dict[str, Any]:
        """Which folders bubblewrap binds, and how (see the module docstring)."""
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
        rw = []
        sql = self.policies.sql
        if not sql.read_only and sql.database is not None:
            folder = (self.workspace / sql.database).resolve().parent
            if folder.is_relative_to(self.workspace) and folder.is_dir():
                rw.append(folder)
        return {
            "writable": bool(self.policies.files.allow_write),
            "ro_paths": [Path(p) for p in [*sorted(prefixes), *path]],
            "rw_paths": rw,
        }

    def _env(self) -> dict[str, str]:
        if self.kind == "bwrap":
            home = "/tmp"
        else:
            self._home = self._home or tempfile.mkdtemp(prefix="agent-worker-home-")
            home = self._home
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": home,
            "TMPDIR": "/tmp" if self.kind == "bwrap" else home,
        }

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                msg = await _read_frame(proc.stdout)
                fut = self._pending.get(msg.get("id", -1))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            # A malformed or oversized frame: the worker is broken or hostile; stop it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        rc = await proc.wait()
        if self._proc is proc:
            self._proc = None
        self._fail_pending(
            f"the sandbox worker died during the call ({_describe_exit(rc)}); "
            "it is restarted for the next call"
        )

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while chunk := await proc.stderr.read(4096):
            self._stderr.append(chunk)  # kept for start-up diagnostics; bounded

    async def _kill(self, proc: asyncio.subprocess.Process, reason: str) -> None:
        # The worker leads its own process group, so this kills it and all it started.
        # Not proc.kill() as well: Popen.send_signal polls first, and that poll would reap
        # the dead worker behind asyncio's child watcher ("Unknown child process pid").
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        self._fail_pending(reason)
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self._proc is proc:
            self._proc = None

    def _fail_pending(self, reason: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result({"ok": False, "error_type": "ToolExecutionError", "message": reason})


async def _read_frame(stream: asyncio.StreamReader) -> dict[str, Any]:
    """One frame from the worker; ValueError for an oversized or non-object frame."""
    (size,) = _HEADER.unpack(await stream.readexactly(_HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"worker frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        msg = json.loads(await stream.readexactly(size))
    except RecursionError:
        raise ValueError("worker frame is nested too deeply") from None
    if not isinstance(msg, dict):
        raise ValueError("worker frame is not a JSON object")
    return msg


def _describe_exit(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    if rc > 128:  # bwrap reports a signalled child as 128 + signal
        with contextlib.suppress(ValueError):
            return f"exit status {rc}, {signal.Signals(rc - 128).name}"
    return f"exit status {rc}"


def _error_class(name: str | None) -> type[Exception]:
    import agent.errors as errors

    cls = getattr(errors, name or "", None)
    if isinstance(cls, type) and issubclass(cls, errors.ToolError):
        return cls
    return ToolExecutionError
