"""BFCL's AST checker, re-implemented: is a model's set of calls an acceptable answer?

The semantics are those of the Berkeley Function Calling Leaderboard's checker
(``bfcl_eval/eval_checker/ast_eval/ast_checker.py``, ShishirPatil/gorilla, Apache-2.0),
Python categories only, rewritten as small functions; ``tests/evals/test_bfcl_oracle.py``
compares the verdicts with BFCL's own code on every gold answer and thousands of
perturbations. What a call must satisfy, in the order BFCL checks it (the first failure
is the verdict, so the order decides the ``error_type``):

1. the function's name; 2. every ``required`` parameter present; 3. for each argument in
the model's order: declared and in the possible answer (else ``unexpected_param``), the
right type, an allowed value; 4. every possible-answer parameter given unless ``""`` is
among its values (``missing_optional``).

Faithful quirks, each kept on purpose (the point is to score like BFCL):

- Types are exact Python types (``bool`` is not an ``int``); an ``int`` is accepted and
  converted for a ``float`` parameter, but not inside an array. A value of the possible
  answer's own type is accepted even when the schema says otherwise (BFCL's "variable"
  case) and is then compared exactly, without string normalisation.
- Strings compare after BFCL's normalisation: drop `` ,./-_*^``, lower-case, ``'``→``"``.
  So ``""`` (or ``"-"``) as a value matches the "may be omitted" marker ``""``.
- Array elements are type-checked one level deep; any non-list possible answer (such as
  ``""``) lets every element type through, and the value check decides.
- Parallel categories match greedily: each expected call, in order, takes the first
  unused model call that passes, with no backtracking.
- ``irrelevance`` passes when there is no call at all; this rule lives in BFCL's
  ``eval_runner.py`` (``is_empty_output``), not in the AST checker.

>>> ast_check([{"name": "f", "parameters": {"type": "dict", "properties": {
...     "x": {"type": "float"}}, "required": ["x"]}}], [{"f": {"x": 2}}],
...     [{"f": {"x": [2.0]}}], "simple_python").valid
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CheckResult", "ast_check", "normalize_string"]

# BFCL's PYTHON_TYPE_MAPPING: the Python type a value of each BFCL type must have.
_PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
_DROPPED = str.maketrans("", "", " ,./-_*^")


@dataclass(frozen=True)
class CheckResult:
    """A verdict: ``valid``, BFCL's ``error_type`` string when not, and a readable reason.

    >>> CheckResult(False, "simple_function_checker:wrong_count", "2 calls, expected 1").valid
    False
    """

    valid: bool
    error_type: str | None = None
    error: str = ""


class _Mismatch(Exception):
    """Raised by the checks below; carries the verdict's ``error_type`` and reason."""

    def __init__(self, error_type: str, error: str) -> None:
        super().__init__(error)
        self.error_type = error_type
        self.error = error


def normalize_string(text: str) -> str:
    """BFCL's ``standardize_string``: what two strings must share to count as equal.

    >>> normalize_string("April 1, 2024") == normalize_string("april 1 2024")
    True
    """
    return text.translate(_DROPPED).lower().replace("'", '"')


def ast_check(
    functions: list[dict[str, Any]],
    model_calls: Any,
    possible_answer: list[dict[str, Any]] | None,
    category: str,
) -> CheckResult:
    """Score decoded calls ``[{"func_name": {"arg": value}}]`` as BFCL's AST checker does.

    ``functions`` is the case's ``function`` list, ``possible_answer`` its
    ``ground_truth`` (ignored for ``irrelevance``), ``category`` e.g. ``"parallel"``.

    >>> ast_check([], [], None, "irrelevance")
    CheckResult(valid=True, error_type=None, error='')
    """
    if "relevance" in category:  # irrelevance, live_relevance, live_irrelevance
        return _relevance(model_calls, expect_call="irrelevance" not in category)
    if "java" in category:  # also javascript
        raise ValueError(f"category {category!r}: only BFCL's Python categories are supported")
    if not possible_answer:
        raise ValueError(f"category {category!r} needs the case's ground_truth to check against")
    if not _is_call_list(model_calls):
        return CheckResult(
            False,
            "ast_decoder:decoder_wrong_output_format",
            "calls must be a list of {function_name: {argument: value}} with one key each",
        )
    try:
        _check_calls(functions, model_calls, possible_answer, category)
    except _Mismatch as m:
        return CheckResult(False, m.error_type, m.error)
    return CheckResult(True)


