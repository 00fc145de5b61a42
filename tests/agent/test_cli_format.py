"""``agent parse`` and ``agent prompt`` through click's CliRunner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from agent.chatml import render
from agent.cli import main

OUTPUT = (
    'I will check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
    '</tool_call>\n<tool_call>\n{"arguments": {}}\n</tool_call>'
)
PROMPT_INPUT = {
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_parse_from_stdin(runner):
    result = runner.invoke(main, ["parse"], input=OUTPUT)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["content"] == "I will check."
    assert data["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    [error] = data["errors"]
    assert error["raw"].startswith("<tool_call>") and 'no "name"' in error["reason"]


def test_parse_from_file(runner, tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("plain answer")
    result = runner.invoke(main, ["parse", str(path)])
    assert json.loads(result.output) == {"content": "plain answer", "tool_calls": [], "errors": []}


def test_prompt_prints_the_exact_prompt(runner, tmp_path):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(PROMPT_INPUT))
    result = runner.invoke(main, ["prompt", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == render(PROMPT_INPUT["messages"], PROMPT_INPUT["tools"])
    assert result.output.endswith("<|im_start|>assistant\n")
    no_bos = runner.invoke(main, ["prompt", "--no-bos", "-"], input=json.dumps(PROMPT_INPUT))
    assert no_bos.output == result.output.removeprefix("<|begin_of_text|>")


def test_prompt_json_schema(runner):
    data = {"messages": [{"role": "user", "content": "x"}], "json_schema": {"type": "object"}}
    result = runner.invoke(main, ["prompt"], input=json.dumps(data))
    assert '<schema>\n{"type": "object"}\n</schema>' in result.output


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        ("{not json", "not valid JSON: Expecting property name"),
        ("[1, 2]", 'a "messages" list'),
        ('{"messages": [], "tool": []}', "unknown key(s) tool"),
        ('{"messages": [], "tools": {}}', '"tools" must be a list'),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "unknown role 'robot'"),
    ],
)
def test_prompt_bad_input_exits_2_with_a_clear_message(runner, stdin, needle):
    result = runner.invoke(main, ["prompt", "-"], input=stdin)
    assert result.exit_code == 2
    assert needle in result.output


def test_missing_file_exits_2(runner, tmp_path):
    result = runner.invoke(main, ["parse", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2 and "cannot read" in result.output


@pytest.mark.parametrize("command", ["parse", "prompt"])
def test_help(runner, command):
    result = runner.invoke(main, [command, "--help"])
    assert result.exit_code == 0 and "[FILE|-]" in result.output
