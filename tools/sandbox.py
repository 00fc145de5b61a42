"""The sandbox: worker processes that run ``sandbox="process"`` tools, shared by runs.

A run's sandboxed calls go through its :class:`RunSandbox`, which the pool
(`tools._pool`) assigns to a worker process on the run's first call: runs that may touch
the same things (workspace, policies, tools) share a small group of workers, each run's
state kept apart inside the worker; ``sandbox.shared: false`` gives a run a worker of its
own instead. Without bubblewrap, a group's workers are forked from a pre-warmed template
(the tools and DuckDB imported once; `tools._pool`). Under bubblewrap each worker is started
in a sandbox of its own: workers forked inside one shared sandbox would share its PID
namespace, ``/proc`` and ``/tmp``, so a compromised worker could write into a sibling's
pipes or its template's memory, or kill them. A worker
(`tools._worker`) imports only from read-only places, never from the workspace, and a
workspace overlapping them is refused (`tools._codepaths`; checked when a group is made,
for every run it will serve). Where bubblewrap works it runs inside ``bwrap``:

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

At a call's hard timeout the call is interrupted inside the worker (a DuckDB query stops)
and fails alone; a call that cannot be interrupted (a thread stuck in C code) gets the
whole worker killed (its process group; bwrap's PID namespace takes the rest): the caller
gets `ToolTimeout` for that call and `ToolExecutionError` for the others in flight there.

>>> bwrap_available() in (True, False)
True
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from agent.errors import (
    ConfigError,
    ToolPolicyError,
)
from tools import _codepaths
from tools._codepaths import import_path, import_roots, isolated_python
from tools._pool import Command, PoolKey, WorkerPool
from tools.base import Tool
from tools.policy import ToolPolicies

__all__ = ["RunSandbox", "bwrap_argv", "bwrap_available", "check_workspace", "close_pool"]

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


class RunSandbox:
    """One run's way into the sandbox: its calls go to the pooled worker it is assigned to.

    ``pid``: the worker process serving the run (None before its first call); ``starts``:
    how many workers have served it (a worker killed or crashed is replaced).

    >>> RunSandbox({}, ToolPolicies(sandbox={"use_bwrap": False}), run_id="r").kind
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
        self.starts = 0
        self._worker: Any = None
        self._group: Any = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    async def call(self, name: str, arguments: dict[str, Any], *, call_id: str = "") -> str:
        """Run ``name`` in the run's worker; return its text or raise a `ToolError`."""
        worker = await self._assigned()
        timeout = self.policies.sandbox.call_timeout_s
        return await worker.call(self.run_id, name, arguments, call_id, timeout)

    async def aclose(self) -> None:
        """The run is over: its worker closes the run's state (a worker of its own stops)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        await worker.release(self.run_id)
        if self.policies.sandbox.shared:
            self._group.released(worker)
        else:
            await worker.kill("")
            WorkerPool.for_loop().forget(self._group.key)

    async def _assigned(self) -> Any:
        async with self._lock:  # concurrent first calls must get one worker, not several
            if self._worker is not None and self._worker.alive:
                return self._worker
            if self._group is None:
                self._group = self._pool_group()
            self._worker = await self._group.assign(self.run_id)
            self.starts += 1
            return self._worker

    def _pool_group(self) -> Any:
        sandbox = self.policies.sandbox
        key = PoolKey(
            self.kind,
            str(self.workspace),
            self.policies.model_dump_json(),
            tuple(sorted((n, t.ref or "") for n, t in self.tools.items())),
            owner="" if sandbox.shared else self.run_id,
        )
        size = (sandbox.pool_size or _default_pool_size()) if sandbox.shared else 1
        if not self.policies.sql.read_only and self.policies.sql.database is not None:
            size = 1  # one process may write a DuckDB file: its writers must share it
        pool = WorkerPool.for_loop()
        if key not in pool.groups:  # checked once for all the runs a group will serve
            try:
                check_workspace(self.workspace, self.tools.values())
            except ConfigError as exc:
                raise ToolPolicyError(f"the sandbox refuses to start: {exc}") from None
        # Forked from a template: shared workers without bubblewrap. A run's own worker is
        # started on its own (a template would serve one fork); so is each bubblewrap
        # worker, which must have a sandbox of its own (module docstring).
        fork = sandbox.shared and self.kind == "process"
        return pool.group(key, self._command, size, sandbox.cpu_s, fork=fork)

    def _command(self) -> Command:
        path = import_path(import_roots(self.tools.values()))
        argv = isolated_python("from tools._worker import main; main()", path)
        if self.kind == "bwrap":
            argv = [*bwrap_argv(self.workspace, **self._mounts(path)), "--", *argv]
        home = None if self.kind == "bwrap" else tempfile.mkdtemp(prefix="agent-worker-home-")
        init = {
            "op": "init",
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
        return Command(argv, _env(home or "/tmp"), str(self.workspace), init, home)

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


async def close_pool() -> None:
    """Stop every pooled worker of the running loop (they also stop after idling)."""
    await WorkerPool.for_loop().aclose()


def _env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home}


def _default_pool_size() -> int:
    """Workers per group: the cores this process may use, at least two."""
    return max(2, len(os.sched_getaffinity(0)))
