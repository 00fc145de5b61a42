"""``agent eval``: run suites and BFCL, then report, compare and query the results.

Thin commands: they parse options and delegate to :mod:`evals` (the runner, the BFCL
command, the report). Progress (cases done, pass rate so far, ETA, tokens/s) goes to
stderr; the summary table to stdout, or with ``--json`` one JSON object on the last line.

Exit codes, as ``agent run``: 0 the eval ran (every sample scored; at or above
``--fail-under`` when given), 1 below ``--fail-under`` or samples left unscored by
infrastructure errors (``--resume`` retries them), 2 bad input, 3 model server unreachable.
Failing cases alone do not change the exit code: gate on them with ``--fail-under``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from agent.cli._options import model_url_option

__all__ = ["eval_group"]

# evals.bfcl.CATEGORIES, spelt out so `agent eval --help` imports nothing.
_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


@click.group("eval")
def eval_group() -> None:
    """Run evaluation suites and BFCL; report, compare and query their results."""


_common = [
    click.option("--json", "as_json", is_flag=True, help="Print one JSON object (last line)."),
    model_url_option("vLLM URL (overrides the suite's)."),
    click.option("--concurrency", type=click.IntRange(1, 4096), help="Samples at once."),
    click.option("--limit", type=click.IntRange(min=1), help="Only the first N cases."),
    click.option("--ids", help="Only these case ids (comma-separated)."),
    click.option(
        "--retries",
        default=2,
        show_default=True,
        type=click.IntRange(0, 20),
        help="Re-runs of a sample after an infrastructure error.",
    ),
    click.option(
        "--fail-under", type=click.FloatRange(0, 1), help="Exit 1 when pass@1 is below this."
    ),
    click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        help="Run folder to create (default: .agent/evals/EVAL_ID).",
    ),
]


def _with_common(fn: Any) -> Any:
    for option in reversed(_common):
        fn = option(fn)
    return fn


@eval_group.command("run")
@click.argument("suite", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_with_common
@click.option(
    "--sim",
    "simulated",
    is_flag=True,
    help="Answer each case from its script on the simulated server.",
)
@click.option(
    "--trials", type=click.IntRange(1, 100), help="k: runs of each case (distinct seeds)."
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds one sample may take.",
)
@click.option("--tags", help="Only cases with one of these tags (comma-separated).")
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="RUN",
    help="Continue a partial eval (its folder or id).",
)
def run_cmd(suite: Path | None, **o: Any) -> None:
    """Run SUITE.yaml: every case × trial, checked, into a run folder.

    Example: agent eval run evals/suites/sql.yaml --sim --trials 3
    """
    from agent.errors import ConfigError
    from evals.runner import EvalOptions, run_suite
    from evals.suite import load_suite

    try:
        resume = _resume_folder(o["resume"]) if o["resume"] else None
        suite, o = _resumed(resume, suite, o) if resume else (suite, o)
        if suite is None:
            raise ConfigError("give a SUITE file (or --resume RUN)")
        loaded = load_suite(suite)
        options = EvalOptions(
            trials=o["trials"],
            concurrency=o["concurrency"],
            timeout_s=o["timeout_s"],
            retries=o["retries"],
            limit=o["limit"],
            ids=_csv(o["ids"]),
            tags=_csv(o["tags"]),
            model_url=o["model_url"],
            simulated=o["simulated"],
            out=o["out"],
            resume=resume,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if options.simulated:
        _say_simulated("answers each case from its script")
    _finish(lambda show: run_suite(loaded, options, show), o)


def _resume_folder(ref: Path) -> Path:
    from evals.results import resolve_run

    return resolve_run(ref)


def _resumed(folder: Path, suite: Path | None, o: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """A resumed eval keeps its plan (suite, trials, selection) and model from config.json."""
    from evals.results import RunFolder

    config = RunFolder(folder).config()
    kept = config.get("options", {})
    o = {**o, "trials": kept.get("trials"), "limit": kept.get("limit")}
    o |= {"ids": ",".join(kept.get("ids") or []), "tags": ",".join(kept.get("tags") or [])}
    o["simulated"] = bool(config.get("model", {}).get("simulated"))
    return suite or Path(config["suite"]["path"]), o


@eval_group.command("bfcl")
@click.option(
    "--data",
    envvar="AGENT_BFCL_DATA",
    show_envvar=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="BFCL_v4 data folder (with possible_answer/).",
)
@click.option(
    "--category",
    default=",".join(_CATEGORIES),
    show_default=True,
    help="Categories, comma-separated.",
)
@_with_common
@click.option("--sim-gold", is_flag=True, help="Simulated model answering from the gold answers.")
@click.option(
    "--corruption",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="With --sim-gold: fraction of cases answered wrongly on purpose.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=int,
    help="Sampling seed; with --sim-gold also picks the corrupted cases.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A BFCL run configuration (YAML); options given here win.",
)
@click.pass_context
def bfcl_cmd(ctx: click.Context, data: Path | None, category: str, **o: Any) -> None:
    """BFCL single-turn function calling: one model call per case, AST-scored.

    --limit N takes the first N cases of each category.
    Example: agent eval bfcl --data ../shared/data/bfcl --sim-gold --limit 20
    """
    from agent.errors import ConfigError
    from evals.bfcl_run import BfclOptions, run_bfcl

    try:
        o, data, category = _bfcl_config(ctx, o, data, category)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if data is None:
        raise click.UsageError("give --data DIR (or AGENT_BFCL_DATA, or data: in --config)")
    options = BfclOptions(
        data=data,
        categories=_csv(category),
        limit=o["limit"],
        ids=_csv(o["ids"]),
        model_url=o["model_url"],
        sim_gold=o["sim_gold"],
        corruption=o["corruption"],
        seed=o["seed"],
        concurrency=o["concurrency"] or 32,
        retries=o["retries"],
        out=o["out"],
    )
    if options.sim_gold:
        _say_simulated(
            f"answers from BFCL's gold answers, corrupting {options.corruption:.0%} on purpose"
        )
    _finish(lambda show: run_bfcl(options, show), o)


def _bfcl_config(
    ctx: click.Context, o: dict[str, Any], data: Path | None, category: str
) -> tuple[dict[str, Any], Path | None, str]:
    """Fill options not given on the command line from ``--config``."""
    if o["config_file"] is None:
        return o, data, category
    from agent._yamlload import load_yaml_model
    from evals.bfcl_run import BfclConfig

    config = load_yaml_model(o["config_file"], BfclConfig)
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    }
    for name in ("limit", "sim_gold", "corruption", "seed", "concurrency"):
        if name not in given:
            o[name] = getattr(config, name)
    if "category" not in given:
        category = ",".join(config.categories)
    if "data" not in given and config.data is not None:
        data = o["config_file"].resolve().parent / config.data
    return o, data, category


def _say_simulated(what: str) -> None:
    click.echo(
        f"model: SIMULATED — the project's simulated vLLM server {what}; no real model is running.",
        err=True,
    )


def _finish(start: Any, o: dict[str, Any]) -> None:
    """Run with progress; print the summary; exit with the eval's code."""
    from agent._gc import tune_gc
    from agent.errors import BackendUnavailable, ConfigError
    from evals.report import print_summary

    tune_gc()  # many runs at once: fewer, cheaper collections
    try:
        path, summary = asyncio.run(_with_progress(start))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except BackendUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    print_summary(summary, path, err=o["as_json"])
    if o["as_json"]:
        click.echo(json.dumps(_json_line(path, summary), ensure_ascii=False))
    sys.exit(_exit_code(summary, o["fail_under"]))


