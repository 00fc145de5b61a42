"""The left column's settings: schema checks, sampling, the task a page run uses,
policy summaries, the model's status and "Load task file"."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import Sampling
from agent.errors import ConfigError
from agent.task import Task, load_task
from agent.ui.settings import (
    Settings,
    model_status,
    policy_summary,
    schema_problem,
    task_for,
)
from agent.ui.taskfile import read_task_file
from tools.policy import FilesPolicy, HttpPolicy, SqlPolicy, ToolPolicies

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"type": "object"}', None),
        ("", "empty"),
        ('{"type": ', "not JSON"),
        ("[1]", "a schema is a JSON object"),
        ('{"type": "objct"}', "not a valid JSON Schema"),
        ('{"properties": {"a": {"minimum": "x"}}}', "not a valid JSON Schema"),
    ],
)
def test_schema_problems(text: str, problem: str | None) -> None:
    found = schema_problem(text)
    assert found == problem if problem is None else found and found.startswith(problem)


def test_settings_make_sampling_and_check_the_url() -> None:
    s = Settings(temperature=0.3, top_p=1.0, max_tokens=64, seed=7, model_url="http://h:8000/")
    assert s.sampling() == Sampling(temperature=0.3, max_tokens=64, seed=7)
    assert s.check_url() == "http://h:8000"
    with pytest.raises(ConfigError, match="http"):
        Settings(model_url="file:///etc/passwd").check_url()
    with pytest.raises(ConfigError, match="JSON schema: not JSON"):
        Settings(mode="json", schema="{").output_schema()


def test_a_page_run_keeps_the_servers_policies_and_takes_the_pages_choices() -> None:
    base = load_task(ROOT / "examples" / "weather_api" / "task.yaml")
    settings = Settings(
        mode="json",
        system="Be brief.",
        tools=("http_request",),
        schema='{"type": "object"}',
        temperature=0.0,
        model_url="http://127.0.0.1:9999",
    )
    task = task_for(base, settings)
    assert task.tool_policies() == base.tool_policies(), "policies are the server's"
    assert (task.services, task.store, task.limits) == (base.services, base.store, base.limits)
    assert task.name == base.name and task.system == "Be brief."
    assert task.output_schema == {"type": "object"} and task.tools.enabled == ["http_request"]
    assert task.model.url == "http://127.0.0.1:9999" and task.model.sampling.temperature == 0
    chat = task_for(base, Settings(mode="chat", tools=("http_request",), model_url="http://h"))
    assert chat.tools.enabled == [] and chat.output_schema is None


def test_tool_choice_reaches_the_task() -> None:
    base = Task(input="-", tools={"enabled": ["read_file"]})
    task = task_for(
        base, Settings(tool_choice="required", tools=("read_file",), model_url="http://h")
    )
    assert task.model.tool_choice == "required"


async def test_chat_mode_ignores_a_tool_choice_left_in_the_disabled_dropdown() -> None:
    """A tool picked in ``tool_choice``, then Mode switched to Chat (the dropdown goes
    disabled and keeps its value): the turn is a plain chat, not refused."""
    from agent.api import Agent

    base = Task(input="-", tools={"enabled": ["list_files"]})
    picked = Settings(tools=("list_files",), tool_choice="list_files", model_url="http://h")
    assert task_for(base, picked).model.tool_choice == "list_files"
    for mode in ("json", "chat"):
        task = task_for(base, dataclasses.replace(picked, mode=mode, schema="{}"))
        # JSON mode offers the ticked tools: the choice stands. Chat offers none.
        expected = "auto" if mode == "chat" else "list_files"
        assert task.model.tool_choice == expected
        # Before the fix: ConfigError "tool_choice='list_files': ... tools (none)".
        await Agent.from_task(task).aclose()
    assert task.tools.enabled == []


def test_policy_summaries_say_what_each_tool_may_do() -> None:
    policies = ToolPolicies(
        workspace=Path("/data"),
        http=HttpPolicy(allowed_hosts=["api.example.com"], allowed_methods=["GET", "POST"]),
        sql=SqlPolicy(read_only=False, max_rows=10),
        files=FilesPolicy(allow_write=False),
    )
    assert policy_summary("http_request", policies, "side_effects", "some") == (
        "hosts: api.example.com; methods: GET, POST; writes ask approval"
    )
    assert policy_summary("sql_query", policies, "none", "some") == (
        "DuckDB on the workspace, writes allowed, 10 rows max"
    )
    assert policy_summary("write_file", policies, "side_effects", True) == (
        "writes disabled; asks approval"
    )
    assert policy_summary("read_file", policies, ("read_file",), False).endswith("asks approval")
    assert policy_summary("my_plugin", policies, "all", False).startswith("plugin tool")


async def test_model_status_reads_v1_models(sim: Any) -> None:
    status = await model_status(sim.url)
    assert status.reachable and status.model == "NousResearch/Hermes-3-Llama-3.1-8B"
    assert status.text(simulated=True).endswith("context 131,072 tokens · SIMULATED")
    down = await model_status("http://127.0.0.1:9", timeout_s=0.5)
    assert not down.reachable and down.text().startswith("unreachable: ")
    assert "use http(s)://HOST[:PORT]" in (await model_status("nonsense")).text()


async def test_model_status_sends_the_api_key_a_vllm_with_api_key_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A vLLM started with ``--api-key``: reachable with ``AGENT_VLLM_API_KEY`` (the key
    page runs send), and without it "unreachable" says which variable to set."""
    from agent.sim import SimConfig
    from agent.testing import run_sim

    monkeypatch.delenv("AGENT_VLLM_API_KEY", raising=False)
    with run_sim(config=SimConfig(api_key="k-123")) as sim:
        refused = (await model_status(sim.url)).text()
        assert refused.startswith("unreachable: HTTP 401") and "AGENT_VLLM_API_KEY" in refused
        monkeypatch.setenv("AGENT_VLLM_API_KEY", "wrong")
        assert "was refused" in (await model_status(sim.url)).text()
        monkeypatch.setenv("AGENT_VLLM_API_KEY", "k-123")
        status = await model_status(sim.url)
        assert status.reachable and status.model == "NousResearch/Hermes-3-Llama-3.1-8B"
        assert "k-123" not in status.text() + refused, "the key is never shown"


