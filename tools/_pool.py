"""The sandbox pool: worker processes shared by every run that may touch the same things.

Runs whose sandboxed tools have the same reach — the same workspace, policies, tools and
sandbox kind (a :class:`PoolKey`) — share a small group of worker processes
(`tools._worker`). A run is assigned to one of them on its first sandboxed call and stays
there (its DuckDB tables and open handles live in that process, kept apart from every
other run's by the worker); a group starts a new worker only while it has fewer than
``size`` and all are busy, else the least loaded one takes the run. Calls beyond a
worker's threads queue inside it. A worker with no run left shuts down after ``IDLE_S``.

A group of plain-process workers is forked from its template (:class:`_Template`): a
process started like a worker, under the same limits, that has imported the tools and
DuckDB once, so a new worker is ready in tens of milliseconds instead of a fresh
interpreter's ~0.3 s, and shares the imported code's memory with its siblings. The template
stops with the group's last worker. Bubblewrap workers and a run's own worker
(``sandbox.shared: false``) are started on their own (`tools.sandbox` says why).

Failure stays local where it can: a call past its hard timeout is first *cancelled* (its
cancel hooks run in the worker: a DuckDB query is interrupted) and fails alone; only a call
that does not stop within ``CANCEL_GRACE_S`` (a tool stuck in C code) gets its worker
killed, which fails the calls in flight there and loses the state of the runs on it (their
next call starts on a fresh worker, and says so). A worker that crashes is replaced alike.

Processes are spawned without asyncio's child watcher (which keeps a thread per child on
Python 3.11, and logged "Unknown child process" whenever something else reaped one): each
worker is watched through its pidfd by the event loop itself (a forked one is reaped by its
template, which reports the exit status); its home folder is removed off the loop. A worker
also reports the CPU it has used: past half of ``sandbox.cpu_s`` it takes no new runs and
retires when its runs are done, so the CPU rlimit (which counts the process's whole life)
does not kill a worker that served many runs.

>>> PoolKey("process", "/w", "{}", (("sql_query", "tools.builtins:sql_query"),)).owner
''
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from agent.errors import ToolArgumentError, ToolExecutionError, ToolTimeout

__all__ = ["IDLE_S", "PoolKey", "WorkerPool"]

_HEADER = struct.Struct(">I")
IDLE_S = 30.0
"""How long a worker with no run waits for one before it shuts down."""
CANCEL_GRACE_S = 2.0
"""How long a cancelled call may take to stop before its worker is killed."""
_START_TIMEOUT_S = 60.0
STATUS_WAIT_S = 1.0
"""How long a forked worker's exit waits for its template to report the status."""
FORK_TIMEOUT_S = 10.0
"""How long a template may take to fork a worker before it is deemed stuck and replaced."""
FORKS_PER_TEMPLATE = 64
"""Workers one template forks before a new one (a fresh address-space layout) takes over."""


@dataclass(frozen=True)
class PoolKey:
    """What a worker may touch; runs with equal keys share workers."""

    kind: str
    workspace: str
    policies: str
    tools: tuple[tuple[str, str], ...]
    owner: str = ""
    """A run id for a worker of that run's own (``sandbox.shared: false``), else empty."""


