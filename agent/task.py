"""Task files: one YAML file says which model, which tools, which input and which limits.

```yaml
name: top-customers
model: {url: http://127.0.0.1:8000, sampling: {temperature: 0.2}}
system: You are a careful analyst.
input: "Which {n} customers spent most in {year}?"
vars: {n: 3}                     # defaults; --var year=2024 adds or overrides
tools:
  enabled: [sql_tables, sql_query, read_file]
  sql: {database: shop.duckdb}   # tools.policy.SqlPolicy; also http, files, sandbox
limits: {max_steps: 10}
workspace: data/                 # relative to this file's folder (the default)
approval: {require: side_effects}
services: [{name: api, command: [python, -m, http.server, "8081"], ready_url: "http://127.0.0.1:8081/"}]
```

Every model is pydantic with ``extra="forbid"``: a typo is an error, never a silently
ignored key. :func:`load_task` reports each problem as ``FILE:LINE: key.path: what is wrong
(how to fix)``; the line mapping lives in :mod:`agent._yamlload` (also behind
:func:`load_yaml_model`, for other YAML formats such as eval suites).

Choices worth knowing:
- ``model.url`` unset means "from ``--model-url``, else ``AGENT_MODEL_URL``, else
  ``http://127.0.0.1:8000``" (:meth:`ModelConfig.urls`); a ``--model-url`` wins over the file.
- ``approval.require`` defaults to ``side_effects``: calls that write (files, non-GET HTTP,
  SQL with ``read_only: false``) wait for a human, reads run freely. The default policies
  are read-only, so most tasks never ask.
- ``store`` is a folder (default ``.agent`` in the working directory, holding ``runs.db``
  and checkpoints) or a ``postgres://`` URL for checkpoints.
- Missing ``{var}`` in ``input`` is caught at load time, so a run never starts half-configured.

>>> Task(input="Hi").limits.max_steps
20
"""

from __future__ import annotations

import os
import string
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import Field, PrivateAttr, WithJsonSchema, field_validator

from agent._yamlload import (
    URL_PATTERN,
    Loc,
    NestedProblem,
    Problem,
    format_problems,
    line_of,
    load_yaml_model,
    validate_file,
)
from agent.config import ApprovalMode, ApprovalRule, ConfigModel, Limits, Sampling, ToolChoice
from agent.errors import ConfigError
from tools.policy import PolicySet, ToolPolicies

__all__ = [
    "DEFAULT_MODEL_URL",
    "Approval",
    "ModelConfig",
    "ServiceSpec",
    "Task",
    "ToolsConfig",
    "load_task",
    "load_yaml_model",
    "task_json_schema",
]

DEFAULT_MODEL_URL = "http://127.0.0.1:8000"
_Url = Annotated[str, Field(pattern=URL_PATTERN)]
# Numbers are accepted and turned into text (`year: 2024`); the schema says so for editors.
_Text = Annotated[str, WithJsonSchema({"type": ["string", "number"]})]


class ModelConfig(ConfigModel):
    """Which server(s) and how to sample."""

    url: _Url | list[_Url] | None = Field(
        None, description="vLLM base URL(s); several = replicas. None: --model-url/env/default."
    )
    name: str | None = Field(None, description="Served model name; None: ask /v1/models.")
    mode: Literal["completions", "chat"] = Field(
        "completions", description="completions: our ChatML + parser; chat: the server's."
    )
    sampling: Sampling = Field(default_factory=Sampling)
    constrained_tool_calls: bool = Field(
        False, description="Constrain <tool_call> bodies to the tools' schemas."
    )
    tool_choice: ToolChoice = Field(
        "auto",
        description="auto, required (a tool call is forced), none (no tools shown), or a tool's "
        "name (a call to it is forced); required and a name hold until the run's first call.",
    )
    constrained_repair: bool = Field(
        False, description="After a malformed call, constrain the retry to the tools' schemas."
    )
    timeout_s: float = Field(120.0, gt=0, description="Total deadline of one model call.")
    kv_budget: int | Literal["auto"] | None = Field(
        None,
        description="KV-aware admission: runs start only while their contexts fit this many "
        "tokens per server ('auto': 90% of the server's KV cache); none: all start at once.",
    )

    def urls(
        self, override: str | None = None, env: typing.Mapping[str, str] | None = None
    ) -> list[str]:
        """Server URLs: ``override`` (``--model-url``), the file, ``AGENT_MODEL_URL``, default.

        >>> ModelConfig().urls(env={})
        ['http://127.0.0.1:8000']
        """
        if override:
            return [override]
        if self.url:
            return [self.url] if isinstance(self.url, str) else list(self.url)
        env = env if env is not None else os.environ
        return [env.get("AGENT_MODEL_URL") or DEFAULT_MODEL_URL]


