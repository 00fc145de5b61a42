"""JSON bodies in the shapes vLLM's OpenAI-compatible server returns.

Pure functions from values to dicts, kept apart from the routes so the shapes can be read
(and compared with vLLM's ``protocol.py``) in one place. Errors follow vLLM's current
``{"error": {"message", "type", "param", "code"}}`` with ``code`` the HTTP status.

>>> error_body("nope", 400)["error"]["type"]
'BadRequestError'
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

__all__ = [
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "context_error",
    "error_body",
    "new_id",
    "sse",
    "usage",
    "usage_chunk",
]

_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def new_id(prefix: str) -> str:
    """``cmpl-…`` / ``chatcmpl-…`` ids like vLLM's."""
    return f"{prefix}-{uuid.uuid4().hex}"


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body.

    >>> error_body("x", 500)["error"]["code"]
    500
    """
    kind = _TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def context_error(max_model_len: int, prompt_tokens: int, max_tokens: int | None) -> str:
    """vLLM's wording for a request that does not fit the context window.

    >>> context_error(100, 120, None)[:42]
    "This model's maximum context length is 100"
    """
    if prompt_tokens >= max_model_len:
        return (
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the "
            "input messages."
        )
    return (
        f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
        f"maximum context length is {max_model_len} tokens and your request has "
        f"{prompt_tokens} input tokens ({max_tokens} > {max_model_len} - {prompt_tokens})."
    )


def usage(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    """The ``usage`` object; ``prompt_tokens_details`` only when ``cached`` is known."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def _head(rid: str, obj: str, model: str) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model}


def completion_response(
    rid: str, model: str, text: str, finish: str, stop_reason: Any, use: dict[str, Any]
) -> dict[str, Any]:
    """A whole ``/v1/completions`` answer."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "prompt_logprobs": None,
    }
    return {**_head(rid, "text_completion", model), "choices": [choice], "usage": use}


def completion_chunk(
    rid: str, model: str, text: str, finish: str | None = None, stop_reason: Any = None
) -> dict[str, Any]:
    """One streamed ``/v1/completions`` chunk."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
    }
    return {**_head(rid, "text_completion", model), "choices": [choice]}


def chat_response(
    rid: str,
    model: str,
    content: str | None,
    tool_calls: list[dict[str, Any]],
    finish: str,
    stop_reason: Any,
    use: dict[str, Any],
) -> dict[str, Any]:
    """A whole ``/v1/chat/completions`` answer."""
    message = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": tool_calls,
        "reasoning_content": None,
    }
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish,
        "stop_reason": stop_reason,
    }
    return {**_head(rid, "chat.completion", model), "choices": [choice], "usage": use}


def chat_chunk(
    rid: str, model: str, delta: dict[str, Any], finish: str | None = None, stop_reason: Any = None
) -> dict[str, Any]:
    """One streamed ``/v1/chat/completions`` chunk."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = stop_reason
    return {**_head(rid, "chat.completion.chunk", model), "choices": [choice]}


def usage_chunk(rid: str, obj: str, model: str, use: dict[str, Any]) -> dict[str, Any]:
    """The final streamed chunk with empty ``choices`` (``stream_options.include_usage``)."""
    return {**_head(rid, obj, model), "choices": [], "usage": use}


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: …\\n\\n``.

    >>> sse("[DONE]")
    b'data: [DONE]\\n\\n'
    """
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()
