"""``agent eval query RUN "SQL"``: DuckDB over a run's ``samples.jsonl``.

Views (in-memory DuckDB; the run folder is only read):

- ``samples`` — one row per case × trial (the last record of each sample): ``sample``,
  ``case_id``, ``trial``, ``category``, ``tags``, ``status`` (``passed``, ``failed``,
  ``infra_error``), ``passed``, ``error_type``, ``failed_checks``, ``latency_s``,
  ``ttft_s``, ``steps``, ``tool_calls``, token counts, ``repairs``, ``tool_errors``…;
  ``checks`` is a list of structs; ``result``, ``events``, ``answer``, ``input``, ``http``
  and ``infra`` are JSON (``result->>'status'``).
- ``samples_all`` — every record, superseded infrastructure errors included.
- ``checks`` — one row per check: ``sample``, ``case_id``, ``trial``, ``check``,
  ``passed``, ``reason``, ``error_type``.

>>> _COLUMNS["checks"].startswith("STRUCT")
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

__all__ = ["connect", "print_rows", "run_query"]

_CHECK = 'STRUCT("check" VARCHAR, passed BOOLEAN, reason VARCHAR, error_type VARCHAR, params JSON)'
_COLUMNS = {
    "v": "VARCHAR",
    "sample": "VARCHAR",
    "case_id": "VARCHAR",
    "trial": "INTEGER",
    "seed": "BIGINT",
    "category": "VARCHAR",
    "tags": "VARCHAR[]",
    "input": "JSON",
    "status": "VARCHAR",
    "passed": "BOOLEAN",
    "error_type": "VARCHAR",
    "failed_checks": "VARCHAR[]",
    "checks": _CHECK + "[]",
    "result": "JSON",
    "latency_s": "DOUBLE",
    "ttft_s": "DOUBLE",
    "steps": "INTEGER",
    "tool_calls": "INTEGER",
    "calls_parsed": "INTEGER",
    "calls_malformed": "INTEGER",
    "repairs": "INTEGER",
    "tool_errors": "INTEGER",
    "tool_results": "INTEGER",
    "prompt_tokens": "BIGINT",
    "completion_tokens": "BIGINT",
    "cached_tokens": "BIGINT",
    "answer": "JSON",
    "attempts": "INTEGER",
    "infra": "JSON",
    "http": "JSON",
    "started_at": "DOUBLE",
    "planned_corruption": "VARCHAR",
    "events": "JSON",
}


def connect(run_dir: Path) -> Any:
    """An in-memory DuckDB connection with the run's views."""
    import duckdb

    path = Path(run_dir) / "samples.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path}: missing (is {run_dir} an eval run folder?)")
    con = duckdb.connect()
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _COLUMNS.items()) + "}"
    literal = str(path).replace("'", "''")
    con.execute(
        f"CREATE VIEW samples_all AS SELECT * FROM read_json('{literal}', "
        f"format='newline_delimited', columns={columns}, ignore_errors=true)"
    )
    con.execute(
        "CREATE VIEW samples AS SELECT * FROM samples_all "
        "QUALIFY row_number() OVER (PARTITION BY sample ORDER BY started_at DESC) = 1"
    )
    con.execute(
        'CREATE VIEW checks AS SELECT sample, case_id, trial, c.check AS "check", c.passed, '
        "c.reason, c.error_type FROM samples, unnest(checks) AS t(c)"
    )
    return con


def run_query(run_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of ``sql`` over the run's views; errors are ConfigErrors."""
    import duckdb

    con = connect(run_dir)
    try:
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()
    except duckdb.Error as exc:
        raise ConfigError(f"query failed: {exc} (tables: samples, samples_all, checks)") from None
    finally:
        con.close()


def print_rows(
    columns: list[str], rows: list[tuple[Any, ...]], *, as_json: bool, total: int
) -> None:
    """A table (rich) or a JSON list of objects, on stdout."""
    import click

    if as_json:
        click.echo(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str))
        return
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=box.SIMPLE)
    for c in columns:
        table.add_column(escape(c), overflow="fold")
    for r in rows:
        table.add_row(*(escape(_cell(v)) for v in r))
    console = Console(highlight=False)
    console.print(table)
    if total > len(rows):
        console.print(f"({len(rows)} of {total} rows; --max-rows to see more)")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
