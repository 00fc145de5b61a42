"""Tool definitions: schema derivation per type, docstrings, injection, refusals."""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Literal, Optional

import jsonschema
import pydantic
import pytest

from agent.errors import ToolDefinitionError
from tools.base import Tool, ToolContext, as_tool, parse_docstring, render_result, tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(pydantic.BaseModel):
    name: str
    qty: int = 1


class Node(pydantic.BaseModel):
    value: int
    children: list[Node] = []


def _one_param(annotation: Any) -> dict[str, Any]:
    def f(x):  # annotations set below so each case builds one parameter
        """Doc."""

    f.__annotations__ = {"x": annotation}
    return Tool.from_function(f).parameters["properties"]["x"]


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, {"type": "integer"}),
        (str, {"type": "string"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (Literal["a", "b"], {"enum": ["a", "b"], "type": "string"}),
        (Color, {"enum": ["red", "blue"], "type": "string"}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (
            Item,
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "qty": {"type": "integer", "default": 1},
                },
                "required": ["name"],
            },
        ),
        (Any, {}),
    ],
)
def test_schema_of_each_type(annotation: Any, expected: dict[str, Any]) -> None:
    assert _one_param(annotation) == expected


def test_nested_models_are_inlined_without_titles() -> None:
    schema = _one_param(list[Item])
    assert schema["items"]["properties"]["name"] == {"type": "string"}
    assert "$ref" not in str(schema) and "title" not in schema["items"]


def test_recursive_model_keeps_a_valid_ref() -> None:
    def f(tree: Node) -> str:
        """Walk a tree."""
        return ""

    params = Tool.from_function(f).parameters
    assert set(params["$defs"]) == {"Node"}
    validator = jsonschema.Draft202012Validator(params)
    assert validator.is_valid({"tree": {"value": 1, "children": [{"value": 2}]}})
    assert not validator.is_valid({"tree": {"value": 1, "children": [{"value": "x"}]}})


def test_property_named_title_survives() -> None:
    def f(title: str) -> str:
        """Set a title."""
        return title

    assert Tool.from_function(f).parameters["properties"] == {"title": {"type": "string"}}


def test_descriptions_defaults_and_required_from_signature_and_docstring() -> None:
    @tool
    def search(query: str, limit: int = 10, *, exact: bool = False) -> list[str]:
        """Search the catalogue.

        Longer explanation for the model.

        Args:
            query (str): What to look for,
                over several lines.
            limit: At most this many hits.

        Returns:
            Matching names.
        """
        return []

    spec = search.spec()
    assert spec.name == "search"
    assert spec.description == "Search the catalogue.\n\nLonger explanation for the model."
    props = spec.parameters["properties"]
    assert props["query"]["description"] == "What to look for, over several lines."
    limit = {"type": "integer", "default": 10, "description": "At most this many hits."}
    assert props["limit"] == limit
    assert "description" not in props["exact"]
    assert spec.parameters["required"] == ["query"]


@pytest.mark.parametrize("style", ["annotated", "named"])
async def test_context_is_injected_not_shown(style: str) -> None:
    if style == "annotated":

        def f(n: int, context: ToolContext) -> str:
            """Echo the run id."""
            return f"{context.run_id}:{n}"
    else:

        def f(n: int, ctx) -> str:  # a parameter named ctx needs no type
            """Echo the run id."""
            return f"{ctx.run_id}:{n}"

    t = Tool.from_function(f)
    assert list(t.parameters["properties"]) == ["n"]
    assert await t.ainvoke({"n": 3}, ToolContext(run_id="r9")) == "r9:3"


async def test_async_function_and_coercion_into_models_and_enums() -> None:
    @tool
    async def order(item: Item, color: Color) -> str:
        """Order an item."""
        return f"{item.qty}x{item.name} {color.value}"

    assert order.is_async
    assert await order.ainvoke({"item": {"name": "pen"}, "color": "red"}) == "1xpen red"


