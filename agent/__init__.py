"""A tool-using agent framework for Hermes 3 served by vLLM, driven by LangGraph.

The public face, in one import::

    from agent import Agent, Limits, ToolPolicies, tool

Importing ``agent`` is cheap: each name loads its module (LangGraph, httpx, DuckDB…) on
first use.

>>> import agent
>>> agent.Limits(max_steps=3).max_steps
3
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agent._gc import tune_gc
    from agent.api import Agent, Approver
    from agent.config import Limits, Sampling
    from agent.errors import (
        AgentError,
        BackendError,
        BackendUnavailable,
        ConfigError,
        ToolError,
    )
    from agent.events import Event
    from agent.llm.chat_model import ChatHermes
    from agent.llm.vllm import VLLMBackend
    from agent.task import Task, load_task
    from agent.types import Message, RunResult, ToolCall, ToolResult
    from tools.base import Tool, ToolContext, tool
    from tools.policy import FilesPolicy, HttpPolicy, SandboxPolicy, SqlPolicy, ToolPolicies

# name -> module that declares it
_EXPORTS = {
    "Agent": "agent.api",
    "Approver": "agent.api",
    "Limits": "agent.config",
    "Sampling": "agent.config",
    "AgentError": "agent.errors",
    "BackendError": "agent.errors",
    "BackendUnavailable": "agent.errors",
    "ConfigError": "agent.errors",
    "ToolError": "agent.errors",
    "Event": "agent.events",
    "ChatHermes": "agent.llm.chat_model",
    "VLLMBackend": "agent.llm.vllm",
    "Task": "agent.task",
    "load_task": "agent.task",
    "tune_gc": "agent._gc",
    "Message": "agent.types",
    "RunResult": "agent.types",
    "ToolCall": "agent.types",
    "ToolResult": "agent.types",
    "Tool": "tools.base",
    "ToolContext": "tools.base",
    "tool": "tools.base",
    "FilesPolicy": "tools.policy",
    "HttpPolicy": "tools.policy",
    "SandboxPolicy": "tools.policy",
    "SqlPolicy": "tools.policy",
    "ToolPolicies": "tools.policy",
}

__all__ = [
    "Agent",
    "AgentError",
    "Approver",
    "BackendError",
    "BackendUnavailable",
    "ChatHermes",
    "ConfigError",
    "Event",
    "FilesPolicy",
    "HttpPolicy",
    "Limits",
    "Message",
    "RunResult",
    "Sampling",
    "SandboxPolicy",
    "SqlPolicy",
    "Task",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolPolicies",
    "ToolResult",
    "VLLMBackend",
    "__version__",
    "load_task",
    "tool",
    "tune_gc",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'agent' has no attribute {name!r}")
