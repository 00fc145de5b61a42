"""BFCL pieces on hand-made inputs: names, schemas, loading, and the scorer's edge cases.

The comparison with BFCL's own checker over the real data is in ``test_bfcl_oracle.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.types import ToolCall
from evals.bfcl import (
    CATEGORIES,
    ToolNames,
    concrete_call,
    gold_calls,
    load_category,
    to_bfcl_calls,
    to_json_schema,
    to_tool_calls,
    to_tool_specs,
)
from tools._schema import check_schema

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["math.power"], ["math_power"]),
        (["calculate_area", "geometry.area.circle"], ["calculate_area", "geometry_area_circle"]),
        (["math.power", "math_power"], ["math_power_2", "math_power"]),
        (["a.b", "a/b", "a_b_2", "a_b"], ["a_b_3", "a_b_4", "a_b_2", "a_b"]),
        (["x" * 70], ["x" * 64]),
        (["x" * 70, "x" * 71], ["x" * 64, "x" * 62 + "_2"]),
        (["", "é"], ["_", "__2"]),
        (["dup.name", "dup.name"], ["dup_name"]),
    ],
)
def test_names_map_to_valid_distinct_tool_names(names: list[str], expected: list[str]) -> None:
    mapping = ToolNames.of(names)
    assert [mapping.tool(n) for n in dict.fromkeys(names)] == expected
    assert all(mapping.bfcl(mapping.tool(n)) == n for n in names)


@given(st.lists(st.text(max_size=80), max_size=8))
def test_name_mapping_is_a_bijection_onto_valid_tool_names(names: list[str]) -> None:
    mapping = ToolNames.of(names)
    tools = [mapping.tool(n) for n in set(names)]
    assert all(TOOL_NAME.match(t) for t in tools)
    assert len(set(tools)) == len(tools)
    assert all(mapping.bfcl(mapping.tool(n)) == n for n in names)


def test_unknown_tool_names_pass_through_unchanged() -> None:
    mapping = ToolNames.of(["math.power"])
    assert mapping.bfcl("made_up") == "made_up"
    with pytest.raises(KeyError):
        mapping.tool("other.name")


def test_calls_convert_to_bfcl_form_and_back() -> None:
    mapping = ToolNames.of(["math.power", "sum"])
    calls = [ToolCall("math_power", {"base": 2, "exponent": 3}), ToolCall("sum", {})]
    decoded = to_bfcl_calls(calls, mapping)
    assert decoded == [{"math.power": {"base": 2, "exponent": 3}}, {"sum": {}}]
    back = to_tool_calls(decoded, mapping)
    assert [(c.name, c.arguments) for c in back] == [(c.name, c.arguments) for c in calls]


# -- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bfcl", "json_schema"),
    [
        ({"type": "dict"}, {"type": "object"}),
        ({"type": "float"}, {"type": "number"}),
        (
            {"type": "tuple", "items": {"type": "float"}},
            {"type": "array", "items": {"type": "number"}},
        ),
        ({"type": "any", "description": "d"}, {"description": "d"}),
        ({"type": "integer"}, {"type": "integer"}),
        ({"type": "string", "enum": ["a", "b"]}, {"type": "string", "enum": ["a", "b"]}),
        ({"type": "boolean", "default": False}, {"type": "boolean", "default": False}),
        (
            {"type": "array", "items": {"type": "string"}},
            {"type": "array", "items": {"type": "string"}},
        ),
        (
            {
                "type": "array",
                "items": {
                    "type": "dict",
                    "properties": {"w": {"type": "float"}},
                    "required": ["w"],
                },
            },
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"w": {"type": "number"}},
                    "required": ["w"],
                },
            },
        ),
        (
            {
                "type": "dict",
                "properties": {
                    "d": {
                        "type": "dict",
                        "properties": {"t": {"type": "tuple", "items": {"type": "any"}}},
                    }
                },
                "required": ["d"],
            },
            {
                "type": "object",
                "properties": {
                    "d": {"type": "object", "properties": {"t": {"type": "array", "items": {}}}}
                },
                "required": ["d"],
            },
        ),
    ],
)
def test_bfcl_types_become_json_schema(bfcl: dict[str, Any], json_schema: dict[str, Any]) -> None:
    before = json.dumps(bfcl)
    assert to_json_schema(bfcl) == json_schema
    assert json.dumps(bfcl) == before  # the input is left alone


def test_a_property_named_type_or_items_is_a_property_not_a_keyword() -> None:
    schema = {
        "type": "dict",
        "properties": {"type": {"type": "string"}, "items": {"type": "float"}},
    }
    assert to_json_schema(schema)["properties"] == {
        "type": {"type": "string"},
        "items": {"type": "number"},
    }


def test_an_unknown_type_is_refused_with_its_path() -> None:
    with pytest.raises(ValueError, match=r"f\.parameters\.x\[\]: BFCL type 'HashMap'"):
        to_tool_specs(
            [
                {
                    "name": "f",
                    "description": "",
                    "parameters": {
                        "type": "dict",
                        "properties": {"x": {"type": "array", "items": {"type": "HashMap"}}},
                    },
                }
            ]
        )


def test_tool_specs_carry_mapped_names_descriptions_and_schemas() -> None:
    functions = [
        {
            "name": "math.power",
            "description": "Power.",
            "parameters": {
                "type": "dict",
                "properties": {"base": {"type": "float"}},
                "required": ["base"],
            },
        }
    ]
    (spec,) = to_tool_specs(functions)
    assert (spec.name, spec.description) == ("math_power", "Power.")
    assert spec.parameters == {
        "type": "object",
        "properties": {"base": {"type": "number"}},
        "required": ["base"],
    }


def test_every_function_in_the_data_becomes_a_valid_tool(bfcl_data: Path) -> None:
    for category in CATEGORIES:
        for case in load_category(bfcl_data, category):
            for spec in to_tool_specs(case.functions):
                assert TOOL_NAME.match(spec.name)
                check_schema(spec.name, spec.parameters)


# -- loading and gold answers --------------------------------------------------------------


def _write(
    root: Path, category: str, cases: list[dict[str, Any]], answers: list[dict[str, Any]] | None
) -> None:
    (root / "possible_answer").mkdir(parents=True, exist_ok=True)
    (root / f"BFCL_v4_{category}.json").write_text("\n".join(map(json.dumps, cases)) + "\n")
    if answers is not None:
        (root / "possible_answer" / f"BFCL_v4_{category}.json").write_text(
            "\n".join(map(json.dumps, answers))
        )


def test_load_category_joins_cases_and_possible_answers(tmp_path: Path) -> None:
    question = [[{"role": "user", "content": "2**3?"}]]
    _write(
        tmp_path,
        "simple_python",
        [{"id": "s_0", "question": question, "function": []}],
        [{"id": "s_0", "ground_truth": [{"math.power": {"base": [2]}}]}],
    )
    _write(tmp_path, "irrelevance", [{"id": "i_0", "question": question, "function": []}], None)
    (case,) = load_category(tmp_path, "simple_python")
    assert (case.id, case.category, case.messages) == ("s_0", "simple_python", question[0])
    assert case.ground_truth == [{"math.power": {"base": [2]}}]
    assert load_category(tmp_path, "irrelevance")[0].ground_truth is None


@pytest.mark.parametrize(
    ("cases_text", "answers_text", "message"),
    [
        (None, None, r"BFCL_v4_multiple\.json: no such file"),
        ('{"id": "m_0"}\n{oops\n', "", r"BFCL_v4_multiple\.json:2: not valid JSON"),
        ('{"id": "m_0", "question": [], "function": []}', "", r"no possible answer for m_0"),
        ("[1]", "", r"BFCL_v4_multiple\.json:1: expected a JSON object"),
    ],
)
def test_load_category_names_the_bad_file_and_line(
    tmp_path: Path, cases_text: str | None, answers_text: str | None, message: str
) -> None:
    (tmp_path / "possible_answer").mkdir()
    if cases_text is not None:
        (tmp_path / "BFCL_v4_multiple.json").write_text(cases_text)
        (tmp_path / "possible_answer" / "BFCL_v4_multiple.json").write_text(answers_text or "")
    with pytest.raises(ConfigError, match=message):
        load_category(tmp_path, "multiple")


def test_gold_calls_pick_first_values_or_what_the_schema_needs() -> None:
    truth = [{"f": {"a": ["", 1], "b": [[{"k": ["v", "w"], "o": ["", 2]}]], "c": ["x", ""]}}]
    functions = [
        {
            "name": "f",
            "parameters": {"type": "dict", "required": ["a"], "properties": {"a": {}, "b": {}}},
        }
    ]
    assert gold_calls(truth) == [{"f": {"b": [{"k": "v"}], "c": "x"}}]
    assert gold_calls(truth, functions) == [{"f": {"a": 1, "b": [{"k": "v"}]}}]
    assert concrete_call(truth[0], {"a": 1, "c": 1}) == {"f": {"a": 1, "b": [{"k": "v"}]}}
