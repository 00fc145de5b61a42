"""Suite files: cases to run an agent on, what each must achieve, how many times.

```yaml
name: sales-sql
defaults:                         # the agent every case starts from
  task: ../../examples/sales_duckdb/task.yaml    # optional base; the keys below override it
  tools: {enabled: [sql_tables, sql_query]}
  limits: {max_steps: 6}
trials: 3                         # k: each case runs k times (distinct seeds) -> pass^k
concurrency: 8
cases:
  - id: top-region
    input: Which region sold most in {year}?
    vars: {year: "2026"}
    tags: [aggregate]
    expect:
      - tool_called: {name: sql_query, arguments: {query: {$contains: GROUP BY}}}
      - answer_contains: North
    script: [...]                 # raw model outputs, for the simulator (--sim)
```

Validated like task files (:mod:`agent._yamlload`): an unknown key, a misspelt check or
bad check parameters is an error naming the key and its line, before anything runs.
A case's effective configuration is the task file (if any), then ``defaults``, then the
case's own keys, merged key by key (:meth:`Suite.case_task` builds it as a
:class:`agent.task.Task`). Paths resolve against the suite file's folder.

>>> Case(id="c1", input="Hi").trial_script(0)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, WithJsonSchema, model_validator

from agent._yamlload import Loc, Problem, format_problems, line_of, validate_file
from agent.config import ConfigModel, Limits, Sampling
from agent.errors import ConfigError
from agent.task import Approval, ModelConfig, Task, ToolsConfig, load_task
from evals.checks import CheckRegistry

__all__ = [
    "Case",
    "Defaults",
    "EvalService",
    "SimSettings",
    "Suite",
    "load_suite",
    "suite_json_schema",
]

_Text = Annotated[str, WithJsonSchema({"type": ["string", "number"]})]
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"


class EvalService(ConfigModel):
    """A local process the suite needs, started once for the whole eval. ``{port}`` in
    ``command``, ``env``, ``ready_url`` and ``url`` is replaced by a free port."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    command: list[str] = Field(min_length=1, description="argv; no shell.")
    cwd: Path | None = Field(None, description="Relative to the suite file's folder.")
    env: dict[str, _Text] = Field(default_factory=dict)
    ready_url: str | None = Field(None, pattern=r"^https?://\S+$")
    ready_timeout_s: float = Field(30.0, gt=0)
    url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="Record the requests this service receives (for http checks): its base "
        "URL. Cases reach it through {NAME_url}, a recording proxy per sample.",
    )

    @property
    def var(self) -> str:
        """The input variable holding the recorded URL: ``{weather_url}``."""
        return f"{self.name}_url"


class _Overrides(ConfigModel):
    """What a case may change relative to ``defaults`` (each merged key by key)."""

    system: str | None = None
    tools: ToolsConfig | None = None
    limits: Limits | None = None
    output_schema: dict[str, Any] | None = None
    workspace: Path | None = Field(None, description="Relative to the suite file's folder.")
    approval: Approval | None = None
    setup_sql: list[str] | None = Field(
        None,
        description="SQL run on the workspace database (tools.sql.database) before each "
        "sample that gets its own copy of the workspace (created if missing).",
    )


class Defaults(_Overrides):
    """The agent every case starts from: a task file and/or the keys of one."""

    task: Path | None = Field(None, description="A task file to start from (its input is unused).")
    model: ModelConfig | None = None


class Case(_Overrides):
    """One case: an input, what the run must achieve, and (for the simulator) a script."""

    id: str = Field(pattern=_ID)
    input: str | None = Field(None, description="The user's input; {var} is filled.")
    messages: list[str] | None = Field(
        None, min_length=1, description="Successive user turns of one conversation."
    )
    vars: dict[str, _Text] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    category: str | None = Field(
        None, description="For per-category rates (default: the suite's name)."
    )
    sampling: Sampling | None = Field(None, description="Merged into model.sampling.")
    expect: list[dict[str, Any]] = Field(default_factory=list, description="Checks; all must pass.")
    script: list[str] | None = Field(
        None, description="Simulated model outputs, one per assistant turn."
    )
    scripts: list[list[str]] | None = Field(
        None, min_length=1, description="One script per trial (trial t plays scripts[t % n])."
    )

    @model_validator(mode="after")
    def _one_of(self) -> Case:
        if (self.input is None) == (self.messages is None):
            raise ValueError("give either input or messages (exactly one)")
        if self.script is not None and self.scripts is not None:
            raise ValueError("give either script or scripts, not both")
        return self

    @property
    def turns(self) -> list[str]:
        """The user turns (templates): ``[input]`` or ``messages``."""
        return [self.input] if self.input is not None else list(self.messages or [])

    def trial_script(self, trial: int) -> list[str] | None:
        """The simulated outputs trial ``trial`` plays (None without a script)."""
        if self.scripts is not None:
            return self.scripts[trial % len(self.scripts)]
        return self.script


