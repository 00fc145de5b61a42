"""Systematic model answers for a BFCL case: gold answers, their variants and corruptions.

Used by the oracle test to compare :func:`evals.bfcl.ast_check` with BFCL's own checker.
Each answer is labelled with its kind, so agreement can be counted per kind. Some
"corruptions" are still right answers (an ``int`` for a ``float``, a string differing only
in case or punctuation): the point is that both checkers give the same verdict.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from evals.bfcl import BfclCase, concrete_call, gold_calls

Calls = list[dict[str, dict[str, Any]]]


def answers(case: BfclCase) -> Iterator[tuple[str, Calls]]:
    """Every answer tried for a case: (kind, decoded calls)."""
    assert case.ground_truth is not None
    yield "gold_first_values", gold_calls(case.ground_truth)
    base = gold_calls(case.ground_truth, case.functions)
    yield "gold_schema_aware", base
    yield from _variants(case, base)
    for i in range(len(base)):
        for kind, call in _call_perturbations(case, base[i]):
            yield kind, [*base[:i], call, *base[i + 1 :]]
    yield from _call_list_perturbations(case, base)


def _variants(case: BfclCase, base: Calls) -> Iterator[tuple[str, Calls]]:
    """The gold answer with one parameter set to each of its other possible values."""
    for i, answer in enumerate(case.ground_truth or ()):
        ((_, params),) = answer.items()
        for param, options in params.items():
            for k in range(1, len(options)):
                call = concrete_call(answer, {param: k})
                yield "gold_other_value", [*base[:i], call, *base[i + 1 :]]


def _call_perturbations(
    case: BfclCase, call: dict[str, dict[str, Any]]
) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    ((name, args),) = call.items()
    declared = next(f for f in case.functions if f["name"] == name)["parameters"]["properties"]
    for param, value in args.items():
        rest = {k: v for k, v in args.items() if k != param}
        yield "drop_param", {name: rest}
        renamed = {(k + "_renamed" if k == param else k): v for k, v in args.items()}
        yield "rename_param", {name: renamed}
        for kind, wrong in _wrong_values(value):
            yield kind, {name: {**args, param: wrong}}
    yield "add_unknown_param", {name: {**args, "unexpected_argument": "x"}}
    for param, schema in declared.items():
        if param not in args:
            yield "add_declared_param", {name: {**args, param: _plausible(schema)}}
    yield "wrong_function_name", {"no_such_function": copy.deepcopy(args)}
    if "." in name:
        yield "unmapped_tool_name", {name.replace(".", "_"): copy.deepcopy(args)}
    for other in case.functions:
        if other["name"] != name:
            yield "other_function", {other["name"]: copy.deepcopy(args)}
            break


def _call_list_perturbations(case: BfclCase, base: Calls) -> Iterator[tuple[str, Calls]]:
    yield "no_call", []
    for i in range(len(base)):
        yield "missing_call", base[:i] + base[i + 1 :]
        yield "extra_call", [*base, copy.deepcopy(base[i])]
    if len(base) > 1:
        yield "swapped_calls", base[::-1]
        yield "rotated_calls", base[1:] + base[:1]
        yield "duplicated_call", [base[0], *base[:-1]]


def _wrong_values(value: Any) -> Iterator[tuple[str, Any]]:
    """Values of the wrong type, wrong values, and equivalent spellings of strings."""
    if type(value) is bool:
        yield from [
            ("wrong_value", not value),
            ("int_for_bool", int(value)),
            ("str_for_bool", str(value).lower()),
        ]
    elif type(value) is int:
        yield from [
            ("wrong_value", value + 1),
            ("str_for_int", str(value)),
            ("float_for_int", float(value)),
            ("bool_for_int", bool(value)),
            ("list_for_scalar", [value]),
        ]
    elif type(value) is float:
        yield from [
            ("wrong_value", value + 0.5),
            ("int_for_float", int(value)),
            ("str_for_float", str(value)),
            ("list_for_scalar", [value]),
        ]
        if value == int(value):
            yield "int_for_integral_float", int(value)
    elif type(value) is str:
        yield from [
            ("wrong_value", value + " extra"),
            ("int_for_str", 1),
            ("list_for_scalar", [value]),
            ("null_for_str", None),
            ("empty_string", ""),
            ("string_upper", value.upper()),
            ("string_punctuated", f" {value.replace(' ', '_')}."),
            ("string_quotes", value.replace('"', "'")),
        ]
    elif type(value) is list:
        yield from _wrong_lists(value)
    elif type(value) is dict:
        yield from _wrong_dicts(value)
    else:
        yield "str_for_other", str(value)


def _wrong_lists(value: list[Any]) -> Iterator[tuple[str, Any]]:
    yield "scalar_for_list", value[0] if value else "x"
    yield "empty_list", []
    yield "dict_for_list", {"0": value}
    if value:
        yield "extra_item", [*value, value[-1]]
        yield "missing_item", value[:-1]
        yield "reversed_items", value[::-1]
        yield "items_as_strings", [str(x) for x in value]
        if all(type(x) is int for x in value):
            yield "float_items_for_int", [float(x) for x in value]
        if all(type(x) is float for x in value):
            yield "int_items_for_float", [int(x) for x in value]
        if all(type(x) is str for x in value):
            yield "items_upper", [x.upper() for x in value]
        if all(type(x) is dict for x in value):
            yield "item_dict_extra_key", [{**value[0], "unexpected_key": 1}, *value[1:]]


def _wrong_dicts(value: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    yield "list_for_dict", [value]
    yield "empty_dict", {}
    yield "dict_extra_key", {**value, "unexpected_key": 1}
    for key, item in value.items():
        yield "dict_missing_key", {k: v for k, v in value.items() if k != key}
        changed = item + 1 if type(item) is int else f"{item}x" if type(item) is str else None
        yield "dict_wrong_value", {**value, key: changed}
        if type(item) is str:
            yield "dict_value_upper", {**value, key: item.upper()}
        break


def _plausible(schema: dict[str, Any]) -> Any:
    """Some value for a declared parameter the gold answer left out."""
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if schema.get("enum"):
        return schema["enum"][0]
    return {
        "string": "x",
        "integer": 1,
        "float": 1.0,
        "boolean": True,
        "array": [],
        "tuple": [],
        "dict": {},
        "any": "x",
    }.get(schema.get("type"), "x")
