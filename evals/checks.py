"""Checks: deterministic verdicts on one sample (a case's run), each with a reason.

A check is a function ``fn(params, sample) -> Verdict`` (sync or async) with a pydantic
model of its parameters, registered under a name; a suite's ``expect:`` list names checks
with their parameters (``- answer_contains: North``). Plugins register checks the way
tool plugins register tools (simonw/llm's pattern): a distribution declares an entry point
in the group ``agent.checks`` naming a ``register(registry)`` hook::

    # pyproject.toml of a plugin
    [project.entry-points."agent.checks"]
    mine = "my_checks:register"

    # my_checks.py
    def register(registry):
        registry.register("answer_is_polite", polite, PoliteParams, shorthand="level")

The built-in checks load through the same hook (:func:`evals._checks_run.register`,
:func:`evals._checks_state.register`). A check that raises is reported as failed with
``error_type: check_error`` and the exception in its reason: never a crash of the eval.

>>> reg = CheckRegistry.default()
>>> reg.parse({"answer_contains": "North"})[1].text
['North']
"""

from __future__ import annotations

import inspect
import json
import math
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.errors import ConfigError
from agent.types import RunResult, ToolCall, ToolResult

__all__ = [
    "ENTRY_POINT_GROUP",
    "CheckOutcome",
    "CheckRegistry",
    "CheckSpec",
    "HttpRecord",
    "SampleView",
    "Verdict",
    "match_value",
]

ENTRY_POINT_GROUP = "agent.checks"


