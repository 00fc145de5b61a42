"""The runner's behaviour: infrastructure errors apart from model failures, resume, case
timeouts, selection, exit codes; BFCL through the simulator; the report at scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.sim import FunctionPolicy, SimServer
from evals.runner import EvalOptions, run_suite
from evals.suite import load_suite

AGENT = str(Path(sys.executable).with_name("agent"))

SMALL = """\
name: small
defaults:
  model: {sampling: {temperature: 0.0}}
cases:
  - id: hello
    input: Say hello
    expect: [{answer_contains: Hello}]
    script: [Hello there]
  - id: bye
    input: Say bye
    tags: [farewell]
    expect: [{answer_contains: Bye}]
    script: [Bye now]
  - id: wrong
    input: Say yes
    tags: [farewell]
    expect: [{answer_contains: "yes!"}]
    script: [nope]
  - id: twice
    messages: [first turn, second turn]
    expect: [{answer_equals: two}, {steps: {max: 2}}]
    script: [one, two]
"""


def _suite(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def _agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AGENT, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


async def test_transient_server_errors_are_retried_not_scored(
    tmp_path: Path, sim: SimServer
) -> None:
    sim.policy = FunctionPolicy(lambda r: "Hello there")
    sim.faults.fail_next = 4  # more than the backend's own 3 retries: one sample fails once
    suite = load_suite(_suite(tmp_path))
    options = EvalOptions(
        model_url=sim.url, ids=("hello",), retry_backoff_s=0.01, out=tmp_path / "run"
    )
    folder, summary = await run_suite(suite, options)
    (record,) = _records(folder)
    assert record["status"] == "passed" and record["attempts"] == 2
    assert record["infra"][0]["error_type"] == "BackendHTTPError"
    assert (summary["infra_errors"], summary["infra_retries"], summary["pass_at_1"]) == (0, 1, 1.0)


async def test_a_server_that_stays_down_is_an_infra_error_outside_the_rates(
    tmp_path: Path, sim: SimServer
) -> None:
    sim.policy = FunctionPolicy(lambda r: "Hello there" if "hello" in r.prompt else "Bye now")
    suite = load_suite(_suite(tmp_path))
    options = EvalOptions(
        model_url=sim.url,
        ids=("hello", "bye"),
        retries=1,
        retry_backoff_s=0.01,
        out=tmp_path / "run",
    )

    def fail_bye(request):  # the "bye" case always meets a 503; "hello" is answered
        if "bye" in request.prompt:
            from agent.sim import PolicyError

            raise PolicyError("overloaded", status=503)
        return "Hello there"

    sim.policy = FunctionPolicy(fail_bye)
    folder, summary = await run_suite(suite, options)
    by = {r["sample"]: r for r in _records(folder)}
    assert by["bye#0"]["status"] == "infra_error" and by["bye#0"]["passed"] is None
    assert len(by["bye#0"]["infra"]) == 2 and by["bye#0"]["checks"] == []
    assert (summary["scored"], summary["infra_errors"], summary["pass_at_1"]) == (1, 1, 1.0)


async def test_a_sample_over_its_timeout_fails_as_case_timeout(
    tmp_path: Path, sim: SimServer
) -> None:
    sim.policy = FunctionPolicy(lambda r: "Hello there")
    sim.faults.stall_s = 3.0
    suite = load_suite(_suite(tmp_path))
    options = EvalOptions(model_url=sim.url, ids=("hello",), timeout_s=0.3, out=tmp_path / "run")
    folder, summary = await run_suite(suite, options)
    (record,) = _records(folder)
    assert record["status"] == "failed" and record["result"]["error_type"] == "CaseTimeout"
    assert record["error_type"] == "status_error" and summary["infra_errors"] == 0


def test_cli_run_json_exit_codes_and_selection(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    done = _agent("eval", "run", str(suite), "--sim", "--json", "--out", "a", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert (line["cases"], line["samples"], line["passed"]) == (4, 4, 3)
    assert line["pass_hat_k"] == {"1": 0.75} and line["run_dir"] == "a"
    below = _agent(
        "eval", "run", str(suite), "--sim", "--fail-under", "0.9", "--out", "b", cwd=tmp_path
    )
    assert below.returncode == 1
    tagged = _agent(
        "eval",
        "run",
        str(suite),
        "--sim",
        "--tags",
        "farewell",
        "--trials",
        "2",
        "--json",
        "--out",
        "c",
        cwd=tmp_path,
    )
    assert json.loads(tagged.stdout.strip().splitlines()[-1])["samples"] == 4
    again = _agent("eval", "run", str(suite), "--sim", "--out", "a", cwd=tmp_path)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr
    bad = _agent("eval", "run", str(suite), "--sim", "--ids", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "no case 'nope'" in bad.stderr
    down = _agent("eval", "run", str(suite), "--model-url", "http://127.0.0.1:9", cwd=tmp_path)
    assert (
        down.returncode == 3
        and "cannot reach the model server at http://127.0.0.1:9" in down.stderr
    )


def test_resume_runs_only_what_is_missing(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    first = _agent(
        "eval", "run", str(suite), "--sim", "--trials", "2", "--out", "run", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    samples = tmp_path / "run" / "samples.jsonl"
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:3]) + lines[3][:40])  # a crash mid-write
    (tmp_path / "run" / "summary.json").unlink()
    again = _agent("eval", "run", "--resume", "run", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    records = _records(tmp_path / "run")
    assert [json.dumps(r) for r in records[:3]] == [ln.strip() for ln in lines[:3]]
    assert len(records) == 8 and len({r["sample"] for r in records}) == 8
    assert json.loads(again.stdout.strip().splitlines()[-1])["samples"] == 8
    suite.write_text(SMALL.replace("Say hello", "Say hi"))
    changed = _agent("eval", "run", str(suite), "--resume", "run", cwd=tmp_path)
    assert changed.returncode == 2 and "suite file changed" in changed.stderr


def test_sim_needs_a_script_per_case(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "cases: [{id: a, input: hi}]\n")
    done = _agent("eval", "run", str(suite), "--sim", cwd=tmp_path)
    assert done.returncode == 2 and "case 'a' has no script" in done.stderr


def test_bfcl_gold_scores_all_and_corruption_exactly_the_planned(
    tmp_path: Path, bfcl_data: Path
) -> None:
    gold = _agent(
        "eval",
        "bfcl",
        "--data",
        str(bfcl_data),
        "--sim-gold",
        "--limit",
        "6",
        "--json",
        "--out",
        "g",
        cwd=tmp_path,
    )
    assert gold.returncode == 0, gold.stderr
    assert "SIMULATED" in gold.stderr
    line = json.loads(gold.stdout.strip().splitlines()[-1])
    assert (line["samples"], line["pass_at_1"]) == (30, 1.0)
    bad = _agent(
        "eval",
        "bfcl",
        "--data",
        str(bfcl_data),
        "--sim-gold",
        "--corruption",
        "0.5",
        "--seed",
        "3",
        "--limit",
        "6",
        "--out",
        "c",
        cwd=tmp_path,
    )
    assert bad.returncode == 0, bad.stderr
    records = _records(tmp_path / "c")
    failed = {r["case_id"] for r in records if not r["passed"]}
    planned = {r["case_id"] for r in records if r["planned_corruption"]}
    assert failed == planned and 5 < len(planned) < 25
    check = next(r for r in records if not r["passed"])["checks"][0]
    assert check["check"] == "bfcl_ast" and check["error_type"]


def test_bfcl_smoke_configuration(tmp_path: Path, bfcl_data: Path) -> None:
    config = Path(__file__).resolve().parents[2] / "evals" / "suites" / "bfcl_smoke.yaml"
    done = _agent(
        "eval",
        "bfcl",
        "--config",
        str(config),
        "--data",
        str(bfcl_data),
        "--limit",
        "4",
        "--json",
        "--out",
        "s",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["samples"] == 20 and set(summary["by_category"]) == {
        "simple_python",
        "multiple",
        "parallel",
        "parallel_multiple",
        "irrelevance",
    }
    assert json.loads((tmp_path / "s" / "config.json").read_text())["bfcl"]["corruption"] == 0.1


def test_report_stays_small_at_ten_thousand_samples() -> None:
    from evals._html import render_report
    from evals.metrics import summarize

    events = [
        {
            "kind": "step",
            "step": 1,
            "generation": {
                "text": "x" * 300,
                "content": "",
                "tool_calls": [],
                "errors": [],
                "usage": {"completion_tokens": 5},
                "timings": {"ttft_s": 0.01},
            },
        }
    ]
    records = [
        dict(
            sample=f"c{i % 2000}#{i // 2000}",
            case_id=f"c{i % 2000}",
            trial=i // 2000,
            category=f"k{i % 7}",
            tags=[],
            status="passed" if i % 3 else "failed",
            passed=bool(i % 3),
            error_type=None if i % 3 else "wrong_answer",
            checks=[
                {
                    "check": "answer_contains",
                    "passed": bool(i % 3),
                    "reason": "r",
                    "error_type": None,
                }
            ],
            latency_s=1 + i % 10,
            ttft_s=0.1,
            steps=2,
            tool_calls=1,
            calls_parsed=1,
            calls_malformed=0,
            repairs=0,
            tool_errors=0,
            tool_results=1,
            prompt_tokens=1000,
            completion_tokens=50,
            cached_tokens=900,
            events=events,
            input="q",
            answer="a",
            result={},
        )
        for i in range(10_000)
    ]
    summary = summarize(records, {"options": {"trials": 5}})
    page = render_report({}, summary, records)
    assert len(page) < 8_000_000  # ~0.8 kB a sample, compressed details included
    assert page.count('"c1999#4"') == 1


def test_report_without_matplotlib_says_how_to_install(monkeypatch) -> None:
    from agent.errors import ConfigError
    from evals._html import render_report
    from evals.metrics import summarize

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[evals\]'"):
        render_report({}, summarize([], {}), [])
