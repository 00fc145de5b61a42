"""Security review of 91d939a: workers forked from a pre-warmed template (`tools._pool`,
`tools._worker`).

Each test states an isolation or lifecycle property that held when every worker was
started on its own (its own exec, and under bubblewrap its own sandbox: PID namespace,
/proc, /tmp) and that the first template design broke (each failed on 91d939a). Since,
bubblewrap workers are started on their own again, plain workers are forked, and a
template retires after a worker of it dies unbidden. A tool here plays the part of a worker
compromised by a malicious query or file (SECURITY.md: arbitrary code in a worker).

Worker tools must be importable by reference, so they live at module level: the pool's
own (``remember``, ``recall``, ``die``) in `tests.tools.test_pool`, the attacks here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agent.types import ToolCall
from tests.tools._procs import running
from tests.tools.test_pool import die, recall, remember
from tools import _pool
from tools.base import tool
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.sandbox import bwrap_available, close_pool

MODES = [False, *([True] if bwrap_available() else [])]
BWRAP = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not usable here")
_HEADER = struct.Struct(">I")
_AT_RANDOM = 25  # getauxval(3): address of 16 random bytes (stack canary, pointer guard)


# --- tools run in the worker -------------------------------------------------------------


@tool(sandbox="process")
def nap(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "rested"


@tool(sandbox="process")
def signal_parent(signum: int) -> str:
    """What a compromised worker can do: signal the process that forked it."""
    os.kill(os.getppid(), signum)
    return "sent"


@tool(sandbox="process")
def stop_parent_and_hang() -> str:
    """Stop the process that forked this worker, then never return (stuck in a call that
    no cancel hook can interrupt)."""
    os.kill(os.getppid(), signal.SIGSTOP)
    time.sleep(3600)
    return "unreachable"


@tool(sandbox="process")
def layout() -> dict:
    """This process's address-space layout and stack-protector secret."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    libc = next(line.split("-")[0] for line in maps if "libc.so" in line or "libc-" in line)
    stack = next(line.split("-")[0] for line in maps if "[stack]" in line)
    auxv = Path("/proc/self/auxv").read_bytes()
    secret = ""
    for i in range(0, len(auxv), 16):
        kind, value = struct.unpack_from("QQ", auxv, i)
        if kind == _AT_RANDOM:
            secret = ctypes.string_at(value, 16).hex()
    return {"libc": libc, "stack": stack, "at_random": secret, "pid": os.getpid()}


@tool(sandbox="process")
def tmp_note(write: bool) -> str:
    """Leave a note in /tmp, or read the one left there."""
    note = Path("/tmp/review-template-note")
    if write:
        note.write_text("left by an earlier worker")
        return "written"
    return note.read_text() if note.exists() else "absent"


