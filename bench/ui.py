"""Benchmark of the web UI: what the page adds to a run, and how fast tokens reach the DOM.

    python bench/ui.py [--quick] [--json]

(a) **Wall overhead** of the page's API. The same scripted task — ``STEPS`` steps, each a
    sentence and a ``search_files`` call (real tool, real sandbox), then an answer — runs on
    the ``h100`` profile (modeled GPU time) through ``agent run``'s own path
    (``Agent.from_task(task).run(...)``, in this process) and through the page's API
    (``/send`` over HTTP as a browser calls it: join Gradio's queue, read every streamed
    update from its server-sent events to the end; against ``agent ui`` serving the same
    task file in a child process). Runs alternate; medians are compared. (``gradio_client``
    would add its own polling, up to 50 ms a message: a cost of that client, not of the
    page.)
    Both reuse a warm agent, as a long-running ``agent ui`` does; a cold ``agent run``
    process (interpreter start and imports included) is shown for reference.
(b) **Token → DOM latency** on the ``instant`` profile: the simulated model answers with
    numbered markers; the page's model client notes when each marker arrives from the
    simulator (a backend wrapped at the backend seam; loopback, so this is when it left
    the simulator, within a fraction of a millisecond), and a ``MutationObserver`` in
    Debian's chromium (Playwright) notes when it appears in the page's DOM. The two clocks
    are aligned by the round trip with the lowest latency. p50/p95/max over all markers;
    the ``h100`` profile (~200 tokens/s, as a real GPU streams) for reference.

The simulator runs in a child process. ``--json`` prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.sim.policy import SimRequest
from bench._common import ROOT, SimChild

STEPS = 5
_USER = "<|im_start|>user\n"
_MARK = re.compile(r"(t\d+m\d{3})(?=[ .])")
_SEND = ("tools", "", ["search_files"], "", 0.7, 1.0, 512, "", "auto")
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


def policy(request: SimRequest) -> str:
    """The simulated model: ``steps N`` (N calls, then an answer) or ``markers N tK``."""
    prompt = request.prompt
    start = prompt.rfind(_USER)
    text = prompt[start + len(_USER) : prompt.find("<|im_end|>", start)]
    step = prompt.count("<|im_start|>assistant", start) - 1
    if m := re.search(r"markers (\d+) (t\d+)", text):
        return " ".join(f"{m.group(2)}m{i:03d}" for i in range(int(m.group(1)))) + "."
    n = int(re.search(r"steps (\d+)", text).group(1))  # type: ignore[union-attr]
    if step < n:
        call = json.dumps({"name": "search_files", "arguments": {"pattern": f"hello {step}"}})
        return f"Step {step + 1}: I will search the workspace once more.\n" + _wrap(call)
    return f"Done: the workspace was listed {n} times and holds one file."


def _wrap(call: str) -> str:
    return f"<tool_call>\n{call}\n</tool_call>"


# --- (a) wall overhead ------------------------------------------------------------------

_UI_CHILD = """
import sys
sys.path.insert(0, {root!r})
from agent.task import load_task
from agent.ui import build_app
app = build_app(load_task({task!r}), {url!r})
print(app.launch("127.0.0.1", {port}, quiet=True), flush=True)
sys.stdin.read()
app.close()
"""


def _task_file(tmp: Path) -> Path:
    (tmp / "ws").mkdir()
    (tmp / "ws" / "notes.txt").write_text("hello\n")
    task = tmp / "task.yaml"
    task.write_text(
        "name: bench-ui\ninput: steps 5\ntools: {enabled: [search_files]}\nworkspace: ws\n"
        f"store: {tmp / '.agent'}\nlimits: {{max_steps: 12}}\n"
    )
    return task


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PageAPI:
    """The page's HTTP API as a browser uses it: join the queue, read the event stream."""

    def __init__(self, url: str) -> None:
        import httpx

        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=120, trust_env=False)
        self.fns: dict[str, int] = {}

    async def call(self, api_name: str, *data: Any) -> list[Any]:
        """Run one endpoint to its end; returns its last outputs (and counts updates)."""
        if not self.fns:  # the page's endpoints, once (as a browser loads them)
            config = (await self.http.get("/config")).json()
            self.fns = {d.get("api_name"): d["id"] for d in config["dependencies"]}
        fn = self.fns[api_name]
        session = uuid.uuid4().hex
        body = {"data": list(data), "fn_index": fn, "session_hash": session}
        (await self.http.post("/gradio_api/queue/join", json=body)).raise_for_status()
        async with self.http.stream(
            "GET", "/gradio_api/queue/data", params={"session_hash": session}
        ) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        return message["output"]["data"]
        raise RuntimeError(f"{api_name}: the event stream ended without a result")

    async def aclose(self) -> None:
        await self.http.aclose()