def test_decorated_function_stays_callable_and_options_apply() -> None:
    @tool(name="add_numbers", description="Adds.", side_effects=lambda a: a["a"] > 0)
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    assert add(2, b=3) == 5
    assert add.name == "add_numbers" and add.description == "Adds."
    assert add.has_side_effects({"a": 1}) and not add.has_side_effects({"a": -1})
    assert add.ref is None  # a closure: fine in-process, refused for the worker


def _no_doc(x: int) -> int:
    return x


def _untyped(x) -> int:
    """Doc."""
    return 1


def _star_args(*items: str) -> str:
    """Doc."""
    return ""


def _star_kwargs(**options: str) -> str:
    """Doc."""
    return ""


class _Opaque:
    pass


def _unsupported(x: _Opaque) -> str:
    """Doc."""
    return ""


@pytest.mark.parametrize(
    ("fn", "kwargs", "message"),
    [
        (_no_doc, {}, "has no docstring. Add one"),
        (_untyped, {}, "has no type annotation. Annotate it, e.g. `x: str`"),
        (_star_args, {}, "takes *items; tools take named parameters only"),
        (_star_kwargs, {}, "takes **options"),
        (_unsupported, {}, "parameter 'x' cannot be expressed as JSON Schema"),
        (_untyped, {"name": "bad name!"}, "Invalid tool name 'bad name!'"),
        (_untyped, {"name": "x" * 65}, "pattern ^[a-zA-Z0-9_-]{1,64}$"),
    ],
)
def test_bad_definitions_are_refused_with_a_fix(fn: Any, kwargs: dict, message: str) -> None:
    with pytest.raises(ToolDefinitionError, match=None) as info:
        Tool.from_function(fn, **kwargs)
    assert message in str(info.value)


def test_process_sandbox_refuses_closures() -> None:
    def local(x: int) -> int:
        """Doc."""
        return x

    with pytest.raises(ToolDefinitionError, match="define it at module level"):
        Tool.from_function(local, sandbox="process")


class Multiply:
    """A tool with an explicit JSON Schema (names need not be Python identifiers)."""

    name = "multiply"
    description = "Multiply two numbers."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"from": {"type": "number"}, "by": {"type": "number"}},
        "required": ["from", "by"],
    }

    def run(self, arguments: dict[str, Any], ctx: ToolContext | None) -> float:
        return arguments["from"] * arguments["by"]


async def test_class_with_explicit_schema() -> None:
    t = as_tool(Multiply)
    assert t.spec().parameters == Multiply.parameters
    assert await t.ainvoke({"from": 3, "by": 2}) == 6


def test_class_with_invalid_schema_is_refused() -> None:
    class Broken(Multiply):
        parameters: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"x": {"type": "nonsense"}},
        }

    with pytest.raises(ToolDefinitionError, match="invalid JSON Schema"):
        as_tool(Broken())
    with pytest.raises(ToolDefinitionError, match="not a tool"):
        Tool.from_object(object())


async def test_langchain_tool_is_wrapped() -> None:
    from langchain_core.tools import tool as lc_tool

    @lc_tool
    def shout(text: str) -> str:
        """Shout the text."""
        return text.upper()

    t = as_tool(shout)
    assert t.name == "shout" and t.sandbox == "none"
    assert t.parameters["properties"]["text"]["type"] == "string"
    assert await t.ainvoke({"text": "hi"}) == "HI"


def test_parse_docstring_and_render_result() -> None:
    assert parse_docstring("Do it.\n\nArgs:\n    a: first\n", "f") == ("Do it.", {"a": "first"})
    assert render_result("x") == "x"
    assert render_result(Item(name="a")) == '{"name":"a","qty":1}'
    assert render_result([1, "é"]) == '[1, "é"]'


def test_context_resource_is_created_once() -> None:
    ctx = ToolContext()
    made: list[int] = []
    for _ in range(3):
        ctx.resource("conn", lambda: made.append(1) or len(made))
    assert made == [1]
