"""What the page's left column chooses, and what it says about tools and the model.

:class:`Settings` is one turn's choice (mode, system prompt, tools, schema, sampling,
``tool_choice``, model URL). :func:`task_for` turns it into a :class:`~agent.task.Task`
derived from the task the server started with, so a page run is configured exactly like
``agent run`` would configure it (services, limits, approval, store). The page chooses
among tools and sampling; it never widens a policy: workspace, hosts, writes and
services come from the server's task file and command line only.

>>> Settings(mode="chat", tools=("sql_query",)).enabled_tools()
()
>>> Settings(mode="chat", tool_choice="sql_query").effective_tool_choice()
'auto'
>>> schema_problem('{"type": "object"}') is None
True
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import jsonschema

from agent.config import Sampling
from agent.errors import ConfigError
from agent.task import Task
from tools.policy import ToolPolicies

__all__ = [
    "MODES",
    "TOOL_CHOICES",
    "ModelStatus",
    "Settings",
    "model_status",
    "policy_summary",
    "schema_problem",
    "task_for",
]

Mode = Literal["chat", "tools", "json"]
MODES: dict[str, str] = {"chat": "Chat", "tools": "Function calling", "json": "JSON"}
TOOL_CHOICES = ("auto", "required", "none")
_URL = re.compile(r"^https?://[^\s/?#]+(:\d+)?/?$")


@dataclass(frozen=True)
class Settings:
    """One turn's settings, as the left column holds them."""

    mode: Mode = "tools"
    system: str = ""
    tools: tuple[str, ...] = ()
    schema: str = ""
    """JSON mode: the JSON Schema the answer must match, as text."""
    temperature: float | None = 0.7
    top_p: float | None = None
    max_tokens: int = 1024
    seed: int | None = None
    tool_choice: str = "auto"
    model_url: str = ""

    def enabled_tools(self) -> tuple[str, ...]:
        """Chat mode is a plain conversation: no tools whatever is ticked."""
        return () if self.mode == "chat" else self.tools

    def effective_tool_choice(self) -> str:
        """Chat mode offers no tools, so it has no ``tool_choice``: ``auto`` whatever the
        dropdown (disabled in Chat mode, keeping its value for a switch back) holds.
        Function calling and JSON mode offer the ticked tools and take the choice as is."""
        return "auto" if self.mode == "chat" else self.tool_choice

    def output_schema(self) -> dict[str, Any] | None:
        """The parsed schema in JSON mode (``ConfigError`` saying what is wrong), else None."""
        if self.mode != "json":
            return None
        problem = schema_problem(self.schema)
        if problem:
            raise ConfigError(f"JSON schema: {problem}")
        return json.loads(self.schema)

    def sampling(self) -> Sampling:
        """The sampling fields as vLLM takes them (``top_p`` 1.0 is the server's default)."""
        return Sampling(
            temperature=self.temperature,
            top_p=None if self.top_p in (None, 1.0) else self.top_p,
            max_tokens=int(self.max_tokens),
            seed=self.seed,
        )

    def check_url(self) -> str:
        """The model URL, or ConfigError when it is not ``http(s)://HOST[:PORT]``."""
        url = self.model_url.strip().rstrip("/")
        if not _URL.match(url):
            raise ConfigError(f"model URL {url!r}: use http(s)://HOST[:PORT]")
        return url


def schema_problem(text: str) -> str | None:
    """Why ``text`` is not a usable JSON Schema (for the editor, as you type), or None.

    >>> schema_problem('{"type": "objct"}')[:27]
    "not a valid JSON Schema: 'o"
    """
    if not text.strip():
        return 'empty: write a JSON Schema, e.g. {"type": "object"}'
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    if not isinstance(schema, dict):
        return f"a schema is a JSON object, not {type(schema).__name__}"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    return None