def _check_calls(
    functions: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    category: str,
) -> None:
    if "parallel" in category:
        _check_count(calls, answers, "parallel_function_checker_no_order")
        _match_unordered(functions, calls, answers)
    elif "multiple" in category:
        # The category has one expected call; the description is found by its name.
        _check_count(calls, answers, "multiple_function_checker")
        _check_call(_describe(functions, answers[0]), calls[0], answers[0])
    else:
        if len(calls) != 1:
            raise _Mismatch("simple_function_checker:wrong_count", f"{len(calls)} calls, not 1")
        _check_call(functions[0], calls[0], answers[0])


def _relevance(calls: Any, *, expect_call: bool) -> CheckResult:
    # BFCL's is_empty_output: [], [{}] or anything not shaped like calls is "no call".
    empty = not _is_call_list(calls) or not calls or (len(calls) == 1 and not calls[0])
    if expect_call and empty:
        return CheckResult(False, "relevance_error:decoder_failed", "no function call was made")
    if not expect_call and not empty:
        return CheckResult(
            False, "irrelevance_error:decoder_success", "a function was called; none should be"
        )
    return CheckResult(True)


def _is_call_list(calls: Any) -> bool:
    return type(calls) is list and all(
        type(c) is dict and len(c) == 1 and type(next(iter(c.values()))) is dict for c in calls
    )


def _check_count(calls: list[Any], answers: list[Any], checker: str) -> None:
    if len(calls) != len(answers):
        raise _Mismatch(
            f"{checker}:wrong_count", f"{len(calls)} calls made, {len(answers)} expected"
        )


def _describe(functions: list[dict[str, Any]], answer: dict[str, Any]) -> dict[str, Any]:
    name = next(iter(answer))
    for function in functions:
        if function["name"] == name:
            return function
    raise ValueError(f"possible answer names {name!r}, which is not among the case's functions")


def _match_unordered(
    functions: list[dict[str, Any]], calls: list[dict[str, Any]], answers: list[dict[str, Any]]
) -> None:
    unused = list(range(len(calls)))
    for i, answer in enumerate(answers):
        function = _describe(functions, answer)
        reasons = []
        for index in unused:
            try:
                _check_call(function, calls[index], answer)
            except _Mismatch as m:
                reasons.append(f"call {index}: {m.error_type}: {m.error}")
                continue
            unused.remove(index)
            break
        else:
            raise _Mismatch(
                "parallel_function_checker_no_order:cannot_find_match",
                f"no call among {unused} matches expected call {i} ({function['name']}); "
                + "; ".join(reasons),
            )


def _check_call(function: dict[str, Any], call: dict[str, Any], answer: dict[str, Any]) -> None:
    """One call against one expected call (BFCL's ``simple_function_checker``)."""
    name = function["name"]
    if name not in call:
        raise _Mismatch(
            "simple_function_checker:wrong_func_name", f"called {next(iter(call))!r}, not {name!r}"
        )
    args = call[name]
    expected = next(iter(answer.values()))
    schema = function["parameters"]
    for param in schema.get("required", []):
        if param not in args:
            raise _Mismatch(
                "simple_function_checker:missing_required", f"missing required {param!r}"
            )
    for param, value in args.items():
        if param not in schema["properties"] or param not in expected:
            raise _Mismatch("simple_function_checker:unexpected_param", f"unexpected {param!r}")
        _check_value(param, value, schema["properties"][param], expected[param])
    for param, options in expected.items():
        if param not in args and "" not in options:
            raise _Mismatch(
                "simple_function_checker:missing_optional",
                f"{param!r} is not given and may not be omitted",
            )