def test_a_task_file_fills_the_settings(tmp_path: Path) -> None:
    task = ROOT / "examples" / "sales_duckdb" / "task.yaml"
    mode, system, tools, schema, temperature, top_p, max_tokens, seed, text, status = (
        read_task_file(task)
    )
    assert (mode, tools, schema, temperature, top_p, max_tokens, seed) == (
        "tools",
        ["sql_tables", "sql_query"],
        "",
        0.2,
        1.0,
        512,
        "",
    )
    assert system.startswith("You are a data analyst") and "2026" in text
    assert status.startswith("task: sales-by-region")
    bad = tmp_path / "t.yaml"
    bad.write_text("input: hi\nlimits: {max_stepz: 3}\n")
    with pytest.raises(ConfigError, match=r"t\.yaml:2: limits\.max_stepz"):
        read_task_file(bad)
    schema_task = json.loads(read_task_file(ROOT / "examples/incident_report/task.yaml")[3])
    assert schema_task["type"] == "object"


def test_the_pages_sampling_controls_override_the_task_and_keep_the_rest() -> None:
    base = Task(
        input="-",
        model={"sampling": {"temperature": 0.9, "presence_penalty": 1.5, "stop": ["END"]}},
    )
    settings = Settings(temperature=0.1, top_p=0.5, max_tokens=64, seed="7", model_url="http://h")
    sampling = task_for(base, settings).model.sampling
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (0.1, 0.5, 64)
    assert sampling.seed == 7
    assert (sampling.presence_penalty, sampling.stop) == (1.5, ["END"]), "the task's own"
