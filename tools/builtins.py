"""The built-in tools: thin, documented wrappers over the implementations.

``http_request`` runs in the dispatcher's process (async, its own SSRF guard and deadline);
the SQL and file tools run in the sandbox worker (``sandbox="process"``), where each run
keeps a `tools.sql.SqlEngine` (an open DuckDB connection; read-only engines are shared by
the runs of a worker, see `_engine`) and a `tools.files.FileSandbox` in its state
(`ToolContext.resource`).

The docstrings below are what the model reads: keep them short and concrete. The
implementations are imported inside the functions, so listing the tools (``agent tools``)
never imports DuckDB or httpx.

They are registered by the same ``register(registry)`` hook that plugins use
(see `tools.registry`).

>>> from tools.registry import ToolRegistry
>>> "sql_query" in ToolRegistry.default(plugins=False)
True
"""

from __future__ import annotations

from typing import Any, Literal

from tools.base import ToolContext, tool

__all__ = [
    "BUILTINS",
    "http_request",
    "list_files",
    "read_file",
    "register",
    "search_files",
    "sql_query",
    "sql_tables",
    "write_file",
]


SANDBOX_MODULES = ("tools.sql", "tools.files")
"""What the sandboxed tools here import when they first run: a worker template imports
them ahead (`tools._worker`), so each worker forked from it has DuckDB loaded already."""


def _sql_writes(arguments: dict[str, Any]) -> bool:
    """Judged by DuckDB's own parse: ``WITH … DELETE`` and ``EXPLAIN ANALYZE COPY`` write."""
    from tools.sql import writes

    return writes(str(arguments.get("query", "")))


def _engine(ctx: ToolContext) -> Any:
    """The run's DuckDB engine; read-only, one engine serves every run of the worker.

    A read-only engine refuses every statement that could leave state behind (writes,
    ``CREATE TEMP``, ``SET``, transactions), and each call runs on its own cursor, so runs
    sharing it cannot see each other; sharing saves ~4 MB of DuckDB per run. A writable
    one is the run's own (its in-memory tables are nobody else's).
    """
    from tools.sql import SqlEngine

    policies = ctx.policies
    return ctx.resource(
        "sql",
        lambda: SqlEngine(policies.sql, ctx.workspace, file_writes=policies.files.allow_write),
        shared=policies.sql.read_only,
    )


def _files(ctx: ToolContext) -> Any:
    from tools.files import FileSandbox

    return ctx.resource("files", lambda: FileSandbox(ctx.policies.files, ctx.workspace))


def _http_effects(arguments: dict[str, Any]) -> bool:
    """The effective method: overrides and bodies count (see `tools.http`)."""
    from tools.http import has_side_effects

    return has_side_effects(arguments)


@tool(side_effects=_http_effects)
async def http_request(
    url: str,
    ctx: ToolContext,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET",
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> str:
    """Make an HTTP request to an allowed host; returns the status, content type and body text.

    Args:
        url: Full http(s) URL, e.g. "https://api.example.com/items?id=3".
        method: HTTP method; only the methods this task allows succeed.
        headers: Extra request headers.
        body: Request body (for POST/PUT/PATCH), e.g. a JSON string.
    """
    from tools.http import http_request as _http

    return await _http(ctx.policies.http, url, method, headers, body)


@tool(sandbox="process", side_effects=_sql_writes)
def sql_query(
    query: str, ctx: ToolContext, params: list[Any] | dict[str, Any] | None = None
) -> str:
    """Run one DuckDB SQL statement; files in the workspace can be queried by name.

    Example: SELECT region, sum(amount) FROM 'sales.csv' GROUP BY region

    Args:
        query: Exactly one SQL statement.
        params: Values for ? / $1 placeholders (a list) or $name placeholders (an object).
    """
    return _engine(ctx).query(query, params, on_cursor=ctx.on_cancel)


@tool(sandbox="process")
def sql_tables(ctx: ToolContext) -> str:
    """List the tables and data files (CSV, Parquet, JSON) available to sql_query, with columns."""
    return _engine(ctx).tables()


@tool(sandbox="process")
def list_files(ctx: ToolContext, path: str = ".") -> str:
    """List one directory of the workspace: names, sizes, sub-directories marked '/'.

    Args:
        path: Directory relative to the workspace root, e.g. "data".
    """
    return _files(ctx).list_files(path)


@tool(sandbox="process")
def read_file(
    path: str, ctx: ToolContext, start_line: int | None = None, end_line: int | None = None
) -> str:
    """Read a text file of the workspace, optionally only some lines.

    Args:
        path: File relative to the workspace root, e.g. "notes/todo.md".
        start_line: First line to return (1-based).
        end_line: Last line to return (inclusive).
    """
    return _files(ctx).read_file(path, start_line, end_line)


@tool(sandbox="process", side_effects=True)
def write_file(path: str, content: str, ctx: ToolContext) -> str:
    """Create or overwrite a text file in the workspace (only if this task allows writes).

    Args:
        path: File relative to the workspace root; missing folders are created.
        content: The complete new text of the file.
    """
    return _files(ctx).write_file(path, content)


@tool(sandbox="process")
def search_files(pattern: str, ctx: ToolContext, path: str = ".", glob: str | None = None) -> str:
    """Search text files of the workspace for a regular expression; returns matching lines.

    Args:
        pattern: Python regular expression, e.g. "TODO|FIXME".
        path: Directory to search, relative to the workspace root.
        glob: Only files whose name matches this glob, e.g. "*.py".
    """
    return _files(ctx).search_files(pattern, path, glob)


BUILTINS = (http_request, sql_query, sql_tables, list_files, read_file, write_file, search_files)


def register(registry: Any) -> None:
    """The built-ins' plugin hook: the same path third-party tools take."""
    for t in BUILTINS:
        registry.register(t)
