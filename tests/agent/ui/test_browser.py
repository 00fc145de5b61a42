"""The web UI in a real browser: Debian's chromium driven by Playwright, on loopback.

Each test is a new visitor (a fresh browser context) on the page served by the ``ui``
fixture, whose model is the keyword-driven simulator of :mod:`tests.agent.ui.policy`.
Screenshots are saved at the end of each test (``AGENT_UI_SCREENSHOTS`` to keep them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from agent.runs import RunStore
from tests.agent.ui.conftest import UI
from tests.agent.ui.policy import INJECTION, LOOK

pytestmark = [pytest.mark.browser]

# Records, for every message of the chat, each distinct text it showed (a tool box's
# title line included), so a test can see states that lasted a few milliseconds.
_RECORDER = """() => {
  window.__seen = [];
  const chat = document.querySelector('#chat');
  const record = () => {
    for (const m of chat.querySelectorAll('[data-testid="bot"]')) {
      const t = m.innerText;
      if (window.__seen[window.__seen.length - 1] !== t) window.__seen.push(t);
    }
  };
  new MutationObserver(record).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def open_page(page: Any, ui: UI, query: str = "") -> None:
    page.goto(ui.url + "/" + query)
    page.wait_for_selector("#chat")
    expect = _expect()
    expect(page.locator("#model-status textarea")).to_have_value(re.compile("reachable"))


def ask(page: Any, text: str) -> None:
    page.fill("#message textarea", text)
    page.click("#send-btn")


def wait_status(page: Any, pattern: str, timeout: float = 15_000) -> None:
    _expect()(page.locator("#status textarea")).to_have_value(re.compile(pattern), timeout=timeout)


def chat_text(page: Any) -> str:
    return page.inner_text("#chat")


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_the_page_loads_with_its_controls_and_the_simulated_banner(page: Any, ui: UI) -> None:
    open_page(page, ui)
    banner = page.locator("#sim-banner")
    assert "SIMULATED" in banner.inner_text() and banner.is_visible()
    body = page.inner_text("body")
    for control in ("System prompt", "Mode", "Function calling", "JSON", "Tools", "Temperature"):
        assert control in body
    assert "list_files — lists the workspace" in body
    assert "131,072 tokens" in page.locator("#model-status textarea").input_value()
    assert page.outside_requests == [], "the page fetches nothing from outside the server"


def slow_tool(monkeypatch: pytest.MonkeyPatch, name: str, seconds: float) -> None:
    """Calls of ``name`` take ``seconds`` longer (the page runs in this process), so their
    box stays pending long enough to be seen."""
    import asyncio

    from tools.dispatch import Dispatcher

    call = Dispatcher.call

    async def slow(self: Dispatcher, tool_call: Any) -> Any:
        if tool_call.name == name:
            await asyncio.sleep(seconds)
        return await call(self, tool_call)

    monkeypatch.setattr(Dispatcher, "call", slow)


def tool_box(page: Any, title: str) -> Any:
    """A tool call's collapsible message: Gradio draws ``metadata`` as a ``.thought-group``
    whose title line holds the title, a ``.loading-spinner`` while the status is
    ``pending``, and a ``.duration`` span with the log and the duration, e.g. ``ok (2.0ms)``."""
    return page.locator("#chat .thought-group").filter(has_text=title)


def test_a_question_streams_text_then_a_tool_box_turns_done_then_the_answer(
    page: Any, ui: UI, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = _expect()
    ui.sim.faults.stall_s, ui.sim.faults.stall_after_tokens = 1.0, 2  # visible streaming
    # list_files takes a few ms: under the page's update coalescing (BURST_S) its pending
    # state might never be drawn. Slowed down, the box is seen pending, then done.
    slow_tool(monkeypatch, "list_files", 3.0)
    open_page(page, ui)
    page.evaluate(_RECORDER)
    ask(page, "Which files are there?")
    box = tool_box(page, "Tool call: list_files")
    expect(box.locator(".title .loading-spinner")).to_be_visible(timeout=15_000)
    expect(box.locator(".title .duration")).to_have_text("running (dispatched early)")
    # Done: the spinner goes; the title line reads the log and the duration, "ok (0.6s)"
    # (Gradio writes 2s, 0.6s or 12.0ms).
    done = re.compile(r"^ok \(\d+(\.\d)?m?s\)$")
    expect(box.locator(".title .duration")).to_have_text(done, timeout=15_000)
    expect(box.locator(".title .loading-spinner")).to_have_count(0)
    wait_status(page, "^Done")
    seen = page.evaluate("window.__seen")
    assert any(LOOK.startswith(s) and len(s) < len(LOOK) for s in seen if s), "streamed"
    assert "The workspace holds notes.txt." in chat_text(page)
    metrics = page.inner_text("#metrics")
    assert "TTFT ms" in metrics and "tok/s" in metrics and "cached" in metrics
    assert re.search(r"\|?\s*1\s+done", metrics.replace("\t", " ")), metrics
    assert "?thread=ui_" in page.url
    box.locator(".title").click()  # the box opens: arguments and result
    expect(box).to_contain_text("result (ok)")
    assert "notes.txt" in box.inner_text()


def test_json_mode_validates_the_schema_as_you_type_and_shows_the_object(page: Any, ui: UI) -> None:
    expect = _expect()
    open_page(page, ui)
    page.get_by_label("JSON", exact=True).check()
    editor = page.locator("#schema-status textarea")
    expect(editor).to_have_value("valid JSON Schema")
    page.locator(".cm-content").first.click()
    page.keyboard.press("Control+a")
    # The editor closes brackets and quotes as one types, so the half-typed schema reads
    # as broken JSON or as JSON that is no schema ("objec"), depending on timing.
    page.keyboard.type('{"type": "objec')
    expect(editor).to_have_value(re.compile("^invalid: not (JSON|a valid JSON Schema)"))
    page.keyboard.type('t", "required": ["city"]}')
    expect(editor).to_have_value("valid JSON Schema")
    ask(page, "Weather in Paris as JSON")
    wait_status(page, "^Done")
    expect(page.locator("#json-status textarea")).to_have_value(re.compile("^valid"))
    assert '"city": "Paris"' in chat_text(page), "shown formatted (indented)"


def test_approve_runs_the_write_and_deny_refuses_it(page: Any, ui: UI) -> None:
    expect = _expect()
    target = ui.workspace / "out.txt"
    target.unlink(missing_ok=True)
    open_page(page, ui)
    ask(page, "Please write the file")
    wait_status(page, "approval")
    expect(page.locator("#approval-text")).to_be_visible()
    assert "write_file" in page.locator("#approval-text textarea").input_value()
    assert "Tool call: write_file\nawaiting approval" in chat_text(page), "the box, pending"
    page.click("#approve-btn")
    wait_status(page, "^Done")
    assert target.read_text() == "hello" and "Finished with the file." in chat_text(page)
    expect(page.locator("#approval-text")).to_be_hidden()

    target.unlink()
    page.click("#new-btn")
    ask(page, "Please write the file again")
    wait_status(page, "approval")
    page.click("#deny-btn")
    wait_status(page, "^Done")
    assert not target.exists()
    assert "denied" in chat_text(page) and "Finished with the file." in chat_text(page)


def test_stop_interrupts_a_run_and_resume_finishes_it(page: Any, ui: UI) -> None:
    expect = _expect()
    ui.sim.faults.stall_s, ui.sim.faults.stall_after_tokens = 30.0, 3
    open_page(page, ui)
    page.evaluate(_RECORDER)
    ask(page, "Tell me a long story")
    page.wait_for_function("window.__seen.some(t => t.startsWith('Echo'))")
    expect(page.locator("#stop-btn")).to_be_enabled()
    page.click("#stop-btn")
    wait_status(page, "^Stopped")
    thread = page.url.split("thread=")[1]
    runs = [r for r in RunStore(ui.store / "runs.db").list() if r.thread_id == thread]
    assert [r.status for r in runs] == ["interrupted"]
    ui.sim.faults.stall_s = None
    page.click("#resume-btn")
    wait_status(page, "^Done")
    assert "word word" in chat_text(page)


def test_injected_html_and_scripts_stay_text(page: Any, ui: UI) -> None:
    open_page(page, ui)
    ask(page, "inject " + INJECTION)
    wait_status(page, "^Done")
    text = chat_text(page)
    assert text.count('<img src=x onerror="window.__pwned=1">') == 2, "input and answer, as text"
    assert "**stars**" in text, "no markdown either"
    page.click("#chat .thought-group .title")  # the tool result (a file with a script)
    assert "<script>window.__pwned=3</script>" in chat_text(page)
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#chat img, #chat script, #chat b").count() == 0


def test_reload_keeps_the_conversation_and_a_new_tab_starts_its_own(
    page: Any, ui: UI, chromium: Any
) -> None:
    open_page(page, ui)
    ask(page, "Remember the word kumquat")
    wait_status(page, "^Done")
    url = page.url
    page.reload()
    page.wait_for_selector("#chat")
    _expect()(page.locator("#chat")).to_contain_text("Remember the word kumquat")
    assert page.url == url and "Echo: Remember" in chat_text(page)
    assert "1" in page.inner_text("#metrics")

    other = page.context.new_page()  # a second tab: its own, empty conversation
    other.goto(ui.url + "/")
    other.wait_for_selector("#chat")
    other.wait_for_timeout(500)
    assert "kumquat" not in other.inner_text("#chat")
    ask(other, "A second tab")
    wait_status(other, "^Done")
    assert other.url != url and "kumquat" not in other.inner_text("#chat")
    other.close()


def test_the_sales_example_as_readme_shows_it(chromium: Any, tmp_path: Path) -> None:
    """README's screenshot (docs/ui.png): README's example task, simulated, in the page."""
    from agent.sim import ScriptPolicy
    from agent.task import load_task
    from agent.testing import run_sim
    from agent.ui import build_app
    from tests.agent.ui.conftest import free_port

    example = Path(__file__).resolve().parents[3] / "examples" / "sales_duckdb"
    task = load_task(example / "task.yaml").model_copy(update={"store": str(tmp_path / "s")})
    with run_sim(ScriptPolicy.from_file(example / "script.yaml")) as sim:
        app = build_app(task, sim.url, simulated="replays examples/sales_duckdb/script.yaml")
        url = app.launch("127.0.0.1", free_port(), quiet=True)
        page = chromium.new_page(viewport={"width": 1440, "height": 1020})
        try:
            page.goto(url)
            page.wait_for_selector("#chat")
            ask(page, task.render_input())
            wait_status(page, "^Done")
            page.locator("#chat .thought-group .title").nth(1).click()  # the SQL and its rows
            _expect()(page.locator("#chat")).to_contain_text("total_revenue")
            page.wait_for_timeout(600)  # the box's opening animation
            page.locator("#chat .bubble-wrap").evaluate("e => { e.scrollTop = e.scrollHeight; }")
            assert "North had the highest total revenue in 2026" in chat_text(page)
            folder = Path(os.environ.get("AGENT_UI_SCREENSHOTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / "ui.png"))
        finally:
            page.close()
            app.close()