class SimSettings(ConfigModel):
    """The simulated server ``agent eval run --sim`` starts."""

    profile: Literal["instant", "h100", "h200"] = "instant"
    speed: float = Field(1.0, gt=0)


class Suite(ConfigModel):
    """An eval suite file, validated. Load one with :func:`load_suite`."""

    name: str | None = None
    description: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    vars: dict[str, _Text] = Field(default_factory=dict, description="Defaults for every case.")
    services: list[EvalService] = Field(default_factory=list)
    trials: int = Field(1, ge=1, le=100, description="k: runs of each case (distinct seeds).")
    concurrency: int = Field(8, ge=1, le=4096, description="Samples running at once.")
    timeout_s: float = Field(300.0, gt=0, description="Wall-clock limit of one sample.")
    seed: int = Field(0, description="Trial t samples with seed + t.")
    approve: Literal["all", "none"] = Field(
        "all", description="Calls that need approval (approval.require): all run, or none."
    )
    sim: SimSettings = Field(default_factory=SimSettings)
    cases: list[Case] = Field(min_length=1)

    _path: Path | None = PrivateAttr(None)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _base_task: dict[str, Any] = PrivateAttr(default_factory=dict)
    _digest: str = PrivateAttr("")

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def digest(self) -> str:
        """sha256 of the suite file's bytes (``--resume`` refuses a changed suite)."""
        return self._digest

    @property
    def title(self) -> str:
        return self.name or (self._path.stem if self._path else "suite")

    def case_task(self, case: Case) -> tuple[Task, list[str]]:
        """The case's effective configuration as a Task, and its setup SQL.

        The Task's ``input`` is a placeholder: a sample's input is the case's, rendered."""
        merged = _merge(self._base_task, self._layer(self.defaults, exclude={"task"}))
        merged = _merge(merged, self._layer(case, only=set(_Overrides.model_fields)))
        if case.sampling is not None:
            sampling = case.sampling.model_dump(exclude_unset=True)
            merged = _merge(merged, {"model": {"sampling": sampling}})
        setup = merged.pop("setup_sql", None) or []
        task = Task.model_validate({**merged, "input": "(eval case)"})
        task._base_dir = self._base_dir
        return task, setup

    def _layer(
        self, model: ConfigModel, *, exclude: set[str] = frozenset(), only: set[str] | None = None
    ) -> dict[str, Any]:  # type: ignore[assignment]
        data = model.model_dump(exclude_unset=True, exclude=set(exclude))
        if only is not None:
            data = {k: v for k, v in data.items() if k in only}
        if data.get("workspace") is not None:
            data["workspace"] = str((self._base_dir / data["workspace"]).resolve())
        return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, mappings merged key by key (``{"a": {"x": 1}}`` + ``{"a":
    {"y": 2}}`` → ``{"a": {"x": 1, "y": 2}}``); other values replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "output_schema":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def suite_json_schema() -> dict[str, Any]:
    """The JSON Schema of suite files (``agent schema suite``), checks included."""
    schema = Suite.model_json_schema()
    defs = schema.setdefault("$defs", {})
    variants = []
    for spec in CheckRegistry.default():
        params = spec.params.model_json_schema(by_alias=False)
        defs.update(params.pop("$defs", {}))
        value: dict[str, Any] = params
        if spec.shorthand is not None:
            short = params["properties"][spec.shorthand]
            value = {"anyOf": [params, short]}
        variants.append(
            {
                "type": "object",
                "description": spec.description,
                "properties": {spec.name: value},
                "required": [spec.name],
                "additionalProperties": False,
            }
        )
    defs["Case"]["properties"]["expect"]["items"] = {"anyOf": variants}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# ---- loading ----------------------------------------------------------------------------


