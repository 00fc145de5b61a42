"""Checks one by one on hand-made samples, their parameters, and the plugin hook."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import duckdb
import pytest

from agent.errors import ConfigError
from agent.events import ToolCallEvent, ToolResultEvent
from agent.types import RunResult, ToolCall, ToolResult, Usage
from evals.checks import CheckRegistry, HttpRecord, SampleView, Verdict, match_value


def _sample(
    answer: Any = "North sold $61,997.00", calls: list[tuple[str, dict]] = (), **kw: Any
) -> SampleView:
    events: list[Any] = []
    for i, (name, args) in enumerate(calls):
        call = ToolCall(name, args, id=f"c{i}")
        events.append(ToolCallEvent(1, call))
        status = "error" if args.get("fail") else "ok"
        events.append(ToolResultEvent(1, ToolResult(call.id, name, status, "r")))
    result = RunResult(
        "r",
        kw.pop("status", "done"),
        answer=answer,
        steps=kw.pop("steps", 2),
        tool_calls=len(calls),
        usage=Usage(100, 20),
    )
    return SampleView("c", 0, "q", result, events, **kw)


async def _run(item: dict[str, Any], sample: SampleView) -> tuple[bool, str, str | None]:
    out = await CheckRegistry.default().run(item, sample)
    return out.passed, out.reason, out.error_type


@pytest.mark.parametrize(
    ("item", "passed"),
    [
        ({"answer_contains": "North"}, True),
        ({"answer_contains": ["North", "61,997"]}, True),
        ({"answer_contains": {"text": "north", "ignore_case": True}}, True),
        ({"answer_contains": "South"}, False),
        ({"answer_equals": "North sold $61,997.00"}, True),
        ({"answer_equals": "North"}, False),
        ({"answer_regex": r"\$\d{2},\d{3}"}, True),
        ({"answer_regex": "^South"}, False),
        ({"answer_number": {"value": 61997}}, True),
        ({"answer_number": {"value": 62000, "tolerance": 5}}, True),
        ({"answer_number": {"value": 62000, "rel_tolerance": 0.01}}, True),
        ({"answer_number": {"value": 62000}}, False),
        ({"status": "done"}, True),
        ({"status": ["limit", "error"]}, False),
        ({"steps": {"max": 2}}, True),
        ({"steps": {"max": 1}}, False),
        ({"tokens": {"max": 119}}, False),
        ({"latency": {"max": 0.5}}, True),
    ],
)
async def test_answer_and_run_checks(item: dict[str, Any], passed: bool) -> None:
    ok, reason, error_type = await _run(item, _sample(latency_s=0.25))
    assert ok is passed, reason
    assert reason and (error_type is None) == passed


@pytest.mark.parametrize(
    ("answer", "item", "passed", "error_type"),
    [
        ({"a": {"b": [1, 2]}}, {"json_fields": {"a.b[1]": 2}}, True, None),
        ('{"a": 1}', {"json_fields": {"a": 1.0}}, True, None),
        ({"a": 1}, {"json_fields": {"a": True}}, False, "wrong_field"),
        ({"a": 1}, {"json_fields": {"z": 1}}, False, "wrong_field"),
        ("not json", {"json_fields": {"a": 1}}, False, "not_json"),
        ({"a": 1}, {"json_schema": {"type": "object", "required": ["a"]}}, True, None),
        (
            {"a": "x"},
            {"json_schema": {"properties": {"a": {"type": "integer"}}}},
            False,
            "schema_mismatch",
        ),
        ({"n": 3}, {"answer_number": {"value": 3, "field": "n"}}, True, None),
    ],
)
async def test_json_answer_checks(
    answer: Any, item: dict, passed: bool, error_type: str | None
) -> None:
    ok, reason, kind = await _run(item, _sample(answer))
    assert (ok, kind) == (passed, error_type), reason


CALLS = [
    ("sql_tables", {}),
    ("sql_query", {"query": "SELECT region, sum(x) FROM t GROUP BY region"}),
    ("sql_query", {"query": "SELECT 1", "fail": True}),
]


@pytest.mark.parametrize(
    ("item", "passed", "error_type"),
    [
        ({"tool_called": "sql_query"}, True, None),
        ({"tool_called": {"name": "sql_query", "count": 2}}, True, None),
        ({"tool_called": {"name": "sql_query", "count": 1}}, False, "extra_calls"),
        (
            {
                "tool_called": {
                    "name": "sql_query",
                    "arguments": {"query": {"$contains": "GROUP BY"}},
                }
            },
            True,
            None,
        ),
        (
            {
                "tool_called": {
                    "name": "sql_query",
                    "arguments": {"query": {"$regex": "(?i)order by"}},
                }
            },
            False,
            "wrong_arguments",
        ),
        ({"tool_called": {"name": "sql_query", "status": "ok", "count": 1}}, True, None),
        ({"tool_called": "write_file"}, False, "missing_call"),
        ({"tool_order": ["sql_tables", "sql_query"]}, True, None),
        ({"tool_order": ["sql_query", "sql_tables"]}, False, "wrong_order"),
        ({"no_tool_call": "write_file"}, True, None),
        ({"no_tool_call": True}, False, "unexpected_call"),
        ({"tool_call_count": {"min": 3, "max": 3}}, True, None),
    ],
)
async def test_tool_call_checks(item: dict, passed: bool, error_type: str | None) -> None:
    ok, reason, kind = await _run(item, _sample(calls=CALLS))
    assert (ok, kind) == (passed, error_type), reason


def test_matchers() -> None:
    assert match_value({"a": {"$approx": [1.0, 0.1]}}, {"a": 1.05, "b": 2}) is None
    assert match_value({"a": {"$any": True}}, {"a": None}) is None
    assert match_value({"a": [1, {"b": 2}]}, {"a": [1, {"b": 2, "c": 3}]}) is None
    assert "a[1]" in match_value({"a": [1, 2]}, {"a": [1, 3]})
    assert match_value(1, True) is not None and match_value(True, 1) is not None


async def test_sql_check_reads_the_workspace_database(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "shop.duckdb"))
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES ('a', 1, 1.5), ('b', 2, 2.5)) v(k, n, x)")
    con.close()
    sample = _sample(workspace=tmp_path, database=tmp_path / "shop.duckdb")
    q = "SELECT k, n, x FROM t"
    assert (await _run({"sql": {"query": q, "rows": [["b", 2, 2.5], ["a", 1, 1.5]]}}, sample))[0]
    ordered = {
        "sql": {"query": q + " ORDER BY k", "rows": [["b", 2, 2.5], ["a", 1, 1.5]], "ordered": True}
    }
    assert (await _run(ordered, sample))[2] == "sql_mismatch"
    named = {"sql": {"query": q, "rows": [{"n": 1, "k": "a"}, {"n": 2, "k": "b"}]}}
    assert (await _run(named, sample))[0]
    close = {"sql": {"query": "SELECT 0.1 + 0.2", "rows": [[0.3]]}}
    assert (await _run(close, sample))[0]
    missing = {"sql": {"query": q, "rows": [], "database": "nope.duckdb"}}
    assert (await _run(missing, sample))[2] == "no_database"


async def test_file_check(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.md").write_text("# Title\nSEV1\n")
    sample = _sample(workspace=tmp_path)
    sha = "c4f6d9e4b1f8e6a1cfbd0b3c2d0d9f4e37c16c1ad0d8b0d6f8f1f8e6a9b9c0d1"
    assert (await _run({"file": {"path": "r/a.md", "contains": "SEV1", "regex": "^# T"}}, sample))[
        0
    ]
    assert (await _run({"file": "r/missing.md"}, sample))[2] == "file_missing"
    assert (await _run({"file": {"path": "r/a.md", "exists": False}}, sample))[2] == "file_exists"
    assert (await _run({"file": {"path": "r/a.md", "sha256": sha}}, sample))[2] == "file_content"
    escaped = await _run({"file": "../outside"}, sample)
    assert escaped[2] == "check_error" and "outside the workspace" in escaped[1]


async def test_http_check() -> None:
    seen = [
        HttpRecord("GET", "/weather", {"city": ["Oslo"]}, "", 200),
        HttpRecord("POST", "/alerts", {}, '{"city": "Oslo", "level": "severe"}', 201),
    ]
    sample = _sample(http={"weather": seen})
    ok = {"http": {"service": "weather", "method": "post", "body": {"level": "severe"}, "count": 1}}
    assert (await _run(ok, sample))[0]
    assert (await _run({"http": {"service": "weather", "query": {"city": "Oslo"}}}, sample))[0]
    wrong = await _run({"http": {"service": "weather", "query": {"city": "Rome"}}}, sample)
    assert wrong[2] == "missing_request" and "Rome" in wrong[1]
    assert (await _run({"http": {"service": "other"}}, sample))[2] == "no_service"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"answer_contain": "x"}, "did you mean 'answer_contains'"),
        ({"tool_called": {"name": "x", "cuont": 1}}, "cuont: unknown parameter"),
        ({"answer_regex": "("}, "pattern"),
        ({"a": 1, "b": 2}, "one mapping"),
        ({"no_tool_call": False}, "checks nothing"),
    ],
)
def test_bad_check_items_say_what_is_wrong(item: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CheckRegistry.default().parse(item)


async def test_a_check_that_raises_fails_with_check_error() -> None:
    from pydantic import BaseModel

    class P(BaseModel):
        pass

    def boom(params: P, sample: SampleView) -> Verdict:
        raise RuntimeError("kaput")

    reg = CheckRegistry()
    reg.register("boom", boom, P)
    out = await reg.run({"boom": None}, _sample())
    assert not out.passed and out.error_type == "check_error" and "kaput" in out.reason
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("boom", boom, P)


PLUGIN = """
from pydantic import BaseModel
from evals.checks import Verdict

class Polite(BaseModel):
    word: str = "please"

async def polite(params, sample):
    ok = params.word in sample.answer_text
    return Verdict(ok, f"answer {'has' if ok else 'lacks'} {params.word!r}", None if ok else "rude")

def register(registry):
    registry.register("polite", polite, Polite, shorthand="word")
"""


def test_plugins_register_through_the_entry_point_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "demo_checks.py").write_text(PLUGIN)
    info = tmp_path / "demo_checks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-checks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[agent.checks]\ndemo = demo_checks:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = CheckRegistry()
    reg.load_entry_points()
    assert "polite" in reg.names()
    spec, params = reg.parse({"polite": "thanks"})
    assert params.word == "thanks" and "entry point 'demo'" in spec.source
    sys.modules.pop("demo_checks", None)


def test_builtins_load_through_the_same_hook() -> None:
    reg = CheckRegistry.default()
    assert {s.source for s in reg} >= {"built-in"}
    expected = textwrap.dedent("""
        answer_contains answer_equals answer_number answer_regex file http json_fields
        json_schema latency no_tool_call sql status steps tokens tool_call_count tool_called
        tool_order""").split()
    assert set(expected) <= set(reg.names())
