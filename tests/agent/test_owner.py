"""Owners of runs: this process, a forked child, a dead process, a reused pid."""

from __future__ import annotations

import dataclasses
import os

import pytest

from agent._owner import Owner, _start_time


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="start times need /proc")
def test_this_process_a_reused_pid_and_a_dead_one() -> None:
    me = Owner.current()
    assert me.pid == os.getpid() and me.start == _start_time(os.getpid()) is not None
    assert me.alive() is True
    # Our pid with another start time: the pid was reused, the owner is gone.
    assert dataclasses.replace(me, start=me.start - 1).alive() is False
    gone = Owner(me.host, 2**22 + 12345, None)  # above the largest pid_max: never a process
    assert gone.alive() is False
    assert dataclasses.replace(me, host=me.host + "-elsewhere").alive() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_is_its_own_owner() -> None:
    parent = Owner.current()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own pid and start time, and the parent is alive
        child = Owner.current()
        ok = (child.pid == os.getpid() != parent.pid and child.start == _start_time(child.pid)
              and child.alive() is True and parent.alive() is True)  # fmt: skip
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)
    child_owner = Owner(parent.host, pid, None)
    assert child_owner.alive() is False  # reaped: gone