class ToolsConfig(PolicySet):
    """Which tools the model may call, and the policies that confine them."""

    enabled: list[str] = Field(default_factory=list, description="Tool names, e.g. sql_query.")

    @field_validator("enabled")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if dupes := _repeated(names):
            raise ValueError(f"tool listed twice: {dupes} (list each tool once)")
        return names


class Approval(ConfigModel):
    """Which tool calls wait for a human: none, side_effects (writes), all, or named tools."""

    require: ApprovalMode | list[str] = "side_effects"

    def rule(self) -> ApprovalRule:
        """As ``Agent(approval=...)`` takes it: ``Approval(require=["a"]).rule() == ("a",)``."""
        return self.require if isinstance(self.require, str) else tuple(self.require)


class ServiceSpec(ConfigModel):
    """A local process the task needs (a fake API, a database), started before the run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    command: list[str] = Field(min_length=1, description="argv; no shell.")
    cwd: Path | None = Field(None, description="Relative to the task file's folder.")
    env: dict[str, _Text] = Field(default_factory=dict, description="Added to the environment.")
    ready_url: _Url | None = Field(None, description="GET until it answers 2xx.")
    ready_timeout_s: float = Field(30.0, gt=0)


class Task(ConfigModel):
    """A task file, validated. Load one with :func:`load_task`."""

    name: str | None = None
    description: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    system: str | None = Field(None, description="System prompt (joined with the tools turn).")
    input: str = Field(description="The user's input; {var} is replaced, {{ }} is a brace.")
    vars: dict[str, _Text] = Field(default_factory=dict, description="Defaults for {var}.")
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    limits: Limits = Field(default_factory=Limits)
    output_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema the final answer must match (JSON mode)."
    )
    workspace: Path | None = Field(None, description="Tools' folder; default: the file's folder.")
    approval: Approval = Field(default_factory=Approval)
    store: str = Field(".agent", description="Run store folder, or a postgres:// URL.")
    services: list[ServiceSpec] = Field(default_factory=list)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _path: Path | None = PrivateAttr(None)
    _given_vars: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("input")
    @classmethod
    def _input_template(cls, text: str) -> str:
        _template_fields(text)
        return text

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise NestedProblem(
                    f"not a valid JSON Schema: {exc.message} (see json-schema.org)",
                    tuple(exc.path),
                ) from None
        return schema

    @field_validator("services")
    @classmethod
    def _unique_services(cls, services: list[ServiceSpec]) -> list[ServiceSpec]:
        if dupes := _repeated([s.name for s in services]):
            raise ValueError(f"service name used twice: {dupes}")
        return services

    @property
    def base_dir(self) -> Path:
        """Folder of the task file (the working directory for tasks built in code)."""
        return self._base_dir

    @property
    def path(self) -> Path | None:
        """The task file, when loaded from one."""
        return self._path

    def variables(self) -> set[str]:
        """Names used in ``input``: ``{'year'}`` for ``"sales in {year}"``."""
        return set(_template_fields(self.input))

    def render_input(self, vars: dict[str, str] | None = None) -> str:
        """``input`` with ``{var}`` replaced: file ``vars``, then load-time vars, then ``vars``.

        >>> Task(input="in {y} {{x}}").render_input({"y": "2024"})
        'in 2024 {x}'
        """
        values = {**self.vars, **self._given_vars, **(vars or {})}
        missing = [n for n in _template_fields(self.input) if n not in values]
        if missing:
            where = f"{self._path}: " if self._path else ""
            raise ConfigError(f"{where}input: {_missing_var(missing[0])}")
        return self.input.format_map(values)

    def workspace_dir(self) -> Path:
        """``workspace`` resolved against the task file's folder, absolute."""
        ws = self._base_dir / (self.workspace or ".")
        return ws.resolve()

    def tool_policies(self) -> ToolPolicies:
        """The dispatcher's policies, with the workspace as an absolute path."""
        policies = {name: getattr(self.tools, name) for name in PolicySet.model_fields}
        return ToolPolicies(workspace=self.workspace_dir(), **policies)


