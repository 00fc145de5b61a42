"""``agent run``: exit codes, --json, --var, bad task files, a dead backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main


def _task(tmp: Path, body: str) -> Path:
    path = tmp / "task.yaml"
    path.write_text(body)
    return path


def _script(tmp: Path, entries: list[str]) -> Path:
    path = tmp / "script.json"
    path.write_text(json.dumps(entries))
    return path


def _run(tmp: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    """Invoke ``agent run`` with ``tmp`` as the working directory (the store goes there)."""
    import os

    old = os.getcwd()
    os.chdir(tmp)
    try:
        result = CliRunner().invoke(main, ["run", *args], input=input, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


def test_done_prints_json_and_exits_0(tmp_path: Path) -> None:
    task = _task(tmp_path, "name: hello\ninput: 'Say hi to {who}'\n")
    script = _script(tmp_path, ["Hi, Ada!"])
    code, out, err = _run(tmp_path, str(task), "--sim", str(script), "--var", "who=Ada", "--json")
    assert code == 0, err
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload["status"] == "done" and payload["answer"] == "Hi, Ada!"
    for key in ("run_id", "steps", "tool_calls", "usage"):
        assert key in payload
    assert "SIMULATED" in err


def test_unsuccessful_run_exits_1(tmp_path: Path) -> None:
    task = _task(
        tmp_path,
        "input: x\noutput_schema: {type: object, required: [a]}\n",
    )
    script = _script(tmp_path, ["not json", "still not json"])
    code, out, _ = _run(tmp_path, str(task), "--sim", str(script), "--json")
    assert code == 1 and json.loads(out.strip().splitlines()[-1])["status"] == "invalid_output"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("input: x\nlimits: {max_stepz: 3}\n", "limits.max_stepz"),
        ("input: x\nmodel: {mode: telepathy}\n", "model.mode"),
        ("inptu: x\n", "inptu"),
    ],
)
def test_bad_task_file_exits_2_naming_the_key(tmp_path: Path, body: str, needle: str) -> None:
    task = _task(tmp_path, body)
    code, _, err = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9")
    assert code == 2 and needle in err and "task.yaml:" in err


def test_missing_var_exits_2(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: 'hello {who}'\n")
    code, _, err = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9")
    assert code == 2 and "who" in err


def test_bad_var_syntax_exits_2(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: hi\n")
    code, _, err = _run(tmp_path, str(task), "--var", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_unreachable_backend_exits_3_naming_the_url(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: hi\n")
    code, out, _ = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9", "--json")
    payload = json.loads(out.strip().splitlines()[-1])
    assert code == 3 and payload["error_type"] == "BackendUnavailable"
    assert "127.0.0.1:9" in payload["error"]


def test_trace_copy(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: hi\n")
    script = _script(tmp_path, ["hello"])
    trace = tmp_path / "copy.jsonl"
    code, _, _ = _run(tmp_path, str(task), "--sim", str(script), "--trace", str(trace))
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert code == 0 and lines[0]["type"] == "run_started" and lines[-1]["type"] == "final"


async def test_prompt_of_a_task_is_exactly_what_run_sends(tmp_path: Path, sim: Any) -> None:
    from agent.api import Agent
    from agent.sim import ScriptPolicy

    task = _task(
        tmp_path,
        "system: Be brief.\ninput: 'Rows in {f}?'\ntools: {enabled: [sql_query]}\n"
        f"store: {tmp_path / '.agent'}\nworkspace: ws\n",
    )
    (tmp_path / "ws").mkdir()
    printed = CliRunner().invoke(main, ["prompt", str(task), "--var", "f=a.csv"]).stdout
    sim.policy = ScriptPolicy(["Three."])
    agent = Agent.from_task(task, vars={"f": "a.csv"}, model_url=sim.url)
    result = await agent.run()
    await agent.aclose()
    assert result.status == "done"
    assert printed == sim.requests[0]["prompt"]
    assert "Rows in a.csv?" in printed and printed.count("<|im_start|>system") == 1


def test_run_store_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: hi\ntools: {enabled: [read_file]}\n")
    code, _, err = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9")
    assert code == 2 and "inside the workspace" in err and "store:" in err


@pytest.mark.parametrize(("answer", "written"), [("y", True), ("n", False)])
def test_approve_ask_prompts_on_the_terminal(tmp_path: Path, answer: str, written: bool) -> None:
    (tmp_path / "ws").mkdir()
    task = _task(
        tmp_path,
        "input: save it\nworkspace: ws\n"
        "tools: {enabled: [write_file], files: {allow_write: true}}\n",
    )
    write = '<tool_call>\n{"name": "write_file", "arguments": {"path": "out.txt", '
    write += '"content": "hello"}}\n</tool_call>'
    script = _script(tmp_path, [write, "Done."])
    code, _, err = _run(
        tmp_path, str(task), "--sim", str(script), "--approve", "ask", input=f"{answer}\n"
    )
    assert code == 0, err
    assert "Allow write_file(" in err
    assert (tmp_path / "ws" / "out.txt").exists() is written


def test_resume_of_an_unknown_run_exits_2(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: hi\n")
    script = _script(tmp_path, ["hello"])
    code, _, err = _run(tmp_path, str(task), "--sim", str(script), "--resume", "no_such_run")
    assert code == 2 and "no run 'no_such_run'" in err
