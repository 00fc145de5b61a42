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


def served(monkeypatch: pytest.MonkeyPatch, *args: str, **env: str | None) -> dict[str, object]:
    """What ``agent ui ARGS`` would serve (``_serve``'s arguments), without serving."""
    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr("agent.cli.ui.has_gradio", lambda: True)
    monkeypatch.setattr("agent.cli.ui._serve", lambda *a: calls.append(a))
    unset = dict.fromkeys(("GRADIO_SERVER_PORT", "AGENT_UI_AUTH", "AGENT_MODEL_URL"))
    result = CliRunner().invoke(main, ["ui", *args], env={**unset, **env})
    assert result.exit_code == 0, result.output
    (call,) = calls
    return dict(zip(("base", "model_url", "script", "host", "port", "login"), call, strict=True))


@pytest.mark.parametrize(
    ("args", "env", "port"),
    [
        ([], {}, 7861),
        ([], {"GRADIO_SERVER_PORT": "8123"}, 8123),
        (["--port", "8124"], {"GRADIO_SERVER_PORT": "8123"}, 8124),
        (["--port", "8124"], {}, 8124),
    ],
)
def test_the_port_is_port_else_gradio_server_port_else_7861(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], port: int
) -> None:
    assert served(monkeypatch, *args, **env)["port"] == port


def test_a_bad_gradio_server_port_exits_2() -> None:
    code, output = invoke(GRADIO_SERVER_PORT="http")
    assert code == 2 and "(env var: 'GRADIO_SERVER_PORT'): 'http'" in output


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--auth", "ada:s3:cret"], {}), ([], {"AGENT_UI_AUTH": "ada:s3:cret"})],
)
def test_auth_comes_from_the_option_or_agent_ui_auth(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> None:
    chosen = served(monkeypatch, *args, **env)
    assert chosen["login"] == ("ada", "s3:cret") and chosen["host"] == "127.0.0.1"
    assert served(monkeypatch)["login"] is None, "no login by default"


def test_with_auth_the_page_and_its_api_ask_for_a_login(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``agent ui --auth USER:PASSWORD`` for real (in this process): without the login the
    page's config and API answer 401 and ``gradio_client`` cannot connect; with it, both
    work."""
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    port, checked = free_port(), []
    url = f"http://127.0.0.1:{port}"

    def check_while_serving() -> None:  # in place of waiting for Ctrl-C
        with httpx.Client(base_url=url, trust_env=False) as anonymous:
            assert "not authenticated" in anonymous.get("/config").text.lower()
            for path in ("/config", "/gradio_api/info"):
                assert anonymous.get(path).status_code == 401, path
            call = anonymous.post("/gradio_api/call/check_schema", json={"data": ["{}"]})
            assert call.status_code == 401
            bad = anonymous.post("/login", data={"username": "ada", "password": "wrong"})
            assert bad.status_code == 400 and anonymous.get("/config").status_code == 401
        with pytest.raises(AuthenticationError, match="credentials were not provided"):
            Client(url, verbose=False)
        with httpx.Client(base_url=url, trust_env=False) as user:
            login = user.post("/login", data={"username": "ada", "password": "s3cret"})
            assert login.status_code == 200 and user.get("/config").status_code == 200
        client = Client(url, verbose=False, auth=("ada", "s3cret"))
        assert client.predict("{}", api_name="/check_schema") == "valid JSON Schema"
        checked.append(True)

    monkeypatch.setattr("agent.cli.ui._wait_for_signal", check_while_serving)
    args = ["ui", "--sim", str(SALES / "script.yaml"), "--port", str(port)]
    args += ["--auth", "ada:s3cret", "--store", str(tmp_path / "s")]
    result = CliRunner().invoke(main, args, env={"AGENT_MODEL_URL": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0 and checked == [True], result.output
