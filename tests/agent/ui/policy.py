"""The simulated model behind the web UI's tests and benchmark: it answers by keyword.

The last user message picks a scenario and the number of assistant turns since it picks
the step, so every conversation (and every browser tab) replays independently:

- ``files``: list the workspace (a tool call), then answer;
- ``write``: write a file (a side effect: approval), then say whether it was written;
- ``inject``: read ``inject.html`` and answer with HTML and script tags;
- ``broken``: a malformed call first (a repair), then an answer;
- ``steps N``: N tool calls, one per step, then an answer (the benchmark's task);
- JSON mode (a ``<schema>`` in the prompt): a JSON object;
- anything else: a plain streamed answer, ``Echo: <text>``.
"""

from __future__ import annotations

import json
import re

from agent.sim import SimRequest

__all__ = ["INJECTION", "LOOK", "call", "ui_policy"]

INJECTION = (
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold?</b> **stars**'
)
_USER = "<|im_start|>user\n"
LOOK = "Let me look at the workspace first: listing its files should not take long at all."


def call(name: str, **arguments: object) -> str:
    """A Hermes tool-call block."""
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def _turn(prompt: str) -> tuple[str, int]:
    """The last user message and how many assistant turns followed it."""
    start = prompt.rfind(_USER)
    text = prompt[start + len(_USER) : prompt.find("<|im_end|>", start)]
    return text, prompt.count("<|im_start|>assistant", start) - 1


def ui_policy(request: SimRequest) -> str:
    """The simulated model (a ``FunctionPolicy`` function)."""
    text, step = _turn(request.prompt)
    if "<schema>" in request.prompt:
        return json.dumps({"city": "Paris", "temp_c": 21})
    if m := re.search(r"steps (\d+)", text):
        n = int(m.group(1))
        if step < n:
            return f"Step {step + 1}: listing files.\n" + call("list_files", path=".")
        return f"Done after {n} steps."
    if "files" in text:
        first = f"{LOOK}\n" + call("list_files")
        return [first, "The workspace holds notes.txt."][min(step, 1)]
    if "write" in text:
        first = "I will write it.\n" + call("write_file", path="out.txt", content="hello")
        return [first, "Finished with the file."][min(step, 1)]
    if "inject" in text:
        return [call("read_file", path="inject.html"), "Here it is: " + INJECTION][min(step, 1)]
    if "broken" in text:
        return [
            '<tool_call>\n{"name": "list_files", "arguments": {"path": \n</tool_call>',
            "Fixed.",
        ][min(step, 1)]
    return "Echo: " + " ".join(text.split()[:40]) + ". " + " ".join(["word"] * 30)