async def _with_progress(start: Any) -> Any:
    from evals.report import LiveProgress

    with LiveProgress() as live:
        return await start(live.update)


def _json_line(path: Path, s: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "cases",
        "trials",
        "samples",
        "passed",
        "failed",
        "pass_at_1",
        "pass_at_1_ci",
        "pass_hat_k",
        "pass_at_k",
        "infra_errors",
        "simulated",
    )
    return {"run_dir": str(path), **{k: s.get(k) for k in keys}, "latency_s": s.get("latency_s")}


def _exit_code(summary: dict[str, Any], fail_under: float | None) -> int:
    if summary["scored"] == 0 and summary["infra_errors"]:
        return 3 if set(summary["infra_error_kinds"]) <= {"backend_unavailable"} else 1
    if summary["infra_errors"]:
        return 1
    if fail_under is not None and (summary["pass_at_1"] or 0.0) < fail_under:
        return 1
    return 0


@eval_group.command("report")
@click.argument("run", metavar="RUN")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the HTML (default: RUN/report.html).",
)
@click.option("--no-html", is_flag=True, help="Print the table only.")
def report_cmd(run: str, html_path: Path | None, no_html: bool) -> None:
    """Print RUN's summary and failures; write a self-contained HTML report.

    Example: agent eval report .agent/evals/eval_20261130T071500_3f2a9c
    """
    from agent.errors import ConfigError
    from evals import report
    from evals.results import RunFolder, resolve_run

    try:
        folder = RunFolder(resolve_run(run))
        summary = report.ensure_summary(folder)
        report.print_summary(summary, folder.path)
        report.print_failures(folder)
        if not no_html:
            out = report.write_html(folder, html_path)
            click.echo(f"report: {out}", err=True)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@eval_group.command("compare")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compare_cmd(run_a: str, run_b: str, as_json: bool) -> None:
    """Cases that flipped between RUN_A and RUN_B, and metric deltas with 95% intervals.

    Example: agent eval compare eval_..._3f2a9c eval_..._77b1e0
    """
    from agent.errors import ConfigError
    from evals import compare
    from evals.results import RunFolder, resolve_run

    try:
        a, b = RunFolder(resolve_run(run_a)), RunFolder(resolve_run(run_b))
        result = compare.compare(a, b)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, default=str))
    else:
        compare.print_comparison(result)


@eval_group.command("query")
@click.argument("run", metavar="RUN")
@click.argument("sql", metavar="SQL")
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list of objects.")
@click.option(
    "--max-rows",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows shown at most.",
)
def query_cmd(run: str, sql: str, as_json: bool, max_rows: int) -> None:
    """Run SQL (DuckDB) over RUN's samples: views samples, samples_all and checks.

    Example: agent eval query RUN "SELECT case_id, avg(latency_s) FROM samples GROUP BY 1"
    """
    from agent.errors import ConfigError
    from evals import query
    from evals.results import resolve_run

    try:
        columns, rows = query.run_query(resolve_run(run), sql)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    query.print_rows(columns, rows[:max_rows], as_json=as_json, total=len(rows))