def _check_value(param: str, value: Any, schema: dict[str, Any], options: list[Any]) -> None:
    bfcl_type = schema["type"]
    py_type = _PY_TYPES[bfcl_type]
    item_type = _PY_TYPES[schema["items"]["type"]] if bfcl_type in ("array", "tuple") else None
    if bfcl_type == "tuple" and type(value) is tuple:
        value = list(value)
    elif bfcl_type == "float" and type(value) is int:
        value = float(value)
    if _check_type(param, value, options, py_type, item_type):
        _check_literal(param, value, options)
    elif py_type is dict:
        _check_dict_options(param, value, options)
    elif py_type is list and item_type is dict:
        _check_list_of_dicts(param, value, options)
    elif py_type is str:
        if normalize_string(value) not in [normalize_string(o) for o in options if type(o) is str]:
            raise _Mismatch("value_error:string", f"{param!r}={value!r}, expected one of {options}")
    elif py_type is list:
        if _normalize_items(value) not in [_normalize_items(o) for o in options]:
            raise _Mismatch(
                "value_error:list/tuple", f"{param!r}={value!r}, expected one of {options}"
            )
    else:
        _check_literal(param, value, options)


def _check_literal(param: str, value: Any, options: list[Any]) -> None:
    if value not in options:
        raise _Mismatch("value_error:others", f"{param!r}={value!r}, expected one of {options}")


def _answer_type(options: Any) -> type | None:
    """The type of the first possible value that is not the omission marker ``""``."""
    return next((type(o) for o in options if o != ""), None)


def _check_type(
    param: str, value: Any, options: list[Any], py_type: type, item_type: type | None
) -> bool:
    """Raise on a wrong type; return True when the value is a "variable" (compared as is).

    A variable is BFCL's name for an answer whose type is not the schema's: a value of the
    answer's type is then accepted, and compared exactly.
    """
    answer_type = _answer_type(options)
    if type(value) is py_type:
        if item_type is None or any(_items_fit(value, o, item_type) for o in options):
            return answer_type is not None and answer_type is not py_type
        kind = "nested" if type(value) is answer_type else "simple"
        raise _Mismatch(
            f"type_error:{kind}", f"{param!r}: elements of {value!r} are not {item_type.__name__}"
        )
    if type(value) is answer_type:
        return True
    raise _Mismatch(
        "type_error:simple", f"{param!r}: expected {py_type.__name__}, got {type(value).__name__}"
    )


def _items_fit(value: list[Any], option: Any, item_type: type) -> bool:
    if type(option) is not list:
        return True
    answer_type = _answer_type(option)
    return all(type(x) is item_type or type(x) is answer_type for x in value)


def _normalize_items(items: Any) -> list[Any]:
    return [normalize_string(x) if type(x) is str else x for x in items]


def _check_dict_options(param: str, value: dict[str, Any], options: list[Any]) -> None:
    failure = ("dict_checker:unclear", f"{param!r}: no possible dict to compare with")
    for option in options:
        if option == "":
            continue
        failure = _dict_mismatch(param, value, option)
        if failure is None:
            return
    raise _Mismatch(*failure)


def _dict_mismatch(param: str, value: dict[str, Any], option: Any) -> tuple[str, str] | None:
    """Why a dict differs from one possible dict, whose values are lists of options."""
    for key, item in value.items():
        if key not in option:
            return "value_error:dict_key", f"{param!r}: unexpected key {key!r}"
        item = normalize_string(item) if type(item) is str else item
        if item not in _normalize_items(option[key]):
            return "value_error:dict_value", f"{param!r}: {key!r}={item!r} is not allowed"
    for key, allowed in option.items():
        if key not in value and "" not in allowed:
            return "value_error:dict_key", f"{param!r}: missing key {key!r}"
    return None


def _check_list_of_dicts(param: str, value: list[Any], options: list[Any]) -> None:
    failure = ("list_dict_checker:unclear", f"{param!r}: no possible list to compare with")
    for option in options:
        if len(value) != len(option):
            failure = ("value_error:list_dict_count", f"{param!r}: wrong number of dicts")
            continue
        for item, allowed in zip(value, option, strict=True):
            failure = (
                ("dict_checker:unclear", f"{param!r}: no possible dict to compare with")
                if allowed == ""
                else _dict_mismatch(param, item, allowed)
            )
            if failure is not None:
                break
        else:
            return
    raise _Mismatch(*failure)