def task_for(base: Task, settings: Settings) -> Task:
    """The server's task with this turn's settings (and its policies, services, store).
    The page's sampling controls override the task's; its other sampling fields stay.

    The page's ``tool_choice`` reaches the core as the task's ``model.tool_choice``
    (``auto`` in Chat mode: :meth:`Settings.effective_tool_choice`).
    """
    # The page sets these four; the task's other sampling fields (penalties, stop
    # strings, top_k...) are kept, as `agent run` would send them.
    page = settings.sampling().model_dump(include={"temperature", "top_p", "max_tokens", "seed"})
    model_update: dict[str, Any] = {
        "sampling": base.model.sampling.model_copy(update=page),
        "url": settings.check_url(),
        "tool_choice": settings.effective_tool_choice(),
    }
    return base.model_copy(
        update={
            "system": settings.system.strip() or None,
            "output_schema": settings.output_schema(),
            "model": base.model.model_copy(update=model_update),
            "tools": base.tools.model_copy(update={"enabled": list(settings.enabled_tools())}),
        }
    )


def policy_summary(
    name: str, policies: ToolPolicies, approval: Any, side_effects: bool | Literal["some"]
) -> str:
    """One line on what a tool may do under the server's policies (``side_effects``:
    always, never, or ``"some"`` calls, e.g. HTTP methods other than GET).

    >>> policy_summary("http_request", ToolPolicies(), "side_effects", "some")
    'hosts: none; methods: GET; writes ask approval'
    """
    files, sql, http = policies.files, policies.sql, policies.http
    hosts = ", ".join(http.allowed_hosts) if http.allowed_hosts else "none"
    summaries = {
        "http_request": f"hosts: {hosts}; methods: {', '.join(http.allowed_methods)}"
        + ("; private network allowed" if http.allow_private_network else ""),
        "sql_query": "DuckDB on the workspace, "
        + ("read-only" if sql.read_only else "writes allowed")
        + f", {sql.max_rows} rows max",
        "sql_tables": "lists the workspace's tables and files",
        "list_files": "lists the workspace",
        "read_file": "reads workspace files",
        "search_files": "searches the workspace",
        "write_file": "writes in the workspace" if files.allow_write else "writes disabled",
    }
    line = summaries.get(name, "plugin tool (its own policy)")
    if isinstance(approval, tuple | list):
        asks: bool | str = name in approval
    else:
        asks = approval == "all" or (approval == "side_effects" and side_effects)
    if asks == "some":
        return line + "; writes ask approval"
    return line + ("; asks approval" if asks else "")


@dataclass(frozen=True)
class ModelStatus:
    """What ``GET {url}/v1/models`` said."""

    reachable: bool
    model: str | None = None
    max_model_len: int | None = None
    error: str | None = None

    def text(self, simulated: bool = False) -> str:
        """One line for the page: ``reachable · MODEL · context 131,072 tokens``."""
        if not self.reachable:
            return f"unreachable: {self.error}"
        parts = ["reachable", self.model or "(no model listed)"]
        if self.max_model_len:
            parts.append(f"context {self.max_model_len:,} tokens")
        if simulated:
            parts.append("SIMULATED")
        return " · ".join(parts)


async def model_status(url: str, timeout_s: float = 2.0) -> ModelStatus:
    """Ask the server which model it serves and its context length (a short timeout).

    It sends the key the page's runs send (``AGENT_VLLM_API_KEY``, read as
    :class:`~agent.llm.vllm.VLLMConfig` reads it): a vLLM started with ``--api-key``
    answers ``/v1/models`` only with it.
    """
    try:
        url = Settings(model_url=url).check_url()
        headers = _auth_headers()
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.get(f"{url}/v1/models", headers=headers)
        response.raise_for_status()
        data = response.json().get("data") or [{}]
    except ConfigError as exc:
        return ModelStatus(False, error=str(exc))
    except httpx.HTTPStatusError as exc:
        error = f"HTTP {exc.response.status_code} from {url}/v1/models"
        if exc.response.status_code == 401:
            error += (
                ": the key in AGENT_VLLM_API_KEY was refused"
                if headers
                else ": the server wants an API key (vLLM --api-key): set AGENT_VLLM_API_KEY "
                "before agent ui"
            )
        return ModelStatus(False, error=error)
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return ModelStatus(False, error=f"{type(exc).__name__}: {exc}"[:200])
    first = data[0] if isinstance(data[0], dict) else {}
    length = first.get("max_model_len")
    return ModelStatus(True, first.get("id"), length if isinstance(length, int) else None)


def _auth_headers() -> dict[str, str]:
    """What the backend sends with every request (its default key: env
    ``AGENT_VLLM_API_KEY``)."""
    from agent.llm.vllm import VLLMConfig

    return VLLMConfig().auth_headers()