@dataclass(frozen=True)
class Command:
    """How to start one worker: argv, environment, working folder, a home to remove."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    init: dict[str, Any]
    home: str | None = None


class _Worker:
    """One worker process: its frames in and out, its calls in flight, its runs."""

    def __init__(self, command: Command, max_cpu_s: float) -> None:
        self.command, self.max_cpu_s = command, max_cpu_s
        self.loop = asyncio.get_running_loop()
        self.pidfd = -1
        self.runs: set[str] = set()
        self.pid = 0
        self.inner_pid = 0
        self._proc: subprocess.Popen[bytes] | None = None
        """Held so that `subprocess` never reaps it (it reaps dropped children's exits)."""
        self.template: _Template | None = None
        """Set before `start`: fork from this template instead of starting a process."""
        self.cpu_s = 0.0
        self.stopping = False
        """Set when the pool stops it (idle, retired, closed): its exit is not a failure."""
        self.exited: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        """Its exit status once it has exited; None if unknown (its template died first)."""
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=32)
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._idle: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    @property
    def retiring(self) -> bool:
        """Past half its CPU budget: it takes no new run."""
        return self.cpu_s > self.max_cpu_s / 2

    async def start(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            stdin, stdout, stderr = await self._spawn()
        except BaseException:
            if self.command.home:  # no process, so no exit to remove it at
                loop.run_in_executor(None, shutil.rmtree, self.command.home, True)
            raise
        _LIVE.add(self)
        self._watch_exit()
        try:
            ready, reader = await self._handshake(stdin, stdout, stderr)
        except BaseException as exc:
            # Its caller gets no worker (cancelled too: its run gave up), so none may stay
            # running unseen: it goes now, and its exit watcher reaps it.
            if isinstance(exc, asyncio.CancelledError):
                self.stopping = True  # given up by the pool, not crashed
            self.kill_now()
            raise
        self._tasks.append(asyncio.create_task(self._read(reader)))
        return ready

    async def _handshake(
        self, stdin: Any, stdout: Any, stderr: Any
    ) -> tuple[dict[str, Any], asyncio.StreamReader]:
        """Connect its pipes, send ``init``; its ``ready`` and its frames' reader."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdout)
        errors = asyncio.StreamReader(limit=2**16)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(errors), stderr)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(), stdin
        )
        self._writer = asyncio.StreamWriter(transport, protocol, None, loop)
        self._tasks = [asyncio.create_task(self._drain(errors))]
        try:
            self._send(self.command.init)
            async with asyncio.timeout(_START_TIMEOUT_S):
                await self._writer.drain()
                ready = await read_frame(reader)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            await self.kill("")
            tail = b"".join(self._stderr).decode(errors="replace").strip().splitlines()
            raise ToolExecutionError(
                "the sandbox worker failed to start" + (f": {tail[-1]}" if tail else "")
            ) from None
        return ready, reader

    async def _spawn(self) -> tuple[Any, Any, Any]:
        """Start the process; set ``pid`` and ``pidfd``; its stdin, stdout and stderr."""
        if self.template is not None:
            pidfd, inner, *pipes = await self.template.fork(self)
            try:
                self.pid = pidfd_pid(pidfd)
            except ToolExecutionError:
                os.close(pidfd)
                for pipe in pipes:
                    pipe.close()
                self.template.worker_exited(self, inner)
                raise
            self.pidfd, self.inner_pid = pidfd, inner
            stdin, stdout, stderr = pipes
            return stdin, stdout, stderr
        return self._popen()

    def _popen(self, pass_fds: tuple[int, ...] = ()) -> tuple[Any, Any, Any]:
        cmd = self.command
        proc = subprocess.Popen(
            cmd.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cmd.env,
            cwd=cmd.cwd,
            start_new_session=True,  # one group to kill
            pass_fds=pass_fds,
        )
        self._proc, self.pid, self.pidfd = proc, proc.pid, os.pidfd_open(proc.pid)
        return proc.stdin, proc.stdout, proc.stderr

    def _watch_exit(self) -> None:
        """Note the exit when the loop sees the pidfd become readable (no thread): reap a
        child of ours; a worker forked by a template is reaped there, which reports the
        status (waited for ``STATUS_WAIT_S`` at most: a template stopped or gone must not
        hold up the exit)."""
        loop = asyncio.get_running_loop()
        pidfd = self.pidfd

        def exited(code: int | None) -> None:
            if self.exited.done():
                return
            _LIVE.discard(self)
            self.exited.set_result(code)
            if self.template is not None:
                self.template.worker_exited(self)
            self._fail_pending(
                f"the sandbox worker died during the call ({describe_exit(self.exited)}); "
                "it is restarted for the next call"
            )
            if self.command.home:
                loop.run_in_executor(None, shutil.rmtree, self.command.home, True)

        def reap() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self.pidfd = -1
            if self.template is None:
                # Exited, not yet reaped: its pid still names its group alone (what it
                # started there dies with it); after `waitpid` it may name anyone's.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                code = -1
                with contextlib.suppress(ChildProcessError):
                    _, status = os.waitpid(self.pid, os.WNOHANG)
                    code = os.waitstatus_to_exitcode(status)
                if self._proc is not None:
                    self._proc.returncode = code  # reaped: nothing left for `subprocess`
                exited(code)
            else:
                status = self.template.exit_status(self.inner_pid)
                timer = loop.call_later(STATUS_WAIT_S, exited, None)
                status.add_done_callback(lambda f: (timer.cancel(), exited(f.result())))

        loop.add_reader(pidfd, reap)

    async def call(
        self, run_id: str, tool: str, args: dict[str, Any], call_id: str, timeout: float
    ) -> str:
        """Run one call; ``ToolTimeout`` past ``timeout`` (cancelled, or the worker killed)."""
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._send(
                {
                    "op": "call",
                    "id": rid,
                    "run": run_id,
                    "tool": tool,
                    "args": args,
                    "call_id": call_id,
                }
            )
            try:
                async with asyncio.timeout(timeout):
                    reply = await asyncio.shield(fut)
            except TimeoutError:
                stopped = await self._cancel(rid, fut, tool)
                how = (
                    "was stopped"
                    if stopped
                    else ("was killed (its sandbox worker is restarted for the next call)")
                )
                raise ToolTimeout(f"{tool} did not finish within {timeout:g} s and {how}") from None
        finally:
            self._pending.pop(rid, None)
        self.cpu_s = float(reply.get("cpu_s") or self.cpu_s)
        if reply.get("ok") and isinstance(reply.get("content"), str):
            return reply["content"]
        message = reply.get("message")
        raise error_class(reply.get("error_type"))(
            message if isinstance(message, str) else "tool failed (malformed worker reply)"
        )

    async def _cancel(self, rid: int, fut: asyncio.Future[dict[str, Any]], tool: str) -> bool:
        """Ask the worker to interrupt the call; kill the worker if it does not stop.
        True when the call stopped alone."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._send({"op": "cancel", "id": rid})
        try:
            async with asyncio.timeout(CANCEL_GRACE_S):
                await asyncio.shield(fut)
            return True
        except ToolExecutionError:  # the worker died meanwhile
            return False
        except TimeoutError:
            await self.kill(
                f"the sandbox worker was restarted because a call ({tool}) could not be "
                "stopped at its timeout; this run's in-memory SQL tables and open files "
                "there are gone: retry the call"
            )
            return False

    async def release(self, run_id: str) -> None:
        """The run is over: the worker closes its state (and, with no run left, the state
        its runs shared), and says when it is done."""
        self.runs.discard(run_id)
        if not self.alive:
            return
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._send({"op": "release", "id": rid, "run": run_id, "last": not self.runs})
            async with asyncio.timeout(CANCEL_GRACE_S):
                await asyncio.shield(fut)
        except (ConnectionError, RuntimeError, TimeoutError, ToolExecutionError):
            pass  # a worker that cannot close a run's state in time is not waited for
        finally:
            self._pending.pop(rid, None)

    def idle_after(self, seconds: float, stop: Callable[[], None]) -> None:
        """Call ``stop`` after ``seconds`` unless a run arrives (`cancel_idle`)."""
        self.cancel_idle()
        self._idle = asyncio.get_running_loop().call_later(seconds, stop)

    def cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    async def kill(self, reason: str) -> None:
        """Kill the process group (bwrap's PID namespace takes the rest) and wait for it."""
        self.cancel_idle()
        self.kill_now()
        if self.pid:
            await asyncio.shield(self.exited)
        self._fail_pending(reason or "the sandbox worker was stopped")
        for task in self._tasks:
            task.cancel()

    def kill_now(self) -> None:
        """Send SIGKILL to the process (through its pidfd, even before it has made its
        group) and to its group; nothing if it never started (``killpg(0)`` would be this
        process's own group) or once reaped (its pid may then be another group's).

        The group only of a child of ours not yet reaped (its pidfd is closed when it is,
        and nothing else reaps it): a forked worker is reaped by its template at any time,
        so its template kills its group just before (`tools._worker._report_exits`)."""
        if self.pidfd < 0:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        if self.pid > 0 and self.template is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def _send(self, frame: dict[str, Any]) -> None:
        try:
            data = json.dumps(frame, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ToolArgumentError(
                "the arguments hold a lone surrogate, which is not valid Unicode"
            ) from None
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("the sandbox worker is gone")
        self._writer.write(_HEADER.pack(len(data)) + data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                msg = await read_frame(reader)
                fut = self._pending.get(msg.get("id", -1))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            # End of stream (it died), or a malformed frame: broken or hostile; stop it.
            self.kill_now()

    async def _drain(self, errors: asyncio.StreamReader) -> None:
        while chunk := await errors.read(4096):
            self._stderr.append(chunk)  # kept for start-up diagnostics; bounded

    def _fail_pending(self, reason: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ToolExecutionError(reason))


class _Template(_Worker):
    """A pre-warmed process the workers of a group are forked from (`tools._worker`).

    Started like a worker (same command and limits; plain process sandbox only, see
    `tools.sandbox`), it imports the tools and DuckDB once; a worker forked from it is ready
    in tens of milliseconds and shares the imported code's memory with its siblings, where a
    fresh interpreter costs ~0.3 s of CPU and 20–30 MB. Requests and replies travel over a
    ``SOCK_SEQPACKET`` pair (file descriptors attached): the worker's pipes go in, a pidfd
    of the worker comes back; the template reaps its workers and reports their statuses.

    Forks share the template's address-space layout (library bases, stack canary). So that
    crashes cannot be used to probe it, a template *retires* — forks no more, and stops once
    its last worker has — when one of its workers dies other than by the pool's stopping
    it, and after ``FORKS_PER_TEMPLATE`` forks; the group's next worker comes from a new
    one. A template that does not answer a fork within ``FORK_TIMEOUT_S`` is killed.
    """

    def __init__(self, command: Command, max_cpu_s: float) -> None:
        super().__init__(command, max_cpu_s)
        self.control, self._control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control.setblocking(False)
        self.workers: set[_Worker] = set()
        self.forks = 0
        self.retired = False
        self._replies: collections.deque[asyncio.Future[tuple[int, int]]] = collections.deque()
        self._forked: set[int] = set()  # pids (in its namespace) of workers not yet reported
        self._exits: dict[int, asyncio.Future[int | None]] = {}
        self._gone = False

    def _popen(self, pass_fds: tuple[int, ...] = ()) -> tuple[Any, Any, Any]:
        fd = self._control_child.fileno()
        self.command = replace(
            self.command, init={**self.command.init, "op": "template", "control_fd": fd}
        )
        try:
            pipes = super()._popen((fd,))
        except BaseException:
            self._closed()  # it never started: the group starts another next time
            raise
        finally:
            self._control_child.close()
        self.loop.add_reader(self.control.fileno(), self._on_control)
        self.exited.add_done_callback(lambda _: self._closed())
        return pipes

    @property
    def usable(self) -> bool:
        """Running, and taking forks (not retired)."""
        return self.alive and not self._gone and not self.retired

    async def fork(self, worker: _Worker) -> tuple[int, int, Any, Any, Any]:
        """Fork ``worker``'s process: its pidfd, its pid inside the template's PID
        namespace, and its stdin, stdout and stderr."""
        if not self.usable:
            raise ToolExecutionError("the sandbox worker template is gone")
        command = worker.command
        self.workers.add(worker)  # from now on: a retiring template waits for this fork
        (stdin_r, stdin_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
        try:
            request = json.dumps({"op": "fork", "cwd": command.cwd, "env": command.env})
            socket.send_fds(self.control, [request.encode()], [stdin_r, out_w, err_w])
            reply: asyncio.Future[tuple[int, int]] = self.loop.create_future()
            self._replies.append(reply)  # replies come in the order of the requests
            try:
                async with asyncio.timeout(FORK_TIMEOUT_S):
                    inner, pidfd = await reply
            except TimeoutError:
                self.stopping = True
                await self.kill("")
                raise ToolExecutionError(
                    "the sandbox worker template did not answer and was restarted; retry the call"
                ) from None
        except BaseException:
            for fd in (stdin_w, out_r, err_r):  # a worker forked anyway reads EOF and exits
                os.close(fd)
            self.workers.discard(worker)
            self._stop_if_done()
            raise
        finally:
            for fd in (stdin_r, out_w, err_w):
                os.close(fd)
        self._forked.add(inner)
        self.forks += 1
        if self.forks >= FORKS_PER_TEMPLATE:
            self.retired = True
        return pidfd, inner, open(stdin_w, "wb", 0), open(out_r, "rb", 0), open(err_r, "rb", 0)

    def exit_status(self, inner_pid: int) -> asyncio.Future[int | None]:
        """Resolved with the worker's exit status (None if the template died first)."""
        fut = self._exits.pop(inner_pid, None)  # the report came first
        if fut is None:
            fut = self.loop.create_future()
            if self._gone:
                fut.set_result(None)
            else:
                self._exits[inner_pid] = fut
        return fut

    def worker_exited(self, worker: _Worker, inner_pid: int = 0) -> None:
        """A worker of this template has exited (or died before it started: ``inner_pid``,
        whose status nobody will wait for): retire if it died on its own; stop when retired
        and none is left, or being forked."""
        self.workers.discard(worker)
        if inner_pid:
            self._forked.discard(inner_pid)
            self._exits.pop(inner_pid, None)
        if not worker.stopping:
            self.retired = True
        self._stop_if_done()

    def _stop_if_done(self) -> None:
        if self.retired and not self.workers and self.alive:
            self.stopping = True
            self.kill_now()

    def _on_control(self) -> None:
        while not self._gone:
            try:
                data, fds, _, _ = socket.recv_fds(self.control, 65536, 1)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            msg = _control_message(data)
            if msg.get("op") == "forked" and len(fds) == 1 and self._replies:
                reply = self._replies.popleft()
                if reply.done():  # its requester gave up
                    os.close(fds[0])
                else:
                    reply.set_result((msg["pid"], fds[0]))
                continue
            for fd in fds:
                os.close(fd)
            if msg.get("op") == "exited" and not fds:
                if msg["pid"] not in self._forked:
                    continue  # a worker nobody waits for (its requester gave up)
                self._forked.discard(msg["pid"])
                waiting = self._exits.pop(msg["pid"], None)
                if waiting is None:  # before its pidfd was seen: kept for exit_status
                    waiting = self._exits[msg["pid"]] = self.loop.create_future()
                if not waiting.done():
                    waiting.set_result(msg["status"])
            else:  # the end of the stream, or a template broken or hostile
                self.kill_now()
                self._closed()

    def _closed(self) -> None:
        """The template is gone: its workers died with it (``PR_SET_PDEATHSIG``)."""
        if self._gone:
            return
        self._gone = True
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.control.fileno())
        self.control.close()
        for reply in self._replies:
            if not reply.done():
                reply.set_exception(ToolExecutionError("the sandbox worker template died"))
        for status in self._exits.values():
            if not status.done():
                status.set_result(None)
        self._replies.clear()


class _Group:
    """The workers of one :class:`PoolKey`, forked from the group's template if ``fork``."""

    def __init__(
        self,
        key: PoolKey,
        command: Callable[[], Command],
        size: int,
        max_cpu_s: float,
        *,
        fork: bool = True,
    ) -> None:
        self.key, self.command, self.size, self.max_cpu_s = key, command, size, max_cpu_s
        self.fork = fork
        self.workers: list[_Worker] = []
        self.template: _Template | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        self.closed = False

    async def assign(self, run_id: str) -> _Worker:
        """A live worker for ``run_id``: a new one while the group has room and every
        worker is busy, else the least loaded."""
        async with self._lock:
            if self.closed:
                raise ToolExecutionError("the sandbox pool was closed")
            self.workers = [w for w in self.workers if w.alive]
            usable = [w for w in self.workers if not w.retiring]
            if len(usable) < self.size and all(w.runs for w in usable):
                template = await self._template()  # first: its failure leaves no home
                worker = _Worker(self.command(), self.max_cpu_s)
                worker.template = template
                await worker.start()
                self.workers.append(worker)
            else:
                worker = min(usable, key=lambda w: len(w.runs))
            worker.cancel_idle()
            worker.runs.add(run_id)
            return worker

    async def _template(self) -> _Template | None:
        """The group's live template (started on first use, replaced when it retires), or
        None if the group does not fork."""
        if not self.fork:
            return None
        if self.template is None or not self.template.usable:
            self.template = _Template(self.command(), self.max_cpu_s)
            await self.template.start()
        return self.template

    def released(self, worker: _Worker) -> None:
        """A run left ``worker``: a worker left with none retires (now, or when idle)."""
        if worker.runs or not worker.alive:
            return
        if worker.retiring:
            self._background(self._stop_idle(worker))
        else:
            worker.idle_after(IDLE_S, lambda: self._background(self._stop_idle(worker)))

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # held until done: a task nobody holds may be collected
        task.add_done_callback(self._tasks.discard)

    async def _stop_idle(self, worker: _Worker) -> None:
        async with self._lock:
            if not worker.runs:
                await self._stop(worker)

    async def _stop(self, worker: _Worker) -> None:
        """Stop ``worker``; the template too when no worker is left."""
        worker.stopping = True
        await worker.kill("")
        template = self.template
        if template is not None and not [w for w in self.workers if w.alive]:
            self.template = None
            template.stopping = True
            await template.kill("")

    async def aclose(self) -> None:
        async with self._lock:  # a worker being started joins the group first
            self.closed = True
            workers = [*self.workers, *([self.template] if self.template else [])]
            for worker in workers:
                worker.stopping = True
            await asyncio.gather(*(w.kill("the sandbox pool was closed") for w in workers))


class WorkerPool:
    """The groups of one event loop (worker pipes belong to the loop that opened them).

    >>> WorkerPool.for_loop  # doctest: +ELLIPSIS
    <bound method WorkerPool.for_loop of <class '...WorkerPool'>>
    """

    _pools: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WorkerPool]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.groups: dict[PoolKey, _Group] = {}

    @classmethod
    def for_loop(cls) -> WorkerPool:
        """The running loop's pool."""
        loop = asyncio.get_running_loop()
        if loop not in cls._pools:
            _reap_orphans()
            cls._pools[loop] = cls()
        return cls._pools[loop]

    def group(
        self,
        key: PoolKey,
        command: Callable[[], Command],
        size: int,
        max_cpu_s: float,
        *,
        fork: bool = True,
    ) -> _Group:
        if key not in self.groups:
            self.groups[key] = _Group(key, command, size, max_cpu_s, fork=fork)
        return self.groups[key]

    def forget(self, key: PoolKey) -> None:
        self.groups.pop(key, None)

    async def aclose(self) -> None:
        """Kill every worker of this pool (tests, and a service shutting down)."""
        groups, self.groups = list(self.groups.values()), {}
        await asyncio.gather(*(g.aclose() for g in groups))


_LIVE: set[_Worker] = set()
"""Workers started and not yet reaped, across event loops."""


def _reap_orphans() -> None:
    """Kill and reap the workers of event loops that are closed (each ``asyncio.run`` has
    its own loop; a loop's pidfd watchers die with it), so none is left as a zombie."""
    for worker in [w for w in _LIVE if w.loop.is_closed()]:
        _LIVE.discard(worker)
        worker.kill_now()  # a child's group while it is unreaped; a forked one by pidfd
        if worker.template is None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
        if worker.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(worker.pidfd)
        if worker.command.home:  # off the running loop, as when a worker is reaped
            threading.Thread(target=shutil.rmtree, args=(worker.command.home, True)).start()


@atexit.register
def _kill_all() -> None:
    """At exit, no worker outlives its parent (bubblewrap's --die-with-parent does the
    same for sandboxed ones; a plain worker would otherwise wait for its pipe to close)."""
    for worker in list(_LIVE):
        worker.kill_now()
        if worker.command.home:
            shutil.rmtree(worker.command.home, ignore_errors=True)


async def read_frame(stream: asyncio.StreamReader) -> dict[str, Any]:
    """One frame from a worker; ValueError for an oversized or non-object frame."""
    from tools._worker import MAX_FRAME_BYTES

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


def _control_message(data: bytes) -> dict[str, Any]:
    """A template's message if well-formed (integer ``pid``, and ``status`` when it
    reports an exit), else an empty dict."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(msg, dict) or type(msg.get("pid")) is not int:
        return {}
    if msg.get("op") == "exited" and type(msg.get("status")) is not int:
        return {}
    return msg


def pidfd_pid(pidfd: int) -> int:
    """The pid a pidfd refers to, as this process's PID namespace numbers it."""
    with open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:") and int(line.split()[1]) > 0:  # -1: it has exited
                return int(line.split()[1])
    raise ToolExecutionError("the sandbox worker exited before it started")


def describe_exit(exited: asyncio.Future[int | None]) -> str:
    rc = exited.result() if exited.done() else None
    if rc is None:
        return "exit status unknown: its template process died"
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-rc).name}"
    if rc > 128:  # bwrap reports a signalled child as 128 + signal
        with contextlib.suppress(ValueError):
            return f"exit status {rc}, {signal.Signals(rc - 128).name}"
    return f"exit status {rc}"


def error_class(name: str | None) -> type[Exception]:
    import agent.errors as errors

    cls = getattr(errors, name or "", None)
    if isinstance(cls, type) and issubclass(cls, errors.ToolError):
        return cls
    return ToolExecutionError
