"""The model backend seam: one async method, ``stream(request)``.

Everything that talks to a model (the vLLM HTTP client, the ChatHermes adapter, the
graph's model node, tests' scripted models) goes through :class:`Backend`. A backend
yields the format core's parser events (``agent.hermes``: text deltas, tool calls begun,
parsed or malformed) as they are known, and ends with one :class:`GenerationDone`
carrying the whole :class:`Generation`.

>>> Usage(10, 2) + Usage(5, 1, cached_tokens=8)
Usage(prompt_tokens=15, completion_tokens=3, cached_tokens=8)
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config import Sampling, ToolChoice
from agent.types import Malformed, Message, Timings, ToolCall, ToolSpec, Usage

__all__ = [
    "Backend",
    "Generation",
    "GenerationDone",
    "GenerationRequest",
]


@dataclass
class GenerationRequest:
    """One model call: the conversation so far and how to generate the next turn."""

    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    sampling: Sampling = field(default_factory=Sampling)
    json_schema: dict[str, Any] | None = None
    """JSON mode: the answer must be JSON matching this schema (structured outputs)."""
    enforce_schema: bool = True
    """In JSON mode, the server holds the answer to ``json_schema``; ``False``: only to some
    JSON object (the schema is still in the prompt, as Hermes' JSON mode is trained)."""
    constrain_tool_calls: bool = False
    """Ask the server to constrain every ``<tool_call>`` body to the tools' schemas."""
    tool_choice: ToolChoice = "auto"
    """``required`` / a tool name: a call is forced (structured outputs); ``none``: no
    tools in the prompt and no calls parsed. See :data:`agent.config.ToolChoice`."""
    session_id: str | None = None
    """Replica affinity: requests with the same id stick to one healthy server."""
    model: str | None = None
    """Served model to ask for this call (a LoRA adapter's name, say); ``None``: the
    backend's own (configured, or asked from ``/v1/models``)."""


@dataclass
class Generation:
    """The whole result of one model call."""

    text: str
    """The raw text the model produced (completions mode), or a ChatML rendering of it."""
    content: str
    """Text outside tool calls (and outside scratch pads)."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    errors: list[Malformed] = field(default_factory=list)
    finish_reason: str = "stop"
    stop_reason: str | int | None = None
    """What stopped it, as vLLM reports: the stop string matched, a stop token's id, or
    ``None`` for the end of the turn (or a length limit)."""
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    prompt: str | None = None
    """The exact prompt text sent (completions mode), for traces."""
    url: str | None = None
    """The server that answered."""


@dataclass(frozen=True)
class GenerationDone:
    """Last event of every stream."""

    generation: Generation
    kind: Literal["done"] = "done"


class Backend(ABC):
    """A model. Subclasses implement :meth:`stream`; everything else builds on it."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Any]:
        """Yield ``agent.hermes`` events as they are known, then one ``GenerationDone``.

        Raises ``agent.errors.BackendError`` subclasses; never ends without
        ``GenerationDone`` unless it raises.
        """

    async def generate(self, request: GenerationRequest) -> Generation:
        """Run :meth:`stream` to the end and return the :class:`Generation`."""
        async for event in self.stream(request):
            if isinstance(event, GenerationDone):
                return event.generation
        raise RuntimeError(f"{type(self).__name__}.stream ended without GenerationDone")

    @contextlib.asynccontextmanager
    async def admitted(self, session_id: str) -> AsyncIterator[None]:
        """Hold a run's place on the server for the block (KV-aware admission, where a
        backend has it: :class:`~agent.llm.vllm.VLLMBackend`); here: no gate."""
        yield

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""