async def overhead(reps: int) -> dict[str, Any]:
    """Medians of the same task through ``agent run``'s path and through the page's API."""
    from agent.api import Agent

    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    task = _task_file(tmp)
    with SimChild("bench.ui:policy", profile="h100") as sim:
        code = _UI_CHILD.format(root=str(ROOT), task=str(task), url=sim.url, port=_free_port())
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        page = PageAPI(child.stdout.readline().strip())
        agent = Agent.from_task(task, model_url=sim.url)

        async def ui_once() -> float:
            t = time.perf_counter()
            out = await page.call("send", f"steps {STEPS}", "", *_SEND, sim.url)
            assert out[2] == "Done.", out[2]
            return time.perf_counter() - t

        async def run_once() -> float:
            t = time.perf_counter()
            result = await agent.run(f"steps {STEPS}")
            assert result.ok and result.tool_calls == STEPS, result
            return time.perf_counter() - t

        runs, uis = [], []
        try:
            await run_once(), await ui_once()  # warm both
            for _ in range(reps):
                runs.append(await run_once())
                uis.append(await ui_once())
        finally:
            await agent.aclose()
            await page.aclose()
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=60)
        cold = _cold_agent_run(task, sim.url)
    run_s, ui_s = statistics.median(runs), statistics.median(uis)
    return {
        "reps": reps,
        "steps": STEPS,
        "agent_run_s": run_s,
        "ui_api_s": ui_s,
        "ui_over_run": ui_s / run_s,
        "agent_run_cold_process_s": cold,
        "runs_s": runs,
        "uis_s": uis,
    }


