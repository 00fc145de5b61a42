"""The scorer's edge cases, one BFCL rule each (the oracle test covers the real data)."""

from __future__ import annotations

from typing import Any

import pytest

from evals.bfcl import ast_check, normalize_string


def _fn(name: str = "f", required: tuple[str, ...] = (), **props: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": "",
        "parameters": {"type": "dict", "properties": props, "required": list(required)},
    }


INT, FLOAT = {"type": "integer"}, {"type": "float"}
STR, BOOL = {"type": "string"}, {"type": "boolean"}
FLOATS = {"type": "array", "items": {"type": "float"}}
DICT = {"type": "dict", "properties": {}}
DICTS = {"type": "array", "items": {"type": "dict"}}


def _simple(
    props: dict[str, Any],
    truth: dict[str, list[Any]],
    args: dict[str, Any],
    required: tuple[str, ...] = (),
) -> tuple[bool, str | None]:
    result = ast_check(
        [_fn("f", required, **props)], [{"f": args}], [{"f": truth}], "simple_python"
    )
    return result.valid, result.error_type


SIMPLE_RULES = [
    # types: int is accepted for a float, nothing else is converted
    ({"x": FLOAT}, {"x": [2.0]}, {"x": 2}, (True, None)),
    ({"x": INT}, {"x": [2]}, {"x": 2.0}, (False, "type_error:simple")),
    ({"x": INT}, {"x": [1]}, {"x": True}, (False, "type_error:simple")),
    ({"x": BOOL}, {"x": [True]}, {"x": 1}, (False, "type_error:simple")),
    ({"x": STR}, {"x": ["5"]}, {"x": 5}, (False, "type_error:simple")),
    ({"x": FLOATS}, {"x": [[1.0, 2.0]]}, {"x": [1, 2]}, (False, "type_error:nested")),
    ({"x": FLOATS}, {"x": [[1.0]]}, {"x": ["1"]}, (False, "type_error:nested")),
    # an optional array lets any element type through; the value check decides
    ({"x": FLOATS}, {"x": ["", [1.0]]}, {"x": [1]}, (True, None)),
    # a "variable": the answer's own type is accepted and compared exactly
    ({"x": FLOATS}, {"x": ["data['a']"]}, {"x": "data['a']"}, (True, None)),
    ({"x": FLOATS}, {"x": ["data['a']"]}, {"x": "DATA['A']"}, (False, "value_error:others")),
    # values
    ({"x": INT}, {"x": [1, 2]}, {"x": 3}, (False, "value_error:others")),
    ({"x": STR}, {"x": ["San Francisco, CA"]}, {"x": "san francisco ca"}, (True, None)),
    ({"x": STR}, {"x": ["New York"]}, {"x": "Boston"}, (False, "value_error:string")),
    ({"x": STR}, {"x": ["cm", ""]}, {"x": "-"}, (True, None)),  # "-" normalises to ""
    ({"x": {"type": "any"}}, {"x": ["A b"]}, {"x": "ab"}, (True, None)),
    (
        {"x": {"type": "array", "items": STR}},
        {"x": [["A b", "c"]]},
        {"x": ["ab", "C"]},
        (True, None),
    ),
    (
        {"x": {"type": "array", "items": STR}},
        {"x": [["a", "b"]]},
        {"x": ["b", "a"]},
        (False, "value_error:list/tuple"),
    ),
    ({"x": {"type": "array", "items": STR}}, {"x": ["", ["a"]]}, {"x": []}, (True, None)),
    # dicts: keys listed with their own possible values; "" marks an optional key
    ({"x": DICT}, {"x": [{"a": [1], "b": ["", 2]}]}, {"x": {"a": 1}}, (True, None)),
    ({"x": DICT}, {"x": [{"a": [1]}]}, {"x": {"a": 2}}, (False, "value_error:dict_value")),
    ({"x": DICT}, {"x": [{"a": [1]}]}, {"x": {"a": 1, "z": 1}}, (False, "value_error:dict_key")),
    ({"x": DICT}, {"x": [{"a": ["Q"]}]}, {"x": {"a": "q"}}, (True, None)),
    ({"x": DICT}, {"x": [""]}, {"x": {}}, (False, "dict_checker:unclear")),
    (
        {"x": DICTS},
        {"x": [[{"a": [1]}]]},
        {"x": [{"a": 1}, {"a": 1}]},
        (False, "value_error:list_dict_count"),
    ),
    ({"x": DICTS}, {"x": [[{"a": [1]}, {"a": [2]}]]}, {"x": [{"a": 1}, {"a": 2}]}, (True, None)),
    # parameters: declared, in the possible answer, given unless "" allows omission
    ({"x": INT}, {"x": ["", 1]}, {}, (True, None)),
    ({"x": INT}, {"x": [1]}, {}, (False, "simple_function_checker:missing_optional")),
    (
        {"x": INT, "y": INT},
        {"x": [1]},
        {"x": 1, "y": 1},
        (False, "simple_function_checker:unexpected_param"),
    ),
    (
        {"x": INT},
        {"x": [1], "z": [1]},
        {"x": 1, "z": 1},
        (False, "simple_function_checker:unexpected_param"),
    ),
]
"""(properties, possible answer, arguments, verdict); the oracle test checks BFCL agrees."""


