"""Every exception the framework raises, split by who must act.

```
AgentError                      base of everything below
├── ConfigError                 the user must fix a task file, option or tool definition
│   └── ToolDefinitionError     a tool was refused at registration
├── BackendError                the model server failed (network, HTTP, stream)
│   ├── BackendUnavailable      connection refused / DNS failure: is vLLM running?
│   ├── BackendTimeout          the request's total deadline passed
│   ├── ContextLengthExceeded   HTTP 400: the prompt is longer than the model's context
│   ├── StreamInterrupted       the stream was cut before the generation finished
│   └── BackendHTTPError        any other HTTP error status (after retries)
├── ModelOutputError            the model's output could not be used (after repairs)
├── ToolError                   a tool call failed; goes back to the model as a tool message
│   ├── ToolArgumentError       unknown tool or arguments that fail validation
│   ├── ToolPolicyError         refused by policy or sandbox (path escape, host, SQL type)
│   ├── ToolTimeout             the call exceeded its hard timeout and was killed
│   └── ToolExecutionError      the tool ran and raised, or its worker died
└── LimitReached                a run limit (steps, tool calls, deadline, tokens) was hit
```

Errors the model can fix (`ToolError` and its children) are turned into tool results by
the dispatcher; the rest propagate as typed exceptions.

Code that must react to an error (an exit code, a retry, a tool result's status) reads
its typed ``kind`` (:func:`error_kind`, :data:`ErrorKind`) or, for tool errors,
``tool_error`` (:data:`agent.types.ToolErrorKind`) — never the class's name.

>>> error_kind(BackendUnavailable("no server")), error_kind(KeyError("x"))
('backend_unavailable', 'internal')
"""

from __future__ import annotations

from typing import ClassVar

from agent.types import ErrorKind, ToolErrorKind

__all__ = [
    "AgentError",
    "BackendError",
    "BackendHTTPError",
    "BackendTimeout",
    "BackendUnavailable",
    "ConfigError",
    "ContextLengthExceeded",
    "ErrorKind",
    "LimitReached",
    "ModelOutputError",
    "StreamInterrupted",
    "ToolArgumentError",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutionError",
    "ToolPolicyError",
    "ToolTimeout",
    "error_kind",
]


def error_kind(exc: BaseException) -> ErrorKind:
    """The :data:`ErrorKind` of any exception (``internal`` for those not ours)."""
    return exc.kind if isinstance(exc, AgentError) else "internal"


class AgentError(Exception):
    """Base class of every error this framework raises on purpose."""

    kind: ClassVar[ErrorKind] = "internal"


class ConfigError(AgentError):
    """Bad configuration: a task file, a CLI option, a policy. The user must fix it."""

    kind = "config"


class ToolDefinitionError(ConfigError):
    """A tool definition was refused at registration; the message says how to fix it."""


class BackendError(AgentError):
    """The model server failed. ``url`` names the server when known."""

    kind = "backend"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class BackendUnavailable(BackendError):
    """The server could not be reached at all (connection refused, DNS failure)."""

    kind = "backend_unavailable"


class BackendTimeout(BackendError):
    """The request's total deadline passed."""


class ContextLengthExceeded(BackendError):
    """The prompt does not fit: ``max_context`` is the model's limit when the server says it."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        max_context: int | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.max_context = max_context
        self.prompt_tokens = prompt_tokens


class StreamInterrupted(BackendError):
    """The stream ended before a finish reason: the output would have been truncated."""


class BackendHTTPError(BackendError):
    """Any other HTTP error status; ``status`` and the server's ``body`` are kept."""

    def __init__(
        self, message: str, *, url: str | None = None, status: int = 0, body: str = ""
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.body = body


class ModelOutputError(AgentError):
    """The model's output could not be used, even after the repair budget was spent."""

    kind = "model_output"


class ToolError(AgentError):
    """A tool call failed in a way the model can act on; becomes an error tool result."""

    kind = "tool"
    tool_error: ClassVar[ToolErrorKind] = "execution"


class ToolArgumentError(ToolError):
    """Unknown tool, or arguments that do not match the tool's JSON Schema."""

    tool_error = "arguments"


class ToolPolicyError(ToolError):
    """The call was refused by policy or sandbox: a path outside the workspace, a host not
    allowed, a statement type not allowed."""

    tool_error = "policy"


class ToolTimeout(ToolError):
    """The call exceeded its hard timeout and was stopped."""

    tool_error = "timeout"


class ToolExecutionError(ToolError):
    """The tool ran and failed, or its worker process died during the call."""


class LimitReached(AgentError):
    """A run limit was hit; ``limit`` names it (``max_steps``, ``deadline``, …)."""

    kind = "limit"

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit
