"""Built-in checks on the world after a run: the workspace database, files, HTTP requests.

These look at effects, not at what the model said: a query run on the sample's DuckDB
database after the run (rows compared as a bag unless ``ordered``), files in the sample's
workspace, and the requests a recorded local service received during the sample (see
:mod:`evals._recording`). Each sample that writes gets its own copy of the workspace
(:mod:`evals.runner`), so these see that sample's effects only.

>>> _bag_match([[1, "a"], [2, "b"]], [(2, "b"), (1, "a")], 1e-9, ordered=False)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import hashlib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evals.checks import HttpRecord, SampleView, Verdict, match_value

__all__ = ["register"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- SQL state ----------------------------------------------------------------------------


class Sql(_Params):
    query: str
    rows: list[list[Any] | dict[str, Any]]
    ordered: bool = Field(False, description="Rows must come in this order (else: a bag).")
    tolerance: float = Field(1e-9, ge=0, description="Absolute tolerance for numbers.")
    database: str | None = Field(
        None, description="DuckDB file in the workspace; default: tools.sql.database."
    )


async def sql(p: Sql, s: SampleView) -> Verdict:
    """``query`` run on the sample's workspace database after the run returns ``rows``
    (a bag unless ``ordered``; rows as lists, or as mappings of the columns to compare)."""
    if s.workspace is None:
        return Verdict(False, "the sample has no workspace", "no_database")
    db = _inside(s.workspace, p.database) if p.database else s.database
    if db is None or not db.is_file():
        shown = p.database or "tools.sql.database"
        return Verdict(False, f"no database file {shown} in the workspace", "no_database")
    columns, rows = await asyncio.to_thread(_query, db, p.query)
    if any(isinstance(r, dict) for r in p.rows):
        wanted = list(p.rows[0]) if isinstance(p.rows[0], dict) else []
        missing = [c for c in wanted if c not in columns]
        if missing:
            return Verdict(
                False, f"query has no column {missing[0]!r} (has {columns})", "sql_mismatch"
            )
        rows = [tuple(row[columns.index(c)] for c in wanted) for row in rows]
        expected = [list(r.values()) if isinstance(r, dict) else r for r in p.rows]
    else:
        expected = [list(r) for r in p.rows]  # type: ignore[arg-type]
    reason = _bag_match(expected, rows, p.tolerance, ordered=p.ordered)
    if reason is None:
        return Verdict(True, f"{len(rows)} rows as expected")
    return Verdict(False, reason, "sql_mismatch")


def _query(db: Path, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(query)
        columns = [d[0] for d in cursor.description or []]
        return columns, cursor.fetchall()
    finally:
        con.close()


def _bag_match(
    expected: list[list[Any]], actual: list[tuple[Any, ...]], tol: float, *, ordered: bool
) -> str | None:
    """None when the rows match (as a bag, or in order), else what differs."""
    got = [[_plain(v) for v in row] for row in actual]
    if len(got) != len(expected):
        return f"{len(got)} rows, expected {len(expected)}: got {_rows(got)}"
    if ordered:
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            if not _row_equal(e, g, tol):
                return f"row {i + 1}: expected {e}, got {g}"
        return None
    unused = list(range(len(got)))
    for e in expected:
        hit = next((i for i in unused if _row_equal(e, got[i], tol)), None)
        if hit is None:
            return f"no row {e} in the result {_rows(got)}"
        unused.remove(hit)
    return None


def _row_equal(e: list[Any], g: list[Any], tol: float) -> bool:
    return len(e) == len(g) and all(_cell_equal(a, b, tol) for a, b in zip(e, g, strict=True))


def _cell_equal(e: Any, g: Any, tol: float) -> bool:
    if isinstance(e, bool) or isinstance(g, bool):
        return type(e) is type(g) and e == g
    if isinstance(e, int | float) and isinstance(g, int | float):
        return abs(e - g) <= tol
    return type(e) is type(g) and e == g


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return value


def _rows(rows: list[list[Any]], n: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:n])
    return f"[{shown}{', …' if len(rows) > n else ''}]"


# -- files --------------------------------------------------------------------------------


class File(_Params):
    path: str
    exists: bool = True
    equals: str | None = Field(None, description="The whole content (text).")
    contains: list[str] = Field(default_factory=list)
    regex: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    @field_validator("contains", mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def file(p: File, s: SampleView) -> Verdict:
    """File ``path`` in the sample's workspace exists (or not, ``exists: false``) and has
    the given content: ``equals``, ``contains``, ``regex``, ``sha256``."""
    if s.workspace is None:
        return Verdict(False, "the sample has no workspace", "file_missing")
    path = _inside(s.workspace, p.path)
    if not p.exists:
        if path.exists():
            return Verdict(False, f"{p.path} exists", "file_exists")
        return Verdict(True, f"{p.path} does not exist")
    if not path.is_file():
        return Verdict(False, f"{p.path} does not exist", "file_missing")
    data = path.read_bytes()
    text = data.decode("utf-8", errors="replace")
    if p.sha256 is not None and hashlib.sha256(data).hexdigest() != p.sha256.lower():
        return Verdict(
            False,
            f"{p.path}: sha256 {hashlib.sha256(data).hexdigest()[:12]}…, expected {p.sha256[:12]}…",
            "file_content",
        )
    if p.equals is not None and text != p.equals:
        return Verdict(
            False,
            f"{p.path}: content differs ({len(text)} chars, expected {len(p.equals)})",
            "file_content",
        )
    missing = [c for c in p.contains if c not in text]
    if missing:
        return Verdict(False, f"{p.path} lacks {', '.join(map(repr, missing))}", "file_content")
    if p.regex is not None and not re.search(p.regex, text):
        return Verdict(False, f"{p.path} does not match /{p.regex}/", "file_content")
    return Verdict(True, f"{p.path} as expected ({len(data)} bytes)")


def _inside(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{relative!r} is outside the workspace")
    return path


# -- HTTP requests a recorded service received --------------------------------------------


class Http(_Params):
    service: str
    method: str | None = None
    path: str | dict[str, Any] | None = Field(None, description="Exact, or a matcher.")
    query: dict[str, Any] = Field(default_factory=dict, description="Subset of the query.")
    body: Any = Field(None, description="JSON body subset, or a matcher on the text.")
    count: int | None = Field(None, ge=0)
    min_count: int = Field(1, ge=0)
    max_count: int | None = Field(None, ge=0)


def http(p: Http, s: SampleView) -> Verdict:
    """The recorded service ``service`` received requests like this (``method``, ``path``,
    ``query`` subset, ``body``): ``count`` of them, or between ``min_count`` (1) and
    ``max_count``."""
    if p.service not in s.http:
        known = ", ".join(s.http) or "none"
        return Verdict(
            False, f"service {p.service!r} is not recorded (recorded: {known})", "no_service"
        )
    seen = s.http[p.service]
    matching = [r for r in seen if _request_matches(p, r) is None]
    low, high = (p.count, p.count) if p.count is not None else (p.min_count, p.max_count)
    n = len(matching)
    if n >= low and (high is None or n <= high):
        return Verdict(True, f"{p.service} received {n} matching request{'s' * (n != 1)}")
    shown = "; ".join(f"{r.method} {r.path}{_qs(r)}" for r in seen[:6]) or "nothing"
    why = f" ({_request_matches(p, seen[0])})" if seen and n < low else ""
    want = str(low) if low == high else f"at least {low}" if high is None else f"{low} to {high}"
    return Verdict(
        False,
        f"{p.service} received {n} matching requests, expected {want}{why}; received: {shown}",
        "missing_request" if n < low else "extra_requests",
    )


def _request_matches(p: Http, r: HttpRecord) -> str | None:
    if p.method is not None and r.method.upper() != p.method.upper():
        return f"method {r.method}, expected {p.method.upper()}"
    if p.path is not None and (reason := match_value(p.path, r.path, "path")) is not None:
        return reason
    query = {k: v[0] if len(v) == 1 else v for k, v in r.query.items()}
    if (reason := match_value(p.query, query, "query")) is not None:
        return reason
    if p.body is not None:
        decoded = r.json()
        target = decoded if isinstance(p.body, dict | list) and decoded is not None else r.body
        if (reason := match_value(p.body, target, "body")) is not None:
            return reason
    return None


def _qs(r: HttpRecord) -> str:
    pairs = [f"{k}={v}" for k, vs in r.query.items() for v in vs]
    return "?" + "&".join(pairs) if pairs else ""


def register(registry: Any) -> None:
    """Register the built-in state checks (the ``agent.checks`` hook of this package)."""
    registry.register("sql", sql, Sql, shorthand=None)
    registry.register("file", file, File, shorthand="path")
    registry.register("http", http, Http, shorthand=None)
