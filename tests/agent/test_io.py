"""The I/O thread (agent._io): order, failures, cancelled callers, several loops, exit, fork."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

from agent._io import io, io_soon
from tests.agent._io_thread import hold_io_thread


async def test_calls_run_in_submission_order_and_return_their_results() -> None:
    seen: list[int] = []
    release = hold_io_thread()  # everything below queues up and runs as one batch
    for i in range(5):
        io_soon(seen.append, i)
    pending = [asyncio.ensure_future(io(lambda i=i: seen.append(10 + i) or i)) for i in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*pending) == [0, 1, 2, 3, 4]
    assert await io(len, seen) == 10
    assert seen == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


async def test_a_failure_reaches_its_caller_and_the_next_calls_still_run() -> None:
    def boom() -> None:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        await io(boom)
    assert await io(sum, [1, 2, 3]) == 6


async def test_a_failed_background_call_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise ValueError("disk full")

    with caplog.at_level(logging.ERROR, logger="agent._io"):
        io_soon(boom)
        await io(int)  # after it
    assert "a background write failed" in caplog.text and "disk full" in caplog.text


async def test_a_call_whose_caller_was_cancelled_before_it_started_is_skipped() -> None:
    ran: list[str] = []
    release = hold_io_thread()
    waiting = asyncio.ensure_future(io(ran.append, "skipped"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await io(ran.append, "ran")
    assert ran == ["ran"]


def test_each_loop_gets_its_own_results() -> None:
    """Calls from two threads, each with its own loop, queued into one batch."""
    release = hold_io_thread()
    results: dict[str, list[int]] = {}
    started = threading.Barrier(3)

    def client(name: str, base: int) -> None:
        async def main() -> list[int]:
            pending = [asyncio.ensure_future(io(lambda i=i: base + i)) for i in range(20)]
            await asyncio.sleep(0)
            started.wait(10)
            return await asyncio.gather(*pending)

        results[name] = asyncio.run(main())

    threads = [threading.Thread(target=client, args=(n, b)) for n, b in (("a", 0), ("b", 100))]
    for thread in threads:
        thread.start()
    started.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert results == {"a": list(range(20)), "b": list(range(100, 120))}


async def test_a_long_batch_hands_back_results_before_it_ends() -> None:
    """A caller whose call ran early in a long batch is answered before the batch ends."""
    release = hold_io_thread()
    first = asyncio.ensure_future(io(time.monotonic))
    slow = [asyncio.ensure_future(io(time.sleep, 0.01)) for _ in range(20)]  # ~0.2 s
    await asyncio.sleep(0)
    release.set()
    await first
    assert not all(s.done() for s in slow)  # handed back all at the end, they would be
    await asyncio.gather(*slow)


async def test_a_call_raising_stop_iteration_fails_alone() -> None:
    """A Future refuses StopIteration: the caller gets a RuntimeError, and the other results
    handed back with it still arrive."""
    release = hold_io_thread()
    bad = asyncio.ensure_future(io(next, iter([])))
    good = asyncio.ensure_future(io(sum, [1, 2]))
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(good, 5) == 3
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(bad, 5)


async def test_background_calls_in_a_long_batch_do_not_hold_back_results() -> None:
    """The 2 ms hand-back counts every call, not only the awaited ones."""
    ran: list[int] = []
    release = hold_io_thread()
    first = asyncio.ensure_future(io(int))
    await asyncio.sleep(0)  # queued before the background calls
    for i in range(20):  # ~0.2 s
        io_soon(lambda i=i: time.sleep(0.01) or ran.append(i))
    release.set()
    await first
    assert len(ran) < 20
    await io(int)


async def test_nothing_of_a_finished_batch_is_kept_while_the_thread_waits() -> None:
    """Nor by the exception of a call of the same batch that its caller keeps."""

    class Payload:
        pass

    def boom() -> None:
        raise ValueError("kept")

    payload = Payload()
    ref = weakref.ref(payload)
    release = hold_io_thread()
    failed = asyncio.ensure_future(io(boom))
    passed = asyncio.ensure_future(io(id, payload))
    await asyncio.sleep(0)
    release.set()
    await passed
    kept = await asyncio.gather(failed, return_exceptions=True)
    del payload, passed
    for _ in range(100):  # the thread may still be handing the batch back
        gc.collect()
        if ref() is None:
            break
        await asyncio.sleep(0.01)
    assert ref() is None
    assert isinstance(kept[0], ValueError)


def test_calls_still_queued_at_exit_run_before_the_interpreter_exits(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    code = (
        "import time, pathlib\n"
        "from agent._io import io_soon\n"
        "io_soon(time.sleep, 0.3)\n"
        f"io_soon(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
    assert marker.read_text() == "yes"


def test_a_call_after_the_thread_stopped_at_exit_fails_instead_of_hanging() -> None:
    """A non-daemon thread still running once the main thread has ended: as with
    ``concurrent.futures``, its call raises instead of waiting for a thread that is gone."""
    code = (
        "import asyncio, threading\n"
        "from agent._io import io\n"
        "asyncio.run(io(int))\n"
        "def late():\n"
        "    threading.main_thread().join()  # exiting: the I/O thread has stopped\n"
        "    try:\n"
        "        print(asyncio.run(asyncio.wait_for(io(sum, [1, 2]), 5)))\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__)\n"
        "threading.Thread(target=late).start()\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "RuntimeError", out.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_gets_an_io_thread_of_its_own() -> None:
    asyncio.run(io(int))  # the parent's thread is running
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here
        try:
            ok = asyncio.run(asyncio.wait_for(io(sum, [20, 22]), 10)) == 42
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
