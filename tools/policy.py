"""Policies: what each built-in tool may do. Task files carry these; so does the CLI.

Pydantic models with ``extra="forbid"`` because they arrive from YAML and the command
line. Paths are kept as given; the caller resolves them (task files resolve relative
paths against the task file's folder).

>>> HttpPolicy(allowed_hosts=["api.example.com"]).allowed_methods
['GET']
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.config import ConfigModel

__all__ = [
    "FilesPolicy",
    "HttpPolicy",
    "PolicySet",
    "SandboxPolicy",
    "SqlPolicy",
    "ToolPolicies",
]


class HttpPolicy(ConfigModel):
    """Policy of ``http_request``."""

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the tool may reach; '*' means any public host. None by default.",
    )
    allowed_methods: list[str] = Field(
        default_factory=lambda: ["GET"], description="HTTP methods allowed (upper case)."
    )
    allow_private_network: bool = Field(
        False, description="Allow loopback, private and link-local addresses (off: SSRF guard)."
    )
    timeout_s: float = Field(30.0, gt=0, description="Total deadline of one request, seconds.")
    max_response_bytes: int = Field(
        2_000_000, gt=0, description="Bytes read from a body (after decompression) at most."
    )
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed at most.")


class SqlPolicy(ConfigModel):
    """Policy of ``sql_query`` and ``sql_tables`` (DuckDB)."""

    database: Path | None = Field(
        None, description="DuckDB database file, relative to the workspace; None = in memory."
    )
    read_only: bool = Field(True, description="Allow only SELECT-like statements.")
    max_rows: int = Field(200, gt=0, description="Rows returned to the model at most.")
    max_bytes: int = Field(20_000, gt=0, description="Characters of rendered result at most.")
    timeout_s: float = Field(10.0, gt=0, description="max_execution_time of one query, seconds.")
    memory_limit: str = Field("1GB", description="DuckDB memory_limit.")
    threads: int = Field(2, gt=0, description="DuckDB threads.")


class FilesPolicy(ConfigModel):
    """Policy of ``list_files``, ``read_file``, ``write_file`` and ``search_files``."""

    allow_write: bool = Field(False, description="Enable write_file.")
    max_read_bytes: int = Field(1_000_000, gt=0, description="Largest file read_file reads.")
    max_write_bytes: int = Field(1_000_000, gt=0, description="Largest content write_file writes.")
    max_workspace_bytes: int = Field(
        100_000_000, gt=0, description="write_file refuses to grow the workspace past this."
    )
    max_results: int = Field(200, gt=0, description="Entries/matches listed at most.")
    search_timeout_s: float = Field(
        5.0, gt=0, description="Wall-clock limit of one search_files call."
    )


class SandboxPolicy(ConfigModel):
    """Limits of the worker process that runs file and DuckDB tools."""

    memory_mb: int = Field(2048, gt=0, description="Address-space limit of the worker (MiB).")
    cpu_s: int = Field(300, gt=0, description="CPU seconds of the worker before it is killed.")
    file_size_mb: int = Field(256, gt=0, description="Largest file the worker may write (MiB).")
    call_timeout_s: float = Field(30.0, gt=0, description="Hard timeout of one tool call.")
    use_bwrap: bool | None = Field(
        None, description="Force bubblewrap on/off; None = use it when installed."
    )
    shared: bool = Field(
        True,
        description="Runs with the same workspace, policies and tools share pooled workers "
        "(each run's state kept apart); false: a worker of its own for each run.",
    )
    pool_size: int | None = Field(
        None, gt=0, description="Workers a pool group may start; None: the CPU count (≥ 2)."
    )


class PolicySet(ConfigModel):
    """Every tool policy but the workspace: a task file's ``tools:`` section extends it
    (adding ``enabled``) and its top-level ``workspace:`` completes it."""

    http: HttpPolicy = Field(default_factory=HttpPolicy)
    sql: SqlPolicy = Field(default_factory=SqlPolicy)
    files: FilesPolicy = Field(default_factory=FilesPolicy)
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)
    max_concurrency: int = Field(8, gt=0, description="Tool calls run at once in one run.")
    max_result_chars: int = Field(
        16_000, gt=0, description="Characters of a tool result shown to the model."
    )


class ToolPolicies(PolicySet):
    """All policies of one run. ``workspace`` confines the file and DuckDB tools."""

    workspace: Path = Field(Path("."), description="Folder the file and SQL tools are confined to.")