@pytest.mark.parametrize(("props", "truth", "args", "verdict"), SIMPLE_RULES)
def test_simple_rules(
    props: dict[str, Any],
    truth: dict[str, list[Any]],
    args: dict[str, Any],
    verdict: tuple[bool, str | None],
) -> None:
    assert _simple(props, truth, args) == verdict


def test_required_comes_from_the_schema_and_is_checked_first() -> None:
    verdict = _simple({"x": INT, "y": INT}, {"x": [1], "y": ["", 1]}, {"x": "bad"}, ("y",))
    assert verdict == (False, "simple_function_checker:missing_required")


def test_the_first_failing_argument_in_the_models_order_decides() -> None:
    props, truth = {"x": INT, "y": STR}, {"x": [1], "y": ["a"]}
    assert _simple(props, truth, {"x": "1", "y": 2}) == (False, "type_error:simple")
    assert _simple(props, truth, {"y": "b", "x": "1"}) == (False, "value_error:string")


def test_wrong_function_name_and_call_counts() -> None:
    fns = [_fn("f", x=INT), _fn("g", x=INT)]
    truth = [{"f": {"x": [1]}}]
    assert ast_check(fns, [{"g": {"x": 1}}], truth, "multiple").error_type == (
        "simple_function_checker:wrong_func_name"
    )
    assert ast_check(fns, [], truth, "multiple").error_type == (
        "multiple_function_checker:wrong_count"
    )
    assert ast_check(fns, [{"f": {"x": 1}}] * 2, truth, "simple_python").error_type == (
        "simple_function_checker:wrong_count"
    )
    assert ast_check(fns, [{"f": {"x": 1}}], truth * 2, "parallel").error_type == (
        "parallel_function_checker_no_order:wrong_count"
    )


def test_parallel_matching_ignores_order() -> None:
    fns = [_fn("f", x=INT), _fn("g", y=STR)]
    truth = [{"f": {"x": [1]}}, {"g": {"y": ["a"]}}, {"f": {"x": [2]}}]
    calls = [{"f": {"x": 2}}, {"g": {"y": "A"}}, {"f": {"x": 1}}]
    assert ast_check(fns, calls, truth, "parallel_multiple").valid
    calls[0] = {"f": {"x": 3}}
    result = ast_check(fns, calls, truth, "parallel_multiple")
    assert result.error_type == "parallel_function_checker_no_order:cannot_find_match"
    assert "expected call 2" in result.error


def test_parallel_matching_is_greedy_like_bfcl() -> None:
    """The first expected call takes the first call it accepts, even if a later one needs it.

    With calls x=1, x=2 a perfect matching exists (x=2 for "1 or 2", x=1 for "1"), but the
    broad answer takes x=1 first and x=2 is left for the narrow one (BFCL's parallel_178).
    """
    fns = [_fn("f", x=INT)]
    truth = [{"f": {"x": [1, 2]}}, {"f": {"x": [1]}}]
    assert ast_check(fns, [{"f": {"x": 2}}, {"f": {"x": 1}}], truth, "parallel").valid
    result = ast_check(fns, [{"f": {"x": 1}}, {"f": {"x": 2}}], truth, "parallel")
    assert result.error_type == "parallel_function_checker_no_order:cannot_find_match"


@pytest.mark.parametrize(
    ("calls", "valid"),
    [
        ([], True),
        ([{}], True),
        ("plain text", True),
        ([{"f": {}}], False),
        ([{"f": {"x": 1}}, {"g": {}}], False),
    ],
)
def test_irrelevance_passes_only_without_a_call(calls: Any, valid: bool) -> None:
    result = ast_check([_fn("f", x=INT)], calls, None, "irrelevance")
    assert result.valid is valid
    assert result.error_type == (None if valid else "irrelevance_error:decoder_success")


def test_relevance_wants_a_call_and_badly_shaped_calls_are_format_errors() -> None:
    assert ast_check([], [], None, "live_relevance").error_type == "relevance_error:decoder_failed"
    assert ast_check([], [{"f": {}}], None, "live_relevance").valid
    for bad in ("text", [{"f": 1}], [{"f": {}, "g": {}}], [["f"]]):
        assert ast_check([_fn()], bad, [{"f": {}}], "simple_python").error_type == (
            "ast_decoder:decoder_wrong_output_format"
        )


def test_java_javascript_and_a_missing_answer_are_refused() -> None:
    with pytest.raises(ValueError, match="Python categories"):
        ast_check([_fn()], [{"f": {}}], [{"f": {}}], "simple_javascript")
    with pytest.raises(ValueError, match="needs the case's ground_truth"):
        ast_check([_fn()], [{"f": {}}], None, "parallel")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("April 1, 2024", "april 1 2024"),
        ("x**2", "X**2"),
        ("a_b-c/d.e*f^g", "abcdefg"),
        ("it's", 'it"s'),
        ("New York, NY", "newyork,ny"),
    ],
)
def test_string_normalisation_is_bfcls(a: str, b: str) -> None:
    assert normalize_string(a) == normalize_string(b)


def test_string_normalisation_keeps_other_characters() -> None:
    assert normalize_string("a\tb+c") == "a\tb+c"
    assert normalize_string("x = 1") == "x=1"