@dataclass(frozen=True)
class Verdict:
    """What a check says: ``passed``, why (always, pass or fail), and a short failure type.

    >>> Verdict(False, "answer lacks 'North'", "wrong_answer").passed
    False
    """

    passed: bool
    reason: str
    error_type: str | None = None


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict as a sample records it (``check`` is the check's name)."""

    check: str
    passed: bool
    reason: str
    error_type: str | None
    params: dict[str, Any]


@dataclass(frozen=True)
class HttpRecord:
    """One request a recorded local service received during a sample."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: str
    status: int

    def json(self) -> Any:
        """The body decoded as JSON, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass
class SampleView:
    """What checks see of one finished sample: its run's result and events, its workspace,
    the requests its recorded services received, and how long it took."""

    case_id: str
    trial: int
    input: str
    result: RunResult
    events: list[Any] = field(default_factory=list)
    workspace: Path | None = None
    database: Path | None = None
    """The workspace's DuckDB file (``tools.sql.database``), when the case has one."""
    http: dict[str, list[HttpRecord]] = field(default_factory=dict)
    latency_s: float = 0.0

    @property
    def answer(self) -> Any:
        return self.result.answer

    @property
    def answer_text(self) -> str:
        """The answer as text (JSON answers as JSON text; no answer as ``""``)."""
        a = self.result.answer
        if a is None:
            return ""
        return a if isinstance(a, str) else json.dumps(a, ensure_ascii=False)

    @property
    def calls(self) -> list[ToolCall]:
        """Every tool call the model made, in order."""
        return [e.call for e in self.events if getattr(e, "kind", "") == "tool_call"]

    @property
    def tool_results(self) -> list[ToolResult]:
        return [e.result for e in self.events if getattr(e, "kind", "") == "tool_result"]

    def status_of(self, call: ToolCall) -> str | None:
        """The status of ``call``'s result (``ok``, ``error``…), or None if it has none."""
        for r in self.tool_results:
            if r.call_id == call.id:
                return r.status
        return None


Fn = Callable[[Any, SampleView], Any]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its function, parameter model, and the field a bare value fills
    (``answer_contains: North`` means ``{text: North}``)."""

    name: str
    fn: Fn
    params: type[BaseModel]
    shorthand: str | None = None
    source: str = "built-in"

    @property
    def description(self) -> str:
        return (inspect.getdoc(self.fn) or "").split("\n\n")[0]


class CheckRegistry:
    """Checks by name. :meth:`default` holds the built-ins and installed plugins.

    >>> "tool_called" in CheckRegistry.default().names()
    True
    """

    def __init__(self) -> None:
        self._checks: dict[str, CheckSpec] = {}
        self._source = "user"

    def register(
        self, name: str, fn: Fn, params: type[BaseModel], *, shorthand: str | None = None
    ) -> None:
        """Add a check; a name taken already is a ConfigError naming both sources."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ConfigError(f"check name {name!r}: use lower-case letters, digits and _")
        if name in self._checks:
            raise ConfigError(
                f"check {name!r} registered twice ({self._checks[name].source} and "
                f"{self._source}); rename one"
            )
        if shorthand is not None and shorthand not in params.model_fields:
            raise ConfigError(f"check {name!r}: shorthand {shorthand!r} is not a parameter")
        self._checks[name] = CheckSpec(name, fn, params, shorthand, self._source)

    def load_plugin(self, hook: Callable[[CheckRegistry], Any], source: str) -> None:
        """Call a ``register(registry)`` hook; its failures name the plugin."""
        previous, self._source = self._source, source
        try:
            hook(self)
        except ConfigError as exc:
            raise ConfigError(f"check plugin {source}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(
                f"check plugin {source} failed while registering: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._source = previous

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            source = f"entry point {ep.name!r} ({ep.value})"
            try:
                hook = ep.load()
            except Exception as exc:
                raise ConfigError(
                    f"check plugin {source} could not be imported: {type(exc).__name__}: {exc}"
                ) from exc
            self.load_plugin(hook, source)

    @staticmethod
    @cache
    def default() -> CheckRegistry:
        """The built-in checks and every installed ``agent.checks`` plugin (loaded once)."""
        from evals import _checks_run, _checks_state

        reg = CheckRegistry()
        reg.load_plugin(_checks_run.register, "built-in")
        reg.load_plugin(_checks_state.register, "built-in")
        reg.load_entry_points()
        return reg

    def names(self) -> list[str]:
        return sorted(self._checks)

    def __iter__(self) -> Any:
        return iter(self._checks[n] for n in self.names())

    def get(self, name: str) -> CheckSpec:
        return self._checks[name]

    def parse(self, item: Any) -> tuple[CheckSpec, BaseModel]:
        """One ``expect:`` item (``{name: params}``) as its check and validated parameters.

        Raises ValueError saying what is wrong (unknown name with the closest one, or the
        parameters' validation errors).
        """
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError("each check is one mapping {check_name: parameters}")
        ((name, raw),) = item.items()
        if name not in self._checks:
            import difflib

            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown check '{name}' ({hint}known: {', '.join(self.names())})")
        spec = self._checks[name]
        if spec.shorthand is not None and _is_shorthand(spec.params, spec.shorthand, raw):
            raw = {spec.shorthand: raw}
        try:
            return spec, spec.params.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            raise ValueError(f"{name}: {_errors(exc)}") from None

    async def run(self, item: dict[str, Any], sample: SampleView) -> CheckOutcome:
        """Run one check on ``sample``; an exception becomes a failed ``check_error``."""
        spec, params = self.parse(item)
        shown = params.model_dump(mode="json", exclude_defaults=True)
        try:
            verdict = spec.fn(params, sample)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        except Exception as exc:
            verdict = Verdict(False, f"the check raised {type(exc).__name__}: {exc}", "check_error")
        return CheckOutcome(spec.name, verdict.passed, verdict.reason, verdict.error_type, shown)


def _is_shorthand(model: type[BaseModel], shorthand: str, raw: Any) -> bool:
    """Whether ``raw`` is the shorthand field's value rather than the parameters: any
    non-mapping; a mapping only when that field takes one and ``raw`` names no parameter
    (``json_fields: {total: 3}``)."""
    if not isinstance(raw, dict):
        return raw is not None
    annotation = model.model_fields[shorthand].annotation
    if annotation is not dict and typing.get_origin(annotation) is not dict:
        return False
    names = {n for n, f in model.model_fields.items() for n in (n, f.alias) if n}
    return not names & set(raw)


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# -- matching expected values against actual ones (arguments, JSON fields, bodies) --------

MATCHERS = ("$regex", "$contains", "$any", "$approx")


def match_value(expected: Any, actual: Any, where: str = "") -> str | None:
    """``None`` when ``actual`` matches ``expected``, else a reason naming where it differs.

    Mappings match as subsets (extra keys in ``actual`` are fine); lists element by
    element; numbers by value (``1 == 1.0``, ``True`` is not ``1``). A mapping with one
    key among ``$regex``, ``$contains``, ``$any``, ``$approx`` is a matcher.

    >>> match_value({"q": {"$contains": "GROUP BY"}}, {"q": "SELECT … GROUP BY region"})
    >>> match_value({"city": "Oslo"}, {"city": "Lisbon"})
    "city: expected 'Oslo', got 'Lisbon'"
    """
    here = where or "value"
    if isinstance(expected, dict) and len(expected) == 1 and next(iter(expected)) in MATCHERS:
        return _matcher(*next(iter(expected.items())), actual, here)
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{here}: expected an object, got {_show(actual)}"
        for key, value in expected.items():
            sub = f"{where}.{key}" if where else str(key)
            if key not in actual:
                return f"{sub}: missing"
            if (reason := match_value(value, actual[key], sub)) is not None:
                return reason
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{here}: expected {_show(expected)}, got {_show(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            if (reason := match_value(e, a, f"{where}[{i}]")) is not None:
                return reason
        return None
    return (
        None
        if _same(expected, actual)
        else f"{here}: expected {_show(expected)}, got {_show(actual)}"
    )


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    return type(expected) is type(actual) and expected == actual


def _matcher(op: str, arg: Any, actual: Any, where: str) -> str | None:
    if op == "$any":
        return None
    if op == "$approx":
        value, tol = (arg, 1e-6) if not isinstance(arg, list) else (arg[0], arg[1])
        ok = isinstance(actual, int | float) and not isinstance(actual, bool)
        if ok and abs(actual - value) <= tol:
            return None
        return f"{where}: expected {value} ± {tol}, got {_show(actual)}"
    if not isinstance(actual, str):
        return f"{where}: expected text, got {_show(actual)}"
    if op == "$contains":
        return None if str(arg) in actual else f"{where}: {_show(actual)} lacks {_show(arg)}"
    if re.search(str(arg), actual):
        return None
    return f"{where}: {_show(actual)} does not match /{arg}/"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ordinal_calls(calls: Iterable[ToolCall]) -> str:
    """``sql_tables(), sql_query(query=…)`` — calls in a reason, short."""
    shown = [f"{c.name}({', '.join(c.arguments)})" for c in calls]
    return ", ".join(shown) or "no calls"
