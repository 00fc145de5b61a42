"""Model backends: the one-method seam, the vLLM HTTP client and the LangChain adapter.

``agent.llm.base`` is light and imported eagerly. The vLLM client (httpx) and
``ChatHermes`` (langchain-core) load on first use, so ``import agent.llm`` stays cheap for
code that only needs the types.

>>> from agent.llm import Usage
>>> Usage(3, 4).total_tokens
7
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agent.llm.base import (
    Backend,
    Generation,
    GenerationDone,
    GenerationRequest,
    Timings,
    Usage,
)

if TYPE_CHECKING:
    from agent.llm.chat_model import ChatHermes
    from agent.llm.vllm import VLLMBackend, VLLMConfig

__all__ = [
    "Backend",
    "ChatHermes",
    "Generation",
    "GenerationDone",
    "GenerationRequest",
    "Timings",
    "Usage",
    "VLLMBackend",
    "VLLMConfig",
]

_LAZY = {
    "ChatHermes": "agent.llm.chat_model",
    "VLLMBackend": "agent.llm.vllm",
    "VLLMConfig": "agent.llm.vllm",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agent.llm' has no attribute {name!r}")
