"""Suite files: strict validation with lines, merging, the JSON Schema; and the metrics."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import ConfigError
from evals.metrics import pass_at_k, pass_hat_k, summarize, wilson
from evals.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
AGENT = str(Path(sys.executable).with_name("agent"))

GOOD = """\
name: t
defaults:
  tools: {enabled: [sql_query], sql: {max_rows: 5}}
  limits: {max_steps: 4}
  model: {sampling: {temperature: 0.0}}
vars: {year: "2026"}
cases:
  - id: a
    input: Sales in {year}?
    limits: {max_tool_calls: 2}
    sampling: {max_tokens: 64}
    tools: {sql: {read_only: false}}
    expect: [{answer_contains: North}]
  - id: b
    messages: [Hi, "And {year}?"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_cases_merge_over_defaults_key_by_key(tmp_path: Path) -> None:
    suite = load_suite(_write(tmp_path, GOOD))
    task, _ = suite.case_task(suite.cases[0])
    assert (task.limits.max_steps, task.limits.max_tool_calls) == (4, 2)
    assert (task.tools.sql.max_rows, task.tools.sql.read_only) == (5, False)
    assert (task.model.sampling.temperature, task.model.sampling.max_tokens) == (0.0, 64)
    other, _ = suite.case_task(suite.cases[1])
    assert other.limits.max_tool_calls == 50 and other.tools.sql.read_only
    assert suite.cases[1].turns == ["Hi", "And {year}?"]


def test_a_task_file_is_the_base(tmp_path: Path) -> None:
    task = ROOT / "examples" / "sales_duckdb" / "task.yaml"
    text = f"defaults: {{task: {task}, limits: {{max_steps: 2}}}}\ncases: [{{id: a, input: x}}]\n"
    suite = load_suite(_write(tmp_path, text))
    merged, _ = suite.case_task(suite.cases[0])
    assert merged.tools.enabled == ["sql_tables", "sql_query"]
    assert merged.limits.max_steps == 2 and merged.limits.max_tool_calls == 6
    assert merged.workspace_dir() == (task.parent / "data").resolve()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "cases: [{id: a, input: x, expct: []}]",
            ":1: cases[0].expct: unknown key 'expct' (did you mean 'expect'?)",
        ),
        (
            "cases:\n  - id: a\n    input: x\n    expect:\n      - answer_contian: x\n",
            ":5: cases[0].expect[0]: unknown check 'answer_contian'",
        ),
        (
            "cases:\n  - id: a\n    input: x\n    expect:\n      - tool_called: {nam: x}\n",
            ":5: cases[0].expect[0]: tool_called: name: Field required; nam: unknown parameter",
        ),
        (
            "cases:\n  - id: a\n    input: 'In {year}'\n",
            ":3: cases[0].input: missing variable 'year'",
        ),
        ("cases: [{id: a, input: x}, {id: a, input: y}]", "duplicate case id 'a'"),
        ("cases: [{id: a}]", "give either input or messages"),
        ("cases: [{id: a, input: x, tools: {enabled: [sql_querry]}}]", "unknown tool 'sql_querry'"),
        (
            "trials: 0\ncases: [{id: a, input: x}]",
            ":1: trials: Input should be greater than or equal to 1",
        ),
        ("cases: []", "cases: List should have at least 1 item"),
    ],
)
def test_problems_name_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_suite(_write(tmp_path, text))
    assert expected in str(err.value)
    assert "problem" in str(err.value) and "in suite file" in str(err.value)


def test_shipped_suites_load() -> None:
    for name in ("sql", "http", "files"):
        suite = load_suite(ROOT / "evals" / "suites" / f"{name}.yaml")
        assert len(suite.cases) >= 10 and all(c.script or c.scripts for c in suite.cases)


def test_schema_command_lists_every_check() -> None:
    out = subprocess.run([AGENT, "schema", "suite"], capture_output=True, text=True, check=True)
    schema = json.loads(out.stdout)
    variants = schema["$defs"]["Case"]["properties"]["expect"]["items"]["anyOf"]
    names = {next(iter(v["properties"])) for v in variants}
    assert {"tool_called", "sql", "file", "http", "answer_number"} <= names
    assert schema["properties"]["trials"]["minimum"] == 1


# -- metrics ------------------------------------------------------------------------------


def test_pass_hat_k_is_tau_bench_formula() -> None:
    cases = [(3, 4), (4, 4), (0, 4), (2, 4)]  # (passed, trials)
    for k in range(1, 5):
        tau = sum(math.comb(c, k) / math.comb(4, k) for c, _ in cases) / len(cases)
        assert pass_hat_k(cases, k) == pytest.approx(tau)
    assert pass_hat_k(cases, 1) == pytest.approx(9 / 16)
    assert pass_hat_k(cases, 4) == pytest.approx(1 / 4)
    assert pass_at_k(cases, 2) == pytest.approx((1 + 1 + 0 + (1 - 1 / 6)) / 4)
    assert pass_hat_k([(1, 1)], 2) is None


def test_wilson_interval_contains_the_rate_and_narrows() -> None:
    assert wilson(0.0, 10)[0] == 0.0 and wilson(1.0, 10)[1] == 1.0
    wide, narrow = wilson(0.5, 10), wilson(0.5, 1000)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


def _rec(case: str, trial: int, passed: bool | None, **kw: object) -> dict:
    base = dict(
        sample=f"{case}#{trial}",
        case_id=case,
        trial=trial,
        category="c",
        tags=["t"],
        status="infra_error" if passed is None else ("passed" if passed else "failed"),
        passed=passed,
        error_type=None,
        latency_s=1.0 + trial,
        ttft_s=0.1,
        steps=2,
        tool_calls=1,
        calls_parsed=1,
        calls_malformed=0,
        repairs=0,
        tool_errors=0,
        tool_results=1,
        prompt_tokens=100,
        completion_tokens=10,
        cached_tokens=50,
    )
    return base | kw


def test_summary_leaves_infra_errors_out_of_rates() -> None:
    records = [
        _rec("a", 0, True),
        _rec("a", 1, True),
        _rec("a", 2, None, error_type="BackendHTTPError"),
        _rec("b", 0, True),
        _rec("b", 1, False),
        _rec("b", 2, False, calls_malformed=1),
    ]
    s = summarize(records, {"options": {"trials": 3}})
    assert (s["scored"], s["infra_errors"], s["passed"], s["failed"]) == (5, 1, 3, 2)
    assert s["pass_at_1"] == pytest.approx((2 / 2 + 1 / 3) / 2)
    assert s["pass_hat_k"]["3"] == pytest.approx(0.0)  # a has 2 scored trials, b fails
    assert s["pass_hat_k"]["2"] == pytest.approx((1 + 0) / 2)
    assert s["malformed_call_rate"] == pytest.approx(1 / 6)
    assert s["latency_s"]["p50"] == pytest.approx(2.0)
    assert s["by_tag"]["t"]["cases"] == 2 and s["error_types"] == {"BackendHTTPError": 1}
