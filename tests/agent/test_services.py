"""Local services: a real Python HTTP server started, waited for, and stopped."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import httpx
import pytest

from agent.errors import ConfigError
from agent.services import run_services
from agent.task import ServiceSpec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_starts_waits_and_stops(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hi there")
    port = free_port()
    # The service writes its pid, so the test can see it is gone afterwards.
    code = (
        "import os, sys, http.server, functools;"
        "open('pid', 'w').write(str(os.getpid()));"
        "h = functools.partial(http.server.SimpleHTTPRequestHandler, directory='.');"
        f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h).serve_forever()"
    )
    url = f"http://127.0.0.1:{port}/hello.txt"
    spec = ServiceSpec(
        name="web",
        command=[sys.executable, "-c", code],
        cwd=Path("www"),
        ready_url=url,
        ready_timeout_s=10,
    )
    async with run_services([spec], tmp_path) as urls:
        assert urls == {"web": url}
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(url)).text == "hi there"
        pid = int((tmp_path / "www" / "pid").read_text())
        assert alive(pid)
    assert not alive(pid)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, trust_env=False)


async def test_env_is_passed_and_no_url_means_alive(tmp_path: Path) -> None:
    code = "import os, time; open('env', 'w').write(os.environ['GREETING']); time.sleep(60)"
    spec = ServiceSpec(name="w", command=[sys.executable, "-c", code], env={"GREETING": "hey"})
    async with run_services([spec], tmp_path) as urls:
        assert urls == {"w": None}
        for _ in range(100):  # the child may not have written yet
            if (tmp_path / "env").exists():
                break
            await asyncio.sleep(0.02)
    assert (tmp_path / "env").read_text() == "hey"


async def test_exit_before_ready_shows_last_output(tmp_path: Path) -> None:
    code = "import sys; print('starting'); print('boom: bad config', file=sys.stderr); sys.exit(3)"
    spec = ServiceSpec(
        name="bad",
        command=[sys.executable, "-c", code],
        ready_url=f"http://127.0.0.1:{free_port()}/",
        ready_timeout_s=10,
    )
    with pytest.raises(ConfigError) as info:
        async with run_services([spec], tmp_path):
            pytest.fail("must not get here")
    message = str(info.value)
    assert "service 'bad' exited with code 3" in message
    assert "boom: bad config" in message


async def test_timeout_kills_process_and_says_so(tmp_path: Path) -> None:
    code = (
        "import os, time; open('pid', 'w').write(str(os.getpid()));"
        "print('waiting', flush=True); time.sleep(60)"
    )
    url = f"http://127.0.0.1:{free_port()}/"
    spec = ServiceSpec(
        name="slow", command=[sys.executable, "-c", code], ready_url=url, ready_timeout_s=0.5
    )
    with pytest.raises(ConfigError) as info:
        async with run_services([spec], tmp_path):
            pass
    message = str(info.value)
    assert f"did not answer 2xx at {url} within 0.5s" in message
    assert "waiting" in message
    assert not alive(int((tmp_path / "pid").read_text()))


async def test_earlier_services_stopped_when_a_later_one_fails(tmp_path: Path) -> None:
    code = "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(60)"
    first = ServiceSpec(name="a", command=[sys.executable, "-c", code])
    second = ServiceSpec(name="b", command=["definitely-not-a-command-xyz"])
    with pytest.raises(ConfigError, match="service 'b': cannot run 'definitely-not-a-command-xyz'"):
        async with run_services([first, second], tmp_path):
            pass
    assert not alive(int((tmp_path / "pid").read_text()))


async def test_children_of_a_service_are_stopped_too(tmp_path: Path) -> None:
    # The service spawns a grandchild that ignores SIGTERM; the group kill must reach it.
    child = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "open('child', 'w').write(str(os.getpid())); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time;"
        f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"
    )
    spec = ServiceSpec(name="p", command=[sys.executable, "-c", parent])
    async with run_services([spec], tmp_path, stop_grace_s=0.2):
        for _ in range(200):
            if (tmp_path / "child").exists() and (tmp_path / "child").read_text():
                break
            await asyncio.sleep(0.02)
    pid = int((tmp_path / "child").read_text())
    # The grandchild is not ours to reap: it may linger briefly as a zombie of init.
    for _ in range(100):
        if not alive(pid) or _is_zombie(pid):
            break
        await asyncio.sleep(0.02)
    assert not alive(pid) or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
