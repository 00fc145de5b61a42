"""Built-in checks on what a run produced: its answer, its tool calls, its status and cost.

Registered by :func:`register`, the same hook a plugin provides. Each check's docstring
is its help (``agent eval checks`` would list them; README's table is built from these).

>>> from evals.checks import CheckRegistry
>>> CheckRegistry.default().get("answer_regex").shorthand
'pattern'
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.types import RunStatus
from evals.checks import SampleView, Verdict, match_value, ordinal_calls

__all__ = ["register"]

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


# -- the answer --------------------------------------------------------------------------


class AnswerEquals(_Params):
    value: Any
    ignore_case: bool = False


def answer_equals(p: AnswerEquals, s: SampleView) -> Verdict:
    """The final answer equals ``value`` (text: surrounding whitespace ignored; JSON
    answers: equal values)."""
    if not isinstance(p.value, str) or not isinstance(s.answer, str):
        reason = match_value(p.value, s.answer, "answer")
        return Verdict(reason is None, reason or "answer equals the expected value", "wrong_answer")
    got, want = s.answer.strip(), p.value.strip()
    if p.ignore_case:
        got, want = got.casefold(), want.casefold()
    if got == want:
        return Verdict(True, f"answer is {p.value!r}")
    return Verdict(
        False, f"answer is {_clip(s.answer_text)!r}, expected {p.value!r}", "wrong_answer"
    )


class AnswerContains(_Params):
    text: list[str] = Field(min_length=1, description="Every one must appear.")
    ignore_case: bool = False

    @field_validator("text", mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        return _listify(value)


def answer_contains(p: AnswerContains, s: SampleView) -> Verdict:
    """The final answer contains every string of ``text``."""
    got = s.answer_text.casefold() if p.ignore_case else s.answer_text
    missing = [t for t in p.text if (t.casefold() if p.ignore_case else t) not in got]
    if missing:
        return Verdict(
            False,
            f"answer {_clip(s.answer_text)!r} lacks {', '.join(map(repr, missing))}",
            "wrong_answer",
        )
    return Verdict(True, f"answer contains {', '.join(map(repr, p.text))}")


class AnswerRegex(_Params):
    pattern: str
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return pattern


def answer_regex(p: AnswerRegex, s: SampleView) -> Verdict:
    """The final answer matches the regular expression ``pattern`` (``re.search``)."""
    if re.search(p.pattern, s.answer_text, re.IGNORECASE if p.ignore_case else 0):
        return Verdict(True, f"answer matches /{p.pattern}/")
    return Verdict(
        False, f"answer {_clip(s.answer_text)!r} does not match /{p.pattern}/", "wrong_answer"
    )


class AnswerNumber(_Params):
    value: float
    tolerance: float = Field(0.0, ge=0, description="Absolute.")
    rel_tolerance: float = Field(0.0, ge=0, description="Relative to value.")
    field: str | None = Field(None, description="A JSON answer's field (dotted path).")


def answer_number(p: AnswerNumber, s: SampleView) -> Verdict:
    """A number in the answer (``1,234.5`` counts) is within the tolerance of ``value``;
    with ``field``, that field of a JSON answer is."""
    if p.field is not None:
        found = _field(s.answer, p.field)
        numbers = [found] if isinstance(found, int | float) and not isinstance(found, bool) else []
    elif isinstance(s.answer, int | float) and not isinstance(s.answer, bool):
        numbers = [s.answer]
    else:
        numbers = [float(m.replace(",", "")) for m in _NUMBER.findall(s.answer_text)]
    tol = max(p.tolerance, p.rel_tolerance * abs(p.value))
    close = [n for n in numbers if abs(n - p.value) <= tol]
    if close:
        return Verdict(True, f"answer has {close[0]:g} (expected {p.value:g} ± {tol:g})")
    shown = ", ".join(f"{n:g}" for n in numbers[:8]) or "no number"
    return Verdict(False, f"expected {p.value:g} ± {tol:g}; answer has {shown}", "wrong_number")


# -- JSON answers -------------------------------------------------------------------------


class JsonSchema(_Params):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid(cls, schema: dict[str, Any]) -> dict[str, Any]:
        jsonschema.validators.validator_for(schema).check_schema(schema)
        return schema


def json_schema(p: JsonSchema, s: SampleView) -> Verdict:
    """The answer is JSON (or decodes as JSON) and validates against ``schema``."""
    value, error = _json_answer(s)
    if error:
        return Verdict(False, error, "not_json")
    problems = sorted(
        jsonschema.validators.validator_for(p.json_schema)(p.json_schema).iter_errors(value),
        key=lambda e: list(e.path),
    )
    if problems:
        first = problems[0]
        where = ".".join(map(str, first.path)) or "answer"
        return Verdict(False, f"{where}: {first.message}", "schema_mismatch")
    return Verdict(True, "answer validates against the schema")


class JsonFields(_Params):
    fields: dict[str, Any] = Field(min_length=1, description="Dotted path -> expected value.")


def json_fields(p: JsonFields, s: SampleView) -> Verdict:
    """Fields of the JSON answer (dotted paths, ``items[0].name``) have the given values
    (values may be matchers such as ``{$regex: …}``)."""
    value, error = _json_answer(s)
    if error:
        return Verdict(False, error, "not_json")
    for path, expected in p.fields.items():
        got = _field(value, path, missing := object())
        if got is missing:
            return Verdict(False, f"{path}: missing from the answer", "wrong_field")
        if (reason := match_value(expected, got, path)) is not None:
            return Verdict(False, reason, "wrong_field")
    return Verdict(True, f"{', '.join(p.fields)} as expected")


# -- tool calls ---------------------------------------------------------------------------


class ToolCalled(_Params):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict, description="A subset to match.")
    count: int | None = Field(None, ge=0, description="Exactly this many matching calls.")
    min_count: int = Field(1, ge=0)
    max_count: int | None = Field(None, ge=0)
    status: Literal["ok", "error", "any"] = Field(
        "any", description="Only calls whose result has it."
    )


def tool_called(p: ToolCalled, s: SampleView) -> Verdict:
    """Calls of tool ``name`` whose arguments include ``arguments`` number ``count`` (or
    between ``min_count``, default 1, and ``max_count``)."""
    same_name = [c for c in s.calls if c.name == p.name]
    matching = [
        c
        for c in same_name
        if match_value(p.arguments, c.arguments, "arguments") is None
        and (p.status == "any" or s.status_of(c) == p.status)
    ]
    low, high = (p.count, p.count) if p.count is not None else (p.min_count, p.max_count)
    n = len(matching)
    if n >= low and (high is None or n <= high):
        return Verdict(True, f"{n} matching call{'s' * (n != 1)} of {p.name}")
    want = f"{low}" if low == high else f"at least {low}" + (f", at most {high}" if high else "")
    if n < low and same_name:
        why = match_value(p.arguments, same_name[0].arguments, "arguments") or "result status"
        return Verdict(
            False, f"{n} matching calls of {p.name}, expected {want}; {why}", "wrong_arguments"
        )
    kind = "missing_call" if n < low else "extra_calls"
    return Verdict(
        False,
        f"{n} matching calls of {p.name}, expected {want} (made: {ordinal_calls(s.calls)})",
        kind,
    )


class CallPattern(_Params):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolOrder(_Params):
    calls: list[CallPattern] = Field(min_length=1)

    @field_validator("calls", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


def tool_order(p: ToolOrder, s: SampleView) -> Verdict:
    """These calls happen in this order (others may come between): names, or
    ``{name, arguments}`` patterns."""
    i = 0
    for call in s.calls:
        want = p.calls[i]
        if call.name == want.name and match_value(want.arguments, call.arguments) is None:
            i += 1
            if i == len(p.calls):
                return Verdict(True, "calls in order: " + " → ".join(c.name for c in p.calls))
    return Verdict(
        False,
        f"no call matching {p.calls[i].name} (step {i + 1} of the order) after the "
        f"earlier ones; made: {ordinal_calls(s.calls)}",
        "wrong_order",
    )


class NoToolCall(_Params):
    name: str | None = Field(None, description="Only this tool; None: no call at all.")

    @field_validator("name", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if value is True:
            return None
        if value is False:
            raise ValueError("no_tool_call: false checks nothing; remove the check")
        return value


def no_tool_call(p: NoToolCall, s: SampleView) -> Verdict:
    """No tool call at all (``no_tool_call: true``), or none of tool ``name``."""
    calls = [c for c in s.calls if p.name is None or c.name == p.name]
    if not calls:
        return Verdict(True, f"no call{' of ' + p.name if p.name else ''}")
    return Verdict(False, f"unexpected calls: {ordinal_calls(calls)}", "unexpected_call")


# -- status and cost ----------------------------------------------------------------------


class Status(_Params):
    expected: list[RunStatus] = Field(min_length=1)

    @field_validator("expected", mode="before")
    @classmethod
    def _one(cls, value: Any) -> Any:
        return _listify(value)


def status(p: Status, s: SampleView) -> Verdict:
    """The run ended with this status (or one of these): ``done``, ``limit``, ``loop``,
    ``invalid_output``, ``error``…"""
    r = s.result
    if r.status in p.expected:
        return Verdict(True, f"status {r.status}")
    detail = (
        f" ({r.limit or r.error_type or ''}: {_clip(r.error or '', 120)})"
        if r.limit or r.error
        else ""
    )
    return Verdict(
        False,
        f"status {r.status}{detail}, expected {' or '.join(p.expected)}",
        f"status_{r.status}",
    )


class Bounds(_Params):
    min: float | None = None
    max: float | None = None


def _bounded(what: str, value: float, p: Bounds, error_type: str) -> Verdict:
    if p.min is not None and value < p.min:
        return Verdict(False, f"{what} {value:g} < {p.min:g}", error_type)
    if p.max is not None and value > p.max:
        return Verdict(False, f"{what} {value:g} > {p.max:g}", error_type)
    return Verdict(True, f"{what} {value:g} within bounds")


def steps(p: Bounds, s: SampleView) -> Verdict:
    """The number of model calls is within ``min``/``max``."""
    return _bounded("steps", s.result.steps, p, "too_many_steps")


def tool_call_count(p: Bounds, s: SampleView) -> Verdict:
    """The number of tool calls run is within ``min``/``max``."""
    return _bounded("tool calls", s.result.tool_calls, p, "tool_call_count")


def latency(p: Bounds, s: SampleView) -> Verdict:
    """The sample's wall time in seconds is within ``min``/``max``."""
    return _bounded("latency s", round(s.latency_s, 3), p, "too_slow")


