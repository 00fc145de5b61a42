"""JSON bodies in the shapes vLLM's OpenAI-compatible server returns.

Pure functions from values to dicts, kept apart from the routes so the shapes can be read
in one place. They follow vLLM 0.32 key for key (including its many ``null`` fields), as
``tests/real_vllm/test_sim_parity.py`` checks against a real server. Errors follow
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
    "FINGERPRINT",
    "chat_choice",
    "chat_chunk",
    "chat_response",
    "completion_choice",
    "completion_chunk",
    "completion_response",
    "context_error",
    "error_body",
    "max_tokens_error",
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
FINGERPRINT = "vllm-simulated"
"""``system_fingerprint``: vLLM sends ``vllm-VERSION-HASH`` on whole answers and last chunks."""


def new_id(prefix: str) -> str:
    """``cmpl-…`` / ``chatcmpl-…`` / ``chatcmpl-tool-…`` ids like vLLM's (16 hex digits)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def error_body(
    message: str, status: int, param: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """vLLM's error body; ``kind`` overrides the type (``"Bad Request"`` for bodies that
    fail vLLM's request validation).

    >>> error_body("x", 500)["error"]["code"]
    500
    """
    kind = kind or _TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def context_error(max_model_len: int, prompt_tokens: int) -> str:
    """vLLM 0.32's wording for a prompt longer than the context window. vLLM's tokenizer
    stops counting one token past the limit, hence "at least".

    >>> context_error(100, 120)[:42]
    "This model's maximum context length is 100"
    """
    count = f"at least {max_model_len + 1}" if prompt_tokens > max_model_len else prompt_tokens
    return (
        f"This model's maximum context length is {max_model_len} tokens. However, your "
        f"prompt contains {count} input tokens, which exceeds this limit even without any "
        "output tokens. Please reduce the length of the input prompt. "
        f"(parameter=input_tokens, value={min(prompt_tokens, max_model_len + 1)})"
    )


def max_tokens_error(max_tokens: int, max_model_len: int) -> str:
    """vLLM 0.32's wording for ``max_tokens`` above the context window. (A prompt plus
    ``max_tokens`` beyond it is no error: vLLM lowers ``max_tokens`` to what fits.)"""
    return (
        f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
        f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})"
    )


def usage(
    prompt: int, completion: int, cached: int | None, *, chat: bool = False, streamed: bool = False
) -> dict[str, Any]:
    """The ``usage`` object, with vLLM 0.32's per-endpoint ``prompt_tokens_details``
    (``None`` for ``cached`` when the server runs without ``--enable-prompt-tokens-details``).
    """
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }
    details: dict[str, Any] | None = None
    if cached is not None:
        details = {"cached_tokens": cached}
        if chat or not streamed:
            details["created_cache_tokens"] = 0 if chat else None
        if not streamed:
            details["multimodal_tokens"] = None
    if details is not None or not streamed:
        out["prompt_tokens_details"] = details
    if not streamed:
        out["completion_tokens_details"] = None
    return out


def _head(rid: str, obj: str, model: str) -> dict[str, Any]:
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model}


def completion_choice(
    index: int, text: str, finish: str, stop_reason: Any, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One choice of a whole ``/v1/completions`` answer."""
    return {
        "index": index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "token_ids": None,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "routed_experts": None,
    }


def _tail(use: dict[str, Any]) -> dict[str, Any]:
    return {"service_tier": None, "system_fingerprint": FINGERPRINT, "usage": use}


_TRANSFER = {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


def completion_response(
    rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, Any]
) -> dict[str, Any]:
    """A whole ``/v1/completions`` answer."""
    return {**_head(rid, "text_completion", model), "choices": choices, **_tail(use), **_TRANSFER}


def completion_chunk(
    rid: str,
    model: str,
    text: str,
    finish: str | None = None,
    stop_reason: Any = None,
    *,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One streamed ``/v1/completions`` chunk."""
    choice = {
        "index": index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "prompt_token_ids": None,
        "token_ids": None,
    }
    return {**_head(rid, "text_completion", model), "choices": [choice]}


def chat_choice(
    index: int,
    content: str | None,
    tool_calls: list[dict[str, Any]],
    finish: str,
    stop_reason: Any,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One choice of a whole ``/v1/chat/completions`` answer; ``tool_calls`` only when
    there are some, as vLLM 0.32 does."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["reasoning"] = None
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish,
        "stop_reason": stop_reason,
        "token_ids": None,
        "routed_experts": None,
    }


def chat_response(
    rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, Any]
) -> dict[str, Any]:
    """A whole ``/v1/chat/completions`` answer."""
    return {
        **_head(rid, "chat.completion", model),
        "choices": choices,
        **_tail(use),
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "prompt_text": None,
        **_TRANSFER,
    }


def chat_chunk(
    rid: str,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    stop_reason: Any = None,
    *,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One streamed ``/v1/chat/completions`` chunk (the first, with the role, has no
    ``token_ids`` and carries the ``prompt_*`` fields instead)."""
    choice: dict[str, Any] = {
        "index": index,
        "delta": delta,
        "logprobs": logprobs,
        "finish_reason": finish,
    }
    if "role" in delta:
        return {
            **_head(rid, "chat.completion.chunk", model),
            "choices": [choice],
            "prompt_token_ids": None,
            "prompt_text": None,
        }
    if finish is not None:
        choice["stop_reason"] = stop_reason
    choice["token_ids"] = None
    return {**_head(rid, "chat.completion.chunk", model), "choices": [choice]}


def usage_chunk(rid: str, obj: str, model: str, use: dict[str, Any]) -> dict[str, Any]:
    """The final streamed chunk with empty ``choices`` (``stream_options.include_usage``)."""
    return {
        **_head(rid, obj, model),
        "choices": [],
        "usage": use,
        "system_fingerprint": FINGERPRINT,
    }


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: …\\n\\n``.

    >>> sse("[DONE]")
    b'data: [DONE]\\n\\n'
    """
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()
