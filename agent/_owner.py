"""Which process owns a run, and whether that process is still alive.

A run row in the store says ``running`` until its process records how it ended. A process
killed with ``kill -9`` (or lost with its machine) never does, so the row records its owner
— host name, pid, and the pid's start time — and readers check it: on the same host, a
run whose pid is gone, or now belongs to a younger process (pids are reused), is
``interrupted``. On Linux the start time comes from ``/proc/PID/stat``; elsewhere only the
pid is checked. A row from another host cannot be checked and is left as it is.

>>> owner = Owner.current()
>>> owner.alive()
True
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["Owner"]


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start: int | None
    """The process's start time in clock ticks since boot (Linux), None elsewhere."""

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, _own_start(pid))

    def alive(self) -> bool | None:
        """True or False on this host; None when the owner ran on another host."""
        if self.host != socket.gethostname():
            return None
        if self.pid == os.getpid() and self.start == _own_start(self.pid):
            return True  # this process: no need to read /proc
        start = _start_time(self.pid)
        if start is not None or self.start is not None:
            return start is not None and start == self.start
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
        return True


_own: tuple[int, int | None] = (0, None)


def _own_start(pid: int) -> int | None:
    """This process's start time, read once per pid (a forked child reads its own)."""
    global _own
    if _own[0] != pid:
        _own = (pid, _start_time(pid))
    return _own[1]


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces and parentheses: split after it.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])