def task_json_schema() -> dict[str, Any]:
    """The JSON Schema of task files, for editors: ``task_json_schema()["title"] == "Task"``."""
    schema = Task.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _repeated(names: list[str]) -> str:
    """Names that occur more than once, sorted and comma-joined; ``""`` when none.

    >>> _repeated(["a", "b", "a"])
    'a'
    """
    return ", ".join(sorted({n for n in names if names.count(n) > 1}))


def _missing_var(name: str) -> str:
    return f"missing variable '{name}' (pass --var {name}=VALUE or set it under vars:)"


def _template_fields(text: str) -> list[str]:
    """Variable names in a ``str.format`` template; raises ValueError for what we refuse."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{exc} (write '{{{{' or '}}}}' for a literal brace)") from None
    names: list[str] = []
    for _, field, spec, conv in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conv:
            raise ValueError(
                f"'{{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}' is not "
                "a plain {name} variable (use {name}, or '{{' '}}' for literal braces)"
            )
        names.append(field)
    return names


# ---- loading: YAML with line numbers (agent._yamlload), then task-level checks ----------


def load_task(path: str | Path, vars: dict[str, str] | None = None) -> Task:
    """Read, validate and resolve a task file; ``vars`` are ``--var`` values.

    Raises ConfigError listing every problem as ``FILE:LINE: key.path: what (how to fix)``.
    ``load_task("examples/sql/task.yaml", {"year": "2024"}).render_input()``
    """
    path = Path(path)
    task, lines, problems = validate_file(path, Task)
    if task is not None:
        task._base_dir, task._path = path.resolve().parent, path
        task._given_vars = dict(vars or {})
        problems.extend(_check_resolved(task, lines))
    if problems:
        raise ConfigError(format_problems(path, problems))
    assert task is not None
    return task


def _check_resolved(task: Task, lines: dict[Loc, int]) -> list[Problem]:
    problems = []
    known = {**task.vars, **task._given_vars}
    for name in dict.fromkeys(task.variables()):
        if name not in known:
            problems.append((line_of(lines, ("input",)), "input", _missing_var(name)))
    problems.extend(_check_tool_names(task, lines))
    ws = task.workspace_dir()
    if not ws.is_dir():
        problems.append(
            (
                line_of(lines, ("workspace",)),
                "workspace",
                f"folder {ws} does not exist (create it, or fix the path: it is "
                "relative to the task file's folder)",
            )
        )
    return problems


def _check_tool_names(task: Task, lines: dict[Loc, int]) -> list[Problem]:
    """Every enabled tool exists (built-ins and installed plugins), before anything starts."""
    if not task.tools.enabled and task.model.tool_choice in ("auto", "required", "none"):
        return []
    from tools.registry import ToolRegistry

    registry = ToolRegistry.default()
    problems = []
    choice = task.model.tool_choice
    if choice not in ("auto", "required", "none") and choice not in task.tools.enabled:
        problems.append(
            (
                line_of(lines, ("model", "tool_choice")),
                "model.tool_choice",
                f"'{choice}' is not auto, required, none or an enabled tool "
                f"(enabled: {', '.join(task.tools.enabled) or 'none'})",
            )
        )
    for i, name in enumerate(task.tools.enabled):
        if name not in registry:
            close = registry.closest(name)
            hint = f"did you mean '{close}'? " if close else ""
            problems.append(
                (
                    line_of(lines, ("tools", "enabled", i)),
                    f"tools.enabled[{i}]",
                    f"unknown tool '{name}' ({hint}available: {', '.join(registry.names())})",
                )
            )
    return problems
