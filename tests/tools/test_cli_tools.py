"""`agent tools` and `agent tool call` through click's runner (real dispatcher and worker)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_tools_json_lists_builtins_with_schemas() -> None:
    code, out = _run("tools", "--json")
    assert code == 0
    tools = {t["name"]: t for t in json.loads(out)["tools"]}
    assert tools["sql_query"]["sandbox"] == "process"
    assert tools["read_file"]["parameters"]["required"] == ["path"]
    assert tools["http_request"]["side_effects"] == "depends"


def test_tools_table() -> None:
    code, out = _run("tools")
    assert code == 0 and "write_file" in out and "sandbox" in out


def test_tool_call_ok_and_read_only_by_default(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    code, out = _run(
        "tool", "call", "read_file", "--args", '{"path": "a.txt"}', "--workspace", str(tmp_path)
    )
    result = json.loads(out)
    assert code == 0 and result["status"] == "ok" and "hello" in result["content"]
    assert result["sandbox"] in ("bwrap", "process")
    code, out = _run(
        "tool",
        "call",
        "write_file",
        "--args",
        '{"path": "b.txt", "content": "x"}',
        "--workspace",
        str(tmp_path),
    )
    assert code == 1 and json.loads(out)["error"] == "policy"
    assert not (tmp_path / "b.txt").exists()
    code, out = _run(
        "tool",
        "call",
        "write_file",
        "--args",
        '{"path": "b.txt", "content": "x"}',
        "--workspace",
        str(tmp_path),
        "--allow-write",
    )
    assert code == 0 and (tmp_path / "b.txt").read_text() == "x"


def test_tool_call_bad_input_exits_2(tmp_path: Path) -> None:
    ws = str(tmp_path)
    code, out = _run("tool", "call", "read_file", "--args", '{"path": ', "--workspace", ws)
    assert code == 2 and "--args is not valid JSON" in out
    code, out = _run("tool", "call", "read_file", "--args", "[1]", "--workspace", str(tmp_path))
    assert code == 2 and "must be a JSON object" in out
    code, out = _run("tool", "call", "read_fil", "--args", "{}", "--workspace", str(tmp_path))
    assert code == 2 and "Did you mean 'read_file'" in json.loads(out)["content"]


def test_http_tool_refuses_hosts_not_allowed(tmp_path: Path) -> None:
    code, out = _run(
        "tool",
        "call",
        "http_request",
        "--args",
        '{"url": "http://127.0.0.1:9/"}',
        "--workspace",
        str(tmp_path),
    )
    result = json.loads(out)
    assert code == 1 and result["error"] == "policy" and result["sandbox"] == "none"