def tokens(p: Bounds, s: SampleView) -> Verdict:
    """Prompt + completion tokens over the run are within ``min``/``max``."""
    return _bounded("tokens", s.result.usage.total_tokens, p, "too_many_tokens")


# -- helpers ------------------------------------------------------------------------------


def _json_answer(s: SampleView) -> tuple[Any, str | None]:
    if not isinstance(s.answer, str):
        return s.answer, None if s.answer is not None else "no answer"
    try:
        return json.loads(s.answer), None
    except ValueError:
        return None, f"answer is not JSON: {_clip(s.answer)!r}"


def _field(value: Any, path: str, default: Any = None) -> Any:
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            if not isinstance(value, list) or i >= len(value):
                return default
            value = value[i]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return default
    return value


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def register(registry: Any) -> None:
    """Register the built-in run checks (the ``agent.checks`` hook of this package)."""
    registry.register("answer_equals", answer_equals, AnswerEquals, shorthand="value")
    registry.register("answer_contains", answer_contains, AnswerContains, shorthand="text")
    registry.register("answer_regex", answer_regex, AnswerRegex, shorthand="pattern")
    registry.register("answer_number", answer_number, AnswerNumber, shorthand="value")
    registry.register("json_schema", json_schema, JsonSchema, shorthand="json_schema")
    registry.register("json_fields", json_fields, JsonFields, shorthand="fields")
    registry.register("tool_called", tool_called, ToolCalled, shorthand="name")
    registry.register("tool_order", tool_order, ToolOrder, shorthand="calls")
    registry.register("no_tool_call", no_tool_call, NoToolCall, shorthand="name")
    registry.register("status", status, Status, shorthand="expected")
    registry.register("steps", steps, Bounds)
    registry.register("tool_call_count", tool_call_count, Bounds)
    registry.register("latency", latency, Bounds)
    registry.register("tokens", tokens, Bounds)