def load_suite(path: str | Path, tools: tuple[str, ...] = ()) -> Suite:
    """Read and validate a suite file: its keys, its checks, each case's configuration.

    Raises ConfigError listing every problem as ``FILE:LINE: key.path: what (how to fix)``.
    ``tools``: names of tools given in code (``EvalOptions.extra_tools``), besides the
    built-ins and plugins. ``load_suite("evals/suites/sql.yaml").cases[0].id``
    """
    path = Path(path)
    suite, lines, problems = validate_file(path, Suite)
    if suite is not None:
        suite._path, suite._base_dir = path, path.resolve().parent
        suite._digest = hashlib.sha256(path.read_bytes()).hexdigest()
        problems.extend(_load_base_task(suite, lines))
        if not problems:
            problems.extend(_check_cases(suite, lines, set(tools)))
    if problems:
        raise ConfigError(format_problems(path, problems, "suite file"))
    assert suite is not None
    return suite


def _load_base_task(suite: Suite, lines: dict[Loc, int]) -> list[Problem]:
    if suite.defaults.task is None:
        return []
    task_path = suite.base_dir / suite.defaults.task
    where = (line_of(lines, ("defaults", "task")), "defaults.task")
    try:
        task = load_task(task_path)
    except ConfigError as exc:
        return [(*where, f"the task file has problems: {exc}")]
    data = task.model_dump(
        exclude_unset=True, exclude={"input", "vars", "services", "store", "name"}
    )
    data["workspace"] = str(task.workspace_dir())
    if task.services:
        return [
            (
                *where,
                "the task file has services: list them under the suite's services: (started once)",
            )
        ]
    suite._base_task = data
    return []


def _check_cases(suite: Suite, lines: dict[Loc, int], tools: set[str]) -> list[Problem]:
    from tools.registry import ToolRegistry

    problems: list[Problem] = []
    registry = CheckRegistry.default()
    known_tools = set(ToolRegistry.default().names()) | tools
    seen: dict[str, int] = {}
    service_vars = {s.var for s in suite.services}
    for i, case in enumerate(suite.cases):
        at = ("cases", i)
        if case.id in seen:
            problems.append(
                (
                    line_of(lines, (*at, "id")),
                    f"cases[{i}].id",
                    f"duplicate case id {case.id!r} (first in cases[{seen[case.id]}])",
                )
            )
        seen.setdefault(case.id, i)
        for j, item in enumerate(case.expect):
            try:
                registry.parse(item)
            except ValueError as exc:
                problems.append(
                    (line_of(lines, (*at, "expect", j)), f"cases[{i}].expect[{j}]", str(exc))
                )
        problems.extend(_check_config(suite, case, i, lines, service_vars, known_tools))
    return problems


def _check_config(
    suite: Suite,
    case: Case,
    i: int,
    lines: dict[Loc, int],
    service_vars: set[str],
    tools: set[str],
) -> list[Problem]:
    """The case's merged configuration is a valid task; its variables and tools exist."""
    at, key = ("cases", i), f"cases[{i}]"
    known = {*suite.vars, *case.vars, *service_vars}
    for t, template in enumerate(case.turns):
        try:
            missing = [v for v in Task(input=template).variables() if v not in known]
        except ValidationError as exc:
            return [(line_of(lines, at), key, exc.errors()[0]["msg"].removeprefix("Value error, "))]
        if missing:
            where = "input" if case.input is not None else f"messages[{t}]"
            return [
                (
                    line_of(lines, (*at, where)),
                    f"{key}.{where}",
                    f"missing variable '{missing[0]}' (set it under vars:)",
                )
            ]
    try:
        task, _ = suite.case_task(case)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return [
            (line_of(lines, at), key, f"the merged configuration is invalid: {loc}: {err['msg']}")
        ]
    unknown = [n for n in task.tools.enabled if n not in tools]
    if unknown:
        return [
            (
                line_of(lines, at),
                key,
                f"unknown tool '{unknown[0]}' (available: {', '.join(sorted(tools))})",
            )
        ]
    if not task.workspace_dir().is_dir():
        return [(line_of(lines, at), key, f"workspace {task.workspace_dir()} does not exist")]
    return []


def canonical(value: Any) -> str:
    """Stable JSON text of a value, for hashing configurations.

    >>> canonical({"b": 1, "a": [2]})
    '{"a":[2],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
