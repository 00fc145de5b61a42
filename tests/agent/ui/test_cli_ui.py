"""``agent ui``: its checks before serving, and the command serving a page for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from agent.cli import main
from tests.agent.ui.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
SALES = ROOT / "examples" / "sales_duckdb"


def invoke(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["ui", *args], env=env or None)
    return result.exit_code, result.output


def test_without_the_ui_extra_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.cli.ui.has_gradio", lambda: False)
    code, output = invoke()
    assert code == 2 and "pip install 'hermes-vllm-agent[ui]'" in output


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.com", "::"])
def test_a_non_loopback_host_needs_auth(host: str) -> None:
    code, output = invoke("--host", host)
    assert code == 2 and "--auth" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth", "nopassword"], "USER:PASSWORD"),
        (["--sim", str(SALES / "script.yaml"), "--model-url", "http://h:1"], "not both"),
        (["--port", "0"], "--port"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    code, output = invoke(*args)
    assert code == 2 and message in output


def test_a_bad_task_file_exits_2(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    bad = tmp_path / "t.yaml"
    bad.write_text("input: hi\nlimits: {max_stepz: 1}\n")
    code, output = invoke(str(bad))
    assert code == 2 and "max_stepz" in output


def test_agent_ui_serves_the_page_on_the_env_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from gradio_client import Client

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "AGENT_STORE": str(tmp_path / "s")}
    args = ["ui", str(SALES / "task.yaml"), "--sim", str(SALES / "script.yaml")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert "SIMULATED" in httpx.get(url).text
        client = Client(url, verbose=False)
        chat = client.predict("Which region?", "", api_name="/send")[0]
        assert "North had the highest total revenue" in chat[-1]["content"][0]["text"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"agent ui: http://127.0.0.1:{port}" in stderr and "SIMULATED" in stderr
    assert (tmp_path / "s" / "runs.db").is_file(), "runs go to the store agent runs reads"
