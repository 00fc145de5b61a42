"""Second review, finding 2: model-chosen arguments holding lone surrogates.

``json.loads('"\\ud800"')`` gives a string that cannot be encoded as UTF-8. Every place that
encodes a call's arguments (the idempotency key, the worker pipe, the CLI's output) must turn
that into an error result the model can act on; the run goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.config import Limits
from agent.types import ToolCall
from graphs.calls import idempotency_key, plan_turn
from tests.fakes import add
from tests.graphs.conftest import make_agent  # noqa: F401  (the fixture)
from tests.tools.test_sandbox import MODES
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.registry import ToolRegistry

BAD_QUERY = "SELECT 'x\ud800'"


def _dispatcher(tmp_path: Path, use_bwrap: bool) -> Dispatcher:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    policies = ToolPolicies(workspace=ws, sandbox={"use_bwrap": use_bwrap})
    registry = ToolRegistry.default(plugins=False)
    registry.register(add)
    return Dispatcher(registry, policies, run_id="r", artifacts_dir=tmp_path / "art")


def test_idempotency_key_and_plan_accept_lone_surrogates() -> None:
    call = ToolCall("sql_query", {"query": BAD_QUERY}, "c1")
    key = idempotency_key("r", call, 1)
    assert len(key) == 32 and key != idempotency_key("r", ToolCall("sql_query", {"query": "x"}), 1)
    [planned] = plan_turn("r", [call], {}, 0, Limits())
    assert planned.decision == "run" and planned.key == idempotency_key("r", call, 1)


@pytest.mark.parametrize("use_bwrap", MODES)
@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("sql_query", {"query": BAD_QUERY}),
        ("sql_query", {"query": "SELECT ?", "params": ["\udfff"]}),
        ("read_file", {"path": "a\ud800.txt"}),
        ("add", {"a": 1, "b": 2, "\ud800": 3}),
    ],
)
async def test_unencodable_arguments_become_an_argument_error(
    tmp_path: Path, use_bwrap: bool, name: str, arguments: dict[str, Any]
) -> None:
    async with _dispatcher(tmp_path, use_bwrap) as d:
        bad = await d.call(ToolCall(name, arguments, "c1"))
        good = await d.call(ToolCall("sql_query", {"query": "SELECT 42 AS n"}, "c2"))
    assert bad.status == "error" and bad.error == "arguments", bad.content
    assert "surrogate" in bad.content and "valid Unicode" in bad.content
    json.dumps(bad.content, ensure_ascii=False).encode()  # the trace and the prompt need UTF-8
    assert good.ok and good.content.endswith("\n42"), good.content


def test_agent_tool_call_reports_the_error_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = json.dumps({"query": BAD_QUERY})  # ASCII escapes: json.loads makes the surrogate
    result = CliRunner().invoke(main, ["tool", "call", "sql_query", "--args", args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    out = json.loads(result.output)
    assert result.exit_code == 2 and out["error"] == "arguments"


async def test_a_run_goes_on_after_a_call_with_a_lone_surrogate(
    make_agent: Any,  # noqa: F811
) -> None:
    turn = '<tool_call>\n{"name": "sql_query", "arguments": {"query": "SELECT \'x\\ud800\'"}}\n'
    agent = make_agent([turn + "</tool_call>", "done"], tools=("sql_query",))
    events: list[Any] = []
    result = await agent.run("go", on_event=events.append)
    assert (result.status, result.answer, result.error) == ("done", "done", None)
    [tool_event] = [e for e in events if type(e).__name__ == "ToolResultEvent"]
    assert tool_event.result.error == "arguments"
    assert result.trace_path is not None
    lines = Path(result.trace_path).read_text(encoding="utf-8").splitlines()  # valid UTF-8
    # The call is traced as the model sent it: the surrogate is escaped in the file and
    # comes back whole when the trace is read.
    decoded = [json.dumps(json.loads(line), ensure_ascii=False) for line in lines]
    assert any("SELECT 'x\ud800'" in text for text in decoded)