def _cold_agent_run(task: Path, url: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", str(task), "--model-url", url, "--json"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return time.perf_counter() - t


# --- (b) token -> DOM latency -----------------------------------------------------------

_OBSERVER = """() => {
  window.__marks = {};
  const chat = document.querySelector('#chat');
  const re = /(t\\d+m\\d{3})(?=[ .])/g;
  new MutationObserver(() => {
    const now = performance.timeOrigin + performance.now();
    const bots = chat.querySelectorAll('[data-testid="bot"]');
    if (!bots.length) return;
    for (const m of bots[bots.length - 1].textContent.matchAll(re)) {
      if (!(m[1] in window.__marks)) window.__marks[m[1]] = now;
    }
  }).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


class _Timed:
    """A backend that notes when each complete marker arrives from the simulator."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seen = inner, {}

    def make(self) -> Any:
        from agent.hermes import TextDelta
        from agent.llm.base import Backend

        timed = self

        class TimedBackend(Backend):
            async def stream(self, request: Any) -> AsyncIterator[Any]:
                buffer = ""
                async for event in timed.inner.stream(request):
                    if isinstance(event, TextDelta):
                        now, buffer = time.time(), buffer + event.text
                        for mark in _MARK.findall(buffer[-64 - len(event.text) :]):
                            timed.seen.setdefault(mark, now)
                    yield event

            async def aclose(self) -> None:
                await timed.inner.aclose()

        return TimedBackend()


def _wait_status(page: Any, text: str) -> None:
    page.wait_for_function(
        f"document.querySelector('#status textarea').value === {text!r}", timeout=60_000
    )


def _clock_offset(page: Any) -> float:
    """Browser clock minus ours, from the round trip with the lowest latency."""
    samples = []
    for _ in range(20):
        t0 = time.time()
        browser = page.evaluate("performance.timeOrigin + performance.now()") / 1000
        t1 = time.time()
        samples.append((t1 - t0, browser - (t0 + t1) / 2))
    return min(samples)[1]


def token_to_dom(profile: str, turns: int, markers: int = 200) -> dict[str, Any]:
    """Latency from a marker's arrival at the page's model client to the browser's DOM."""
    from playwright.sync_api import sync_playwright

    from agent.llm import VLLMBackend
    from agent.task import Task
    from agent.ui import build_app

    with SimChild("bench.ui:policy", profile=profile) as sim:
        timed = _Timed(VLLMBackend(sim.url))
        tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
        app = build_app(
            Task(input="-", store=str(tmp / ".agent")), sim.url, backend=lambda _: timed.make()
        )
        url = app.launch("127.0.0.1", _free_port(), quiet=True)
        try:
            latencies = _drive_browser(url, timed, profile, turns, markers, sync_playwright)
        finally:
            app.close()
    latencies.sort()
    return {
        "profile": profile,
        "turns": turns,
        "markers": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def _drive_browser(
    url: str, timed: _Timed, profile: str, turns: int, markers: int, sync_playwright: Any
) -> list[float]:
    out: list[float] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#chat")
        page.wait_for_timeout(1000)
        page.get_by_label("Chat", exact=True).check()
        page.evaluate(_OBSERVER)
        for turn in range(turns + 1):  # turn 0 warms the agent up
            tag = f"t{turn}"
            last = f"{tag}m{markers - 1:03d}"
            page.fill("#message textarea", f"markers {markers} {tag}")
            page.click("#send-btn")
            page.wait_for_function(f"'{last}' in window.__marks", timeout=60_000)
            _wait_status(page, "Done.")
            page.click("#new-btn")
            _wait_status(page, "Ready.")
        offset = _clock_offset(page)
        marks = page.evaluate("window.__marks")
        browser.close()
    for mark, at in marks.items():
        if not mark.startswith("t0m") and mark in timed.seen:
            out.append(at / 1000 - offset - timed.seen[mark])
    return out


# --- main ---------------------------------------------------------------------------------


def main(quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"quick": quick}
    result["overhead"] = asyncio.run(overhead(3 if quick else 10))
    result["dom_instant"] = token_to_dom("instant", 5 if quick else 30)
    result["dom_h100"] = token_to_dom("h100", 2 if quick else 10)
    result["ui_over_run"] = result["overhead"]["ui_over_run"]
    result["token_to_dom_p95_ms"] = result["dom_instant"]["p95_ms"]
    return result


def _print_table(r: dict[str, Any]) -> None:
    o = r["overhead"]
    print(f"(a) {o['steps']}-step task, h100 profile, median of {o['reps']} alternating runs")
    print(f"  agent run's path (warm agent)    {o['agent_run_s']:7.3f} s")
    print(
        f"  page API (/send, streamed)       {o['ui_api_s']:7.3f} s   ratio {o['ui_over_run']:.3f}"
    )
    print(f"  agent run, a cold process        {o['agent_run_cold_process_s']:7.3f} s")
    print("(b) token -> DOM (model client receives it -> it is in the browser's DOM)")
    for key in ("dom_instant", "dom_h100"):
        d = r[key]
        print(
            f"  {d['profile']:8} {d['markers']:5d} tokens  p50 {d['p50_ms']:6.1f} ms  "
            f"p95 {d['p95_ms']:6.1f} ms  max {d['max_ms']:6.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and turns (< 1 min)")
    parser.add_argument("--json", action="store_true", help="print a JSON object last")
    args = parser.parse_args()
    res = main(args.quick)
    _print_table(res)
    if args.json:
        print(json.dumps(res))
