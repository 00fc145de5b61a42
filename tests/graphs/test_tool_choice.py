"""tool_choice in agent runs: forced on the first step only, never on the last, ``none``
throughout, and a constrained repair forces a valid call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from tests.fakes import add, call


def _forced(body: dict[str, Any]) -> bool | None:
    """True: a call is forced; False: bodies constrained only; None: no constraint."""
    tag = (body.get("structured_outputs") or {}).get("structural_tag")
    return None if tag is None else json.loads(tag)["format"]["at_least_one"]


def _bodies(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests if "prompt" in r]


async def test_required_holds_until_the_first_call(make_agent: Any, sim: Any) -> None:
    agent = make_agent([call("add", a=1, b=2), "It is 3."], tools=(add,), tool_choice="required")
    result = await agent.run("1 + 2?")
    assert (result.status, result.tool_calls) == ("done", 1)
    assert [_forced(b) for b in _bodies(sim)] == [True, None], "then the model may answer"


async def test_a_named_tool_is_forced_and_must_exist(make_agent: Any, sim: Any) -> None:
    agent = make_agent([call("add", a=1, b=2), "3"], tools=(add,), tool_choice="add")
    await agent.run("1 + 2?")
    first = json.loads(_bodies(sim)[0]["structured_outputs"]["structural_tag"])
    (option,) = first["format"]["tags"][0]["content"]["json_schema"]["anyOf"]
    assert option["properties"]["name"] == {"const": "add"}
    with pytest.raises(ConfigError, match="tool_choice='subtract'"):
        make_agent(["x"], tools=(add,), tool_choice="subtract")


async def test_none_shows_no_tools_and_runs_no_call(make_agent: Any, sim: Any) -> None:
    text = call("add", a=1, b=2)
    agent = make_agent([text], tools=(add,), tool_choice="none")
    result = await agent.run("1 + 2?")
    assert (result.status, result.tool_calls, result.answer) == ("done", 0, text)
    assert "<tools>" not in _bodies(sim)[0]["prompt"]


async def test_a_constrained_repair_forces_a_valid_call(make_agent: Any, sim: Any) -> None:
    broken = '<tool_call>\n{"name": "add", "arguments": {"a": 1,,}}\n</tool_call>'
    agent = make_agent([broken, call("add", a=1, b=2), "3"], tools=(add,), constrained_repair=True)
    result = await agent.run("1 + 2?")
    assert result.status == "done"
    assert [_forced(b) for b in _bodies(sim)] == [None, True, None]


async def test_the_closing_call_after_a_limit_is_never_forced(make_agent: Any, sim: Any) -> None:
    agent = make_agent(
        [call("add", a=1, b=2)] * 3, tools=(add,), tool_choice="required", limits={"max_steps": 1}
    )
    result = await agent.run("1 + 2?")
    assert result.status == "limit" and result.limit == "max_steps"
    assert [_forced(b) for b in _bodies(sim)] == [True, None]


async def test_a_task_files_tool_choice_forces_the_first_step(
    sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.api import Agent
    from agent.sim import ScriptPolicy

    example = Path(__file__).resolve().parents[2] / "examples" / "sales_duckdb"
    sim.policy = ScriptPolicy.from_file(example / "script.yaml")
    monkeypatch.chdir(tmp_path)
    agent = Agent.from_task(example / "task.yaml", model_url=sim.url)
    try:
        result = await agent.run()
    finally:
        await agent.aclose()
    assert result.status == "done" and result.tool_calls >= 1
    forced = [_forced(b) for b in _bodies(sim)]
    assert forced[0] is True and True not in forced[1:]
