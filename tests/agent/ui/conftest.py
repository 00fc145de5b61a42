"""The web UI on loopback, against the simulated model, for API and browser tests.

``ui`` serves one page for all of these tests (Gradio takes a few seconds to start) with a
workspace, a run store and the keyword-driven simulated model of :mod:`.policy`.
``chromium`` is Debian's chromium driven by Playwright; each test gets a new tab
(``page``), which starts its own conversation. Both skip with a reason when what they need is
missing; CI installs everything (``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.sim import Faults, FunctionPolicy, SimServer
from agent.testing import run_sim
from tests.agent.ui.policy import INJECTION, ui_policy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TOOL_FILE = '<script>window.__pwned=3</script><img src=x onerror="window.__pwned=4">'


@dataclass
class UI:
    """A served page: its URL, the simulator behind it, the app, the tools' folder."""

    url: str
    sim: SimServer
    app: Any
    workspace: Path
    store: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="package")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """The page on 127.0.0.1 with the simulated model (instant profile)."""
    pytest.importorskip("gradio", reason="the ui extra is not installed: pip install -e '.[ui]'")
    from agent.task import Task
    from agent.ui import build_app

    tmp = tmp_path_factory.mktemp("ui")
    workspace = tmp / "ws"
    workspace.mkdir()
    (workspace / "notes.txt").write_text("hello\n")
    (workspace / "inject.html").write_text(TOOL_FILE)
    task = Task(
        name="ui-test",
        input="-",
        workspace=workspace,
        store=str(tmp / ".agent"),
        tools={
            "enabled": ["list_files", "read_file", "write_file"],
            "files": {"allow_write": True},
        },
    )
    # Verbatim: the scripted answers are what the model said, fitting a constraint or not
    # (the JSON-mode test needs an answer that breaks its schema, as a server that ignored
    # the constraint would send).
    with run_sim(FunctionPolicy(ui_policy, verbatim=True), faults=Faults()) as sim:
        app = build_app(task, sim.url, simulated="(test policy)")
        url = app.launch("127.0.0.1", free_port(), quiet=True)
        try:
            yield UI(url.rstrip("/"), sim, app, workspace, tmp / ".agent")
        finally:
            app.close()


@pytest.fixture(autouse=True)
def _no_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults set by a test (a stall for Stop) never leak into the next."""
    yield
    if "ui" in request.fixturenames:
        ui: UI = request.getfixturevalue("ui")
        ui.sim.faults.stall_s, ui.sim.faults.stall_after_tokens = None, 0


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium under Playwright (skips when either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser_context(chromium: Any) -> Iterator[Any]:
    """One browser profile for the module: its tabs share the HTTP cache (fast page
    loads) and nothing else the page uses (the conversation lives in the URL)."""
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    yield context
    context.close()


@pytest.fixture
def page(
    browser_context: Any, ui: UI, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A new tab on the UI (a new conversation); a screenshot of it is saved at the end."""
    page = browser_context.new_page()
    page.set_default_timeout(20_000)
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith((ui.url, "data:")) else None,
    )
    page.outside_requests = outside  # type: ignore[attr-defined]
    yield page
    folder = Path(os.environ.get("AGENT_UI_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{request.node.name}.png"), full_page=True)
    page.close()


__all__ = ["INJECTION", "TOOL_FILE", "UI"]
