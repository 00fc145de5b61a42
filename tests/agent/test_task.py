"""Task files: valid loading, errors that name key and line, workspace, schema command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from agent.cli import main
from agent.config import Sampling
from agent.errors import ConfigError
from agent.task import Task, load_task, task_json_schema
from tools.policy import ToolPolicies

FULL = """\
name: top-customers
description: Ask the shop database.
model:
  url: [http://127.0.0.1:8001, http://127.0.0.1:8002]
  name: hermes
  mode: chat
  sampling: {temperature: 0.2, top_k: 40, max_tokens: 256, seed: 7}
  constrained_tool_calls: true
  timeout_s: 30
system: You are careful.
input: "Top {n} customers in {year}, as {{json}}"
vars: {n: 3}
tools:
  enabled: [sql_tables, sql_query, read_file]
  sql: {database: shop.duckdb, max_rows: 50}
  http: {allowed_hosts: [api.example.com]}
  files: {allow_write: true}
  sandbox: {memory_mb: 512}
  max_concurrency: 2
limits: {max_steps: 5, max_tokens: 10000}
output_schema:
  type: object
  properties: {names: {type: array, items: {type: string}}}
  required: [names]
workspace: data
approval: {require: [write_file]}
store: postgres://u@db/agent
services:
  - name: api
    command: [python, -m, http.server, "8081"]
    cwd: data
    env: {PORT: 8081}
    ready_url: http://127.0.0.1:8081/
    ready_timeout_s: 5
"""


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_lines(tmp_path: Path, text: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_task(write(tmp_path, text), **kw)
    return str(info.value).splitlines()[1:]


def test_full_task_loads(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    task = load_task(write(tmp_path, FULL), vars={"year": "2024"})
    assert task.model.urls() == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert task.model.sampling == Sampling(temperature=0.2, top_k=40, max_tokens=256, seed=7)
    assert task.render_input() == "Top 3 customers in 2024, as {json}"
    assert task.render_input({"n": "10"}) == "Top 10 customers in 2024, as {json}"
    assert task.tools.enabled == ["sql_tables", "sql_query", "read_file"]
    assert task.approval.require == ["write_file"]
    assert task.services[0].env == {"PORT": "8081"}  # numbers become strings
    assert task.base_dir == tmp_path.resolve()
    assert task.limits.max_steps == 5 and task.limits.max_repairs == 3


def test_minimal_task_defaults(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, "input: hello\n"))
    assert task.model.mode == "completions"
    assert task.model.urls(env={}) == ["http://127.0.0.1:8000"]
    assert task.model.urls(env={"AGENT_MODEL_URL": "http://h:9"}) == ["http://h:9"]
    assert task.model.urls("http://cli:1", env={"AGENT_MODEL_URL": "http://h:9"}) == [
        "http://cli:1"
    ]
    assert task.approval.require == "side_effects"
    assert task.store == ".agent"
    assert task.limits.max_steps == 20 and task.limits.deadline_s == 300
    assert task.tools.enabled == []


def test_tool_policies_resolve_workspace_against_task_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    text = "input: x\nworkspace: data\ntools: {sql: {database: a.db}, max_result_chars: 100}\n"
    path = write(tmp_path / "sub", text)
    policies = load_task(path).tool_policies()
    assert isinstance(policies, ToolPolicies)
    assert policies.workspace == (tmp_path / "sub" / "data").resolve()
    assert policies.workspace.is_absolute()
    assert policies.sql.database == Path("a.db")
    assert policies.max_result_chars == 100
    # Default workspace: the task file's own folder.
    assert (
        load_task(write(tmp_path / "sub", "input: x\n", "b.yaml")).workspace_dir()
        == (tmp_path / "sub").resolve()
    )


def test_missing_workspace_is_an_error(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, "input: x\nworkspace: nope\n")
    assert lines[0].startswith(f"{tmp_path / 'task.yaml'}:2: workspace: folder ")
    assert "does not exist" in lines[0]


ERRORS = {
    "suggest": (
        "input: x\nmodel:\n  mdoe: chat\n",
        r":3: model\.mdoe: unknown key 'mdoe' \(did you mean 'mode'\?\)",
    ),
    "allowed": (
        "input: x\nlimits:\n  max_steps: 3\n  zzz: 1\n",
        r":4: limits\.zzz: unknown key 'zzz' \(allowed: .*max_steps",
    ),
    "nested": (
        "input: x\ntools:\n  sql:\n    read_onyl: false\n",
        r":4: tools\.sql\.read_onyl: unknown key .*'read_only'",
    ),
    "type": (
        "input: x\nlimits: {max_steps: many}\n",
        r":2: limits\.max_steps: .*valid integer.*\(got 'many'\)",
    ),
    "enum": (
        "input: x\nmodel:\n  mode: turbo\n",
        r":3: model\.mode: Input should be 'completions' or 'chat' \(got 'turbo'\)",
    ),
    "union-enum": (
        "input: x\napproval: {require: maybe}\n",
        r":2: approval\.require: Input should be 'none', 'side_effects' or 'all'",
    ),
    "url": (
        "input: x\nmodel: {url: [http://a:1, ftp://b]}\n",
        r":2: model\.url\[1\]: expected an http:// or https:// URL",
    ),
    "missing-key": ("name: x\n", r":1: input: required key is missing \(add 'input:'\)"),
    "list-item": (
        "input: x\nservices:\n  - name: a\n    command: [x]\n  - name: b\n    comand: [y]\n",
        r":6: services\[1\]\.comand: unknown key 'comand' \(did you mean 'command'",
    ),
    "output-schema": (
        "input: x\noutput_schema:\n  type: object\n  properties:\n    a: {type: strin}\n",
        r":5: output_schema\.properties\.a\.type: not a valid JSON Schema: 'strin'",
    ),
    "missing-var": ("input: hi {who}\n", r":1: input: missing variable 'who' \(pass --var who="),
    "brace": ("input: 'a {b'\n", r":1: input: .*\{\{"),
    "duplicate": ("input: x\nname: a\nname: b\n", r":3: name: duplicate key \(first at line 2"),
    "yaml-syntax": ("input: x\nmodel: {mode: chat\n", r":\d+: YAML syntax error: "),
    "not-mapping": ("- a\n- b\n", r":1: expected a mapping of keys, got a list"),
    "empty": ("", r":1: expected a mapping of keys, got an empty file"),
    "unknown-tool": (
        "input: x\ntools:\n  enabled: [read_file, sql_querry]\n",
        r":3: tools\.enabled\[1\]: unknown tool 'sql_querry' \(did you mean 'sql_query'\?",
    ),
    "tool-choice": (
        "input: x\ntools: {enabled: [read_file]}\nmodel:\n  tool_choice: sql_query\n",
        r":4: model\.tool_choice: 'sql_query' is not auto, required, none or an enabled tool",
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(ERRORS.values()), ids=list(ERRORS))
def test_errors_name_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    lines = error_lines(tmp_path, text)
    assert any(re.search(re.escape(str(tmp_path / "task.yaml")) + expected, ln) for ln in lines), (
        lines
    )


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    lines = error_lines(tmp_path, "input: x\nmodel: {mdoe: chat}\nlimits: {max_steps: 0}\nfoo: 1\n")
    assert len(lines) == 3
    assert [ln.split(":")[1] for ln in lines] == ["2", "3", "4"]  # sorted by line
    assert "unknown key 'foo'" in lines[2]


def test_var_given_on_load_satisfies_input(tmp_path: Path) -> None:
    task = load_task(write(tmp_path, "input: hi {who}\n"), vars={"who": "you"})
    assert task.render_input() == "hi you"


def test_render_input_names_missing_var() -> None:
    with pytest.raises(ConfigError, match="missing variable 'who'"):
        Task(input="hi {who}").render_input()


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_task(tmp_path / "absent.yaml")


def test_schema_is_valid_and_validates_sample(tmp_path: Path) -> None:
    schema = task_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    sample = yaml.safe_load(FULL)
    jsonschema.validate(sample, schema)
    bad = {**sample, "limitz": {}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_schema_command() -> None:
    result = CliRunner().invoke(main, ["schema", "task"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == task_json_schema()
    help_ = CliRunner().invoke(main, ["schema", "--help"])
    assert "task" in help_.output and "Formats" in help_.output
    assert CliRunner().invoke(main, ["schema", "nope"]).exit_code == 2
