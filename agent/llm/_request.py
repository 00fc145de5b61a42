"""One vLLM request body from a :class:`~agent.llm.base.GenerationRequest` (pure).

Completions mode renders our own ChatML (BOS included, so ``add_special_tokens`` is off),
stops at ``<|im_end|>`` plus any extra stop strings, and expresses JSON mode and tool
choice as structured outputs; chat mode sends OpenAI messages, ``tools`` and
``tool_choice`` and lets the server apply its template and parser.

>>> from agent.types import Message
>>> path, body, prompt, tag = build_request(GenerationRequest([Message("user", "hi")]))
>>> path, body["add_special_tokens"], tag
('/v1/completions', False, None)
"""

from __future__ import annotations

from typing import Any, Literal

from agent import chatml
from agent.errors import ConfigError
from agent.llm._decode import structural_tag, to_openai_messages
from agent.llm.base import GenerationRequest
from agent.types import ToolSpec

__all__ = ["STOP", "build_request"]

STOP = "<|im_end|>"


def build_request(
    request: GenerationRequest, mode: Literal["completions", "chat"] = "completions"
) -> tuple[str, dict[str, Any], str | None, str | None]:
    """``(path, body, prompt, structural_tag)``: the tag is sent apart, so that a server
    that refuses it can be asked again without it."""
    body: dict[str, Any] = {
        **request.sampling.to_request(),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    shown, forced = _tool_choice(request)
    tag = None
    if forced and mode == "completions":  # chat mode: the server forces it itself
        # A named tool: that one call and no more (as OpenAI's named tool_choice); the
        # grammar ends the generation after it instead of letting the model go on.
        named = request.tool_choice not in ("auto", "required", "none")
        tag = structural_tag(forced, required=True, first_only=named)
    elif request.constrain_tool_calls and shown and request.json_schema is None:
        tag = structural_tag(shown)
    if mode == "chat":
        return "/v1/chat/completions", _chat_body(request, body, shown), None, tag
    prompt = chatml.render(request.messages, shown, json_schema=request.json_schema)
    body |= {
        "prompt": prompt,
        "stop": [STOP, *(request.sampling.stop or ())],
        "skip_special_tokens": False,
        "add_special_tokens": False,
    }
    if request.json_schema is not None:
        body["structured_outputs"] = (
            {"json": request.json_schema} if request.enforce_schema else {"json_object": True}
        )
    return "/v1/completions", body, prompt, tag


def _chat_body(
    request: GenerationRequest, body: dict[str, Any], shown: list[ToolSpec]
) -> dict[str, Any]:
    body["messages"] = to_openai_messages(request.messages)
    if shown:
        # vLLM enforces a forced call's arguments only for tools marked strict (measured on
        # 0.32: a non-strict named tool came back with arguments "celsius").
        strict = request.tool_choice != "auto" or request.constrain_tool_calls
        tools = [t.to_openai() for t in shown]
        body["tools"] = (
            [{**t, "function": {**t["function"], "strict": True}} for t in tools]
            if strict
            else tools
        )
        body["tool_choice"] = _openai_tool_choice(request.tool_choice)
    if request.json_schema is not None and not request.enforce_schema:
        body["response_format"] = {"type": "json_object"}
    elif request.json_schema is not None:
        name = str(request.json_schema.get("title") or "output")
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": request.json_schema},
        }
    return body


def _tool_choice(request: GenerationRequest) -> tuple[list[ToolSpec], list[ToolSpec]]:
    """The tools the prompt shows, and those one of which the model must call (none: [])."""
    choice, tools = request.tool_choice, request.tools
    if choice == "none":
        return [], []
    if choice == "auto" or not tools or request.json_schema is not None:
        return tools, []
    if choice == "required":
        return tools, tools
    named = [t for t in tools if t.name == choice]
    if not named:
        raise ConfigError(
            f"tool_choice {choice!r} names no tool of this request; use auto, required, "
            f"none or one of: {', '.join(t.name for t in tools)}"
        )
    return tools, named


def _openai_tool_choice(choice: str) -> Any:
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}