@tool(sandbox="process")
def forge_sibling_replies() -> dict:
    """What a compromised worker can do under bubblewrap with a shared PID namespace: open
    a sibling worker's protocol pipe through /proc and answer that worker's calls (another
    run's) with its own text."""
    me, parent = os.getpid(), os.getppid()
    forged: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, me, parent):
            continue
        for fd in os.listdir(f"/proc/{entry}/fd"):
            try:
                flags = Path(f"/proc/{entry}/fdinfo/{fd}").read_text().split("flags:")[1]
            except (OSError, IndexError):
                continue
            if fd in ("0", "1", "2") or int(flags.split()[0], 8) & 3 != os.O_WRONLY:
                continue  # the protocol's out pipe only (its in pipe takes forged calls)
            try:
                pipe = os.open(f"/proc/{entry}/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                for rid in range(1, 6):
                    frame = json.dumps({"id": rid, "ok": True, "content": "INJECTED"}).encode()
                    os.write(pipe, _HEADER.pack(len(frame)) + frame)
                forged.setdefault(entry, []).append(int(fd))
            except OSError:
                pass
            finally:
                os.close(pipe)
    return {"forged": forged}


@tool(sandbox="process")
def open_parent_memory() -> dict:
    """What a compromised worker can do: open the memory of the process that forked it for
    writing (same uid, no capabilities on either side, no Yama here)."""
    parent = os.getppid()
    cmdline = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")[0].decode()
    try:
        os.close(os.open(f"/proc/{parent}/mem", os.O_RDWR))
        writable = True
    except OSError:
        writable = False
    return {"parent": cmdline, "writable": writable}


TOOLS = [remember, recall, nap, die, signal_parent, stop_parent_and_hang, layout, tmp_note]
TOOLS += [forge_sibling_replies, open_parent_memory]


# --- helpers -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def _fresh_pool() -> Any:
    yield
    await close_pool()


def _dispatcher(tmp: Path, run: str, use_bwrap: bool, **sandbox: Any) -> Dispatcher:
    ws = tmp / "ws"
    ws.mkdir(exist_ok=True)
    policies = ToolPolicies(
        workspace=ws, sandbox={"use_bwrap": use_bwrap, "pool_size": 2, **sandbox}
    )
    return Dispatcher(TOOLS, policies, run_id=run, artifacts_dir=tmp / "art" / run)


async def _call(d: Dispatcher, name: str, **args: Any) -> Any:
    return await d.call(ToolCall(name, args))


def _template(d: Dispatcher) -> Any:
    return d.worker._group.template


def _kill_template(template: Any) -> None:
    """Clean-up: a SIGKILLed template (stopped or not) takes its workers with it."""
    if template is not None and template.pidfd >= 0:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(template.pidfd, signal.SIGKILL)


# --- isolation: what a forked worker shares with its template and siblings ----------------


@BWRAP
async def test_bwrap_worker_cannot_forge_a_sibling_workers_replies(tmp_path: Path) -> None:
    """Under bubblewrap every worker had its own PID namespace and /proc. Forked workers
    share the template's, so worker A opens /proc/<B>/fd/<protocol out> (same uid, no
    capabilities needed, the target is dumpable) and answers run B's call in flight."""
    async with (
        _dispatcher(tmp_path, "run-a", True) as a,
        _dispatcher(tmp_path, "run-b", True) as b,
    ):
        assert (await _call(a, "remember", value="alpha")).ok
        in_flight = asyncio.ensure_future(_call(b, "nap", seconds=3))  # run B's own worker
        for _ in range(100):
            if b.worker._worker is not None:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # B's worker has started the call
        assert a.worker.pid != b.worker.pid, "two workers of one group"
        attack = await _call(a, "forge_sibling_replies")
        answered = await in_flight
    assert answered.content == "rested", (
        f"run B got a reply written by run A's worker: {answered.content!r} ({attack.content})"
    )


@BWRAP
async def test_bwrap_worker_cannot_write_the_template_memory(tmp_path: Path) -> None:
    """Under bubblewrap a worker's parent was its own sandbox's init. Now it is the
    template, whose memory it can open for writing: code planted there is inherited by
    every worker forked later, including the fresh ones that replace a crashed or killed
    worker, for the group's life (other runs of the same workspace and policies)."""
    async with _dispatcher(tmp_path, "run-a", True) as a:
        reach = json.loads((await _call(a, "open_parent_memory")).content)
    assert not ("python" in reach["parent"] and reach["writable"]), reach


@BWRAP
async def test_bwrap_worker_cannot_kill_its_siblings(tmp_path: Path) -> None:
    """A worker that kills the process that forked it took nothing else with it under
    bubblewrap (its parent was its own sandbox's init, which ignores signals from inside).
    Now its parent is the template: the sibling worker serving run B dies with it, and run
    B loses its state."""
    async with (
        _dispatcher(tmp_path, "run-a", True) as a,
        _dispatcher(tmp_path, "run-b", True) as b,
    ):
        assert (await _call(a, "remember", value="alpha")).ok
        assert (await _call(b, "remember", value="beta")).ok
        assert a.worker.pid != b.worker.pid, "two workers of one group"
        await _call(a, "signal_parent", signum=int(signal.SIGKILL))
        await asyncio.sleep(1)
        after = await _call(b, "recall")
    assert after.ok and json.loads(after.content)["value"] == "beta", (
        f"run B's worker was killed by run A's worker: {after.content} (starts={b.worker.starts})"
    )


@BWRAP
async def test_bwrap_private_tmp_does_not_outlive_the_worker(tmp_path: Path) -> None:
    """Each bubblewrap worker had a private /tmp, gone with it. Forked workers share the
    template's tmpfs: what one worker leaves there (another run's data, or memory the tmpfs
    holds) is seen by the next worker, even the fresh one started after a crash."""
    async with _dispatcher(tmp_path, "run-a", True) as a:
        assert (await _call(a, "tmp_note", write=True)).content == "written"
        assert (await _call(a, "die")).error == "execution"
        seen = await _call(a, "tmp_note", write=False)
        assert a.worker.starts == 2, "a new worker"
    assert seen.content == "absent", f"the new worker read the old one's /tmp: {seen.content!r}"


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_restarted_worker_gets_a_fresh_layout_and_canary(
    tmp_path: Path, use_bwrap: bool
) -> None:
    """A worker started with exec got fresh ASLR offsets and a fresh stack canary. A fork
    copies the template's: every worker of the group, and the one that replaces a crashed
    worker, has the same libc base, stack and AT_RANDOM bytes, so crashes become an oracle
    to brute-force them (a malicious query or file can crash DuckDB repeatedly)."""
    async with _dispatcher(tmp_path, "run-a", use_bwrap) as a:
        first = json.loads((await _call(a, "layout")).content)
        assert (await _call(a, "die")).error == "execution"
        second = json.loads((await _call(a, "layout")).content)
        assert a.worker.starts == 2, "a new worker"
    same = [k for k in ("libc", "stack", "at_random") if first[k] == second[k]]
    assert not same, f"the replacement worker shares the crashed one's {same}: {first[same[0]]}"


# --- lifecycle: the parent trusts the template to report exits ----------------------------


@pytest.mark.parametrize("use_bwrap", [False])  # templates: plain workers only
async def test_a_worker_that_stops_its_template_cannot_hang_its_call(
    tmp_path: Path, use_bwrap: bool
) -> None:
    """A stuck call gets ToolTimeout at call_timeout_s + CANCEL_GRACE_S: the worker is
    killed. A forked worker's ``exited`` is set only when the template reports the status;
    a worker that SIGSTOPs its template first makes ``_Worker.kill`` await forever."""
    async with _dispatcher(tmp_path, "run-a", use_bwrap, call_timeout_s=1) as a:
        template = None
        try:
            assert (await _call(a, "remember", value="alpha")).ok
            template = _template(a)
            try:
                result = await asyncio.wait_for(_call(a, "stop_parent_and_hang"), 15)
            except TimeoutError:
                pytest.fail("the call hung past its timeout (1 s + 2 s grace) for 15 s")
            assert result.error == "timeout", result.content
        finally:
            _kill_template(template)


@pytest.mark.parametrize("use_bwrap", [False])  # templates: plain workers only
async def test_a_stopped_template_does_not_block_the_group(
    tmp_path: Path, use_bwrap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run A's worker SIGSTOPs its template and returns. When that worker idles out,
    ``_Group._stop_idle`` holds the group lock while ``kill`` awaits the status the stopped
    template never sends, so every later run of the group hangs in ``assign`` (which no
    call timeout bounds)."""
    monkeypatch.setattr(_pool, "IDLE_S", 0.2)
    template = None
    try:
        async with _dispatcher(tmp_path, "run-a", use_bwrap) as a:
            assert (await _call(a, "signal_parent", signum=int(signal.SIGSTOP))).ok
            template = _template(a)
        await asyncio.sleep(1.5)  # run A's worker idles out
        async with _dispatcher(tmp_path, "run-b", use_bwrap) as b:  # the same group
            try:
                result = await asyncio.wait_for(_call(b, "recall"), 15)
            except TimeoutError:
                pytest.fail("a new run of the group hung for 15 s on its first call")
            assert result.ok, result.content
    finally:
        _kill_template(template)


@pytest.mark.parametrize("use_bwrap", [False])  # templates: plain workers only
async def test_a_template_whose_last_worker_died_stops(
    tmp_path: Path, use_bwrap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template stops with the group's last worker only when that worker idles out
    (``_Group._stop``). A worker that died (a crash, or killed at a call's timeout) never
    goes through ``_stop``, so once its run ends the template lives on with no worker until
    the pool closes: one pre-warmed process per such group, for the service's life."""
    monkeypatch.setattr(_pool, "IDLE_S", 0.2)
    async with _dispatcher(tmp_path, "run-a", use_bwrap) as a:
        assert (await _call(a, "remember", value="alpha")).ok
        template = _template(a)
        assert (await _call(a, "die")).error == "execution"
    for _ in range(100):
        if not template.alive and not running(template.pid):
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the template (pid {template.pid}) outlives every worker of its group")


@pytest.mark.parametrize("use_bwrap", [False])  # templates: plain workers only
async def test_a_worker_killed_with_its_template_is_not_reported_as_sighup(
    tmp_path: Path, use_bwrap: bool
) -> None:
    """When the template dies first, its workers' statuses are -1 ("unknown");
    ``describe_exit`` reads -1 as signal 1 and tells the run its worker was killed by
    SIGHUP (it was SIGKILLed through PR_SET_PDEATHSIG)."""
    async with _dispatcher(tmp_path, "run-a", use_bwrap) as a:
        assert (await _call(a, "remember", value="alpha")).ok
        template = _template(a)
        in_flight = asyncio.ensure_future(_call(a, "nap", seconds=5))
        await asyncio.sleep(0.5)
        _kill_template(template)
        result = await in_flight
    assert result.error == "execution", result.content
    assert "SIGHUP" not in result.content, result.content


def test_a_failed_fork_leaves_no_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain worker's home folder (``Command.home``) is removed when its process exits.
    A forked worker's Command (and home) is made before ``fork``; when the fork fails (the
    template is stopped or gone, or the worker died before ``pidfd_pid``), no exit watcher
    was set up and nothing removes it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the parent's mkdtemp

    async def scenario() -> str:
        template = None
        try:
            async with _dispatcher(tmp_path, "run-a", False) as a:
                assert (await _call(a, "remember", value="alpha")).ok
                template = _template(a)
                os.kill(template.pid, signal.SIGSTOP)  # or gone, or slow: fork() fails
                monkeypatch.setattr(_pool, "FORK_TIMEOUT_S", 1.0)
                async with _dispatcher(tmp_path, "run-b", False) as b:  # needs a 2nd worker
                    failed = await _call(b, "recall")
                    return failed.content
        finally:
            _kill_template(template)
            await close_pool()

    content = asyncio.run(scenario())
    assert "template did not answer and was restarted" in content, content
    for _ in range(100):
        if not list(tmp_path.glob("agent-worker-home-*")):
            return
        time.sleep(0.05)
    left = sorted(p.name for p in tmp_path.glob("agent-worker-home-*"))
    pytest.fail(f"home folders left behind after a failed fork: {left}")
