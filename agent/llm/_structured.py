"""``ChatHermes.with_structured_output`` and the ``tool_choice`` values LangChain sends.

Three methods, each enforced by the server rather than hoped for:

- ``function_calling`` (LangChain's default): the schema becomes the only tool and the
  call is forced (``tool_choice`` = its name, vLLM's structured outputs); the parsed
  arguments are the answer;
- ``json_schema``: JSON mode with the schema (structured outputs ``json``), then parsed and
  — for a pydantic class — validated;
- ``json_mode``: the schema goes into Hermes' JSON-mode system prompt (as the model was
  trained), and the server holds the answer to some JSON object only.

>>> normalize_tool_choice("any"), normalize_tool_choice({"type": "function",
...     "function": {"name": "add"}})
('required', 'add')
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

if TYPE_CHECKING:
    from agent.llm.chat_model import ChatHermes

__all__ = ["Method", "normalize_tool_choice", "structured_output"]

Method = Literal["function_calling", "json_schema", "json_mode"]


def normalize_tool_choice(choice: Any) -> str | None:
    """LangChain's ``tool_choice`` spellings as ours: ``auto``, ``required``, ``none`` or a
    tool's name (``None``: not given)."""
    if choice is None or choice == "auto":
        return None if choice is None else "auto"
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if isinstance(name, str) and name:
            return name
    raise ValueError(
        f"tool_choice {choice!r}: use 'auto', 'any'/'required', 'none', a tool's name, or "
        "{'type': 'function', 'function': {'name': ...}}"
    )


def structured_output(
    model: ChatHermes, schema: Any, method: Method, include_raw: bool
) -> Runnable[Any, Any]:
    """The runnable ``with_structured_output`` returns (see the module docstring)."""
    is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
    trace = {"ls_structured_output_format": {"kwargs": {"method": method}, "schema": schema}}
    if method == "function_calling":
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, **trace)
        parser: Runnable[Any, Any] = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if is_model
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    elif method in ("json_schema", "json_mode"):
        enforce = method == "json_schema"
        llm = model.bind(
            json_schema=convert_to_json_schema(schema), enforce_schema=enforce, **trace
        )
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
    else:
        raise ValueError(f"method={method!r}: use 'function_calling', 'json_schema' or 'json_mode'")
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
