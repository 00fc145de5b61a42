"""``ChatHermes``: Hermes 3 on vLLM as a langchain-core chat model.

A thin adapter over any :class:`~agent.llm.base.Backend` (by default a
:class:`~agent.llm.vllm.VLLMBackend` built from this model's fields), so ChatHermes drops
into LangChain and LangGraph apps, ``langchain.agents.create_agent`` included, while the
prompt rendering and tool-call parsing stay ours.

- Native async: ``_agenerate`` and ``_astream`` call the backend directly. The sync
  ``_generate`` runs the async path on a private event-loop thread (one per model), so
  sync callers work without blocking a running loop of their own.
- ``bind_tools`` takes plain functions, pydantic models, langchain tools and OpenAI dicts
  (through ``convert_to_openai_tool``). ``tool_choice="none"`` hides the tools; other
  choices are accepted but not enforced (the model sees every tool).
- Malformed calls come back in ``invalid_tool_calls`` with the parser's reason in
  ``error``. When streaming, langchain rebuilds invalid calls from chunks and drops
  ``error``, so the reasons also travel in ``response_metadata["tool_call_errors"]``.
- JSON mode: bind ``response_format={"type": "json_schema", "json_schema": {"schema": …}}``
  (what ``create_agent``'s provider strategy sends) or ``json_schema=…``.
- Replica affinity: ``session_id`` (field or call kwarg), else LangGraph's ``thread_id``.
- The default backend holds pooled connections, which belong to one event loop, so one is
  kept per loop (weakly, so a finished loop's backend can be collected).

>>> ChatHermes(base_url="http://127.0.0.1:8000", temperature=0.0)._llm_type
'chat-hermes'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, create_model

from agent.config import Sampling
from agent.hermes import TextDelta, ToolCallMalformed, ToolCallParsed
from agent.llm.base import Backend, Generation, GenerationDone, GenerationRequest
from agent.llm.vllm import VLLMBackend
from agent.messages import ai_message, response_metadata, to_messages, usage_metadata
from agent.types import ToolSpec

__all__ = ["ChatHermes"]

_SAMPLING = tuple(Sampling.model_fields)
# ChatHermes takes the sampling parameters as its own fields (``ChatHermes(temperature=0)``,
# as LangChain users expect), declared once: by `Sampling`.
_SamplingFields = create_model(
    "_SamplingFields",
    __base__=BaseChatModel,
    **{name: (f.annotation, f) for name, f in Sampling.model_fields.items()},  # type: ignore[call-overload]
)


class ChatHermes(_SamplingFields):  # type: ignore[valid-type,misc]
    """Hermes 3 served by vLLM (or the simulator), as a langchain-core chat model.

    >>> llm = ChatHermes(base_url=["http://a:8000", "http://b:8000"])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str | list[str] = "http://127.0.0.1:8000"
    """Server URL, or several replicas."""
    model: str | None = None
    """Served model name; ``None`` asks the server."""
    mode: Literal["completions", "chat"] = "completions"
    """``completions``: our ChatML and parser (default). ``chat``: the server's."""
    timeout_s: float = 600.0
    """Total deadline of one model call, retries included."""
    max_retries: int = 3
    constrain_tool_calls: bool = False
    """Ask vLLM to constrain ``<tool_call>`` bodies to the tools' schemas (structural tag)."""
    session_id: str | None = None
    """Replica affinity key; per call, pass ``session_id=`` or set LangGraph's thread_id."""
    backend: Backend | None = Field(default=None, exclude=True)
    """Use this backend instead of building a VLLMBackend (tests, custom transports)."""

    _backends: weakref.WeakKeyDictionary[Any, Backend] = PrivateAttr(
        default_factory=weakref.WeakKeyDictionary
    )
    _sync_loop: asyncio.AbstractEventLoop | None = PrivateAttr(default=None)
    _sync_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "chat-hermes"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "mode": self.mode} | {
            k: getattr(self, k) for k in _SAMPLING
        }

    # -- tools -------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in any form langchain knows; they reach the prompt as OpenAI specs.

        >>> ChatHermes().bind_tools([get_weather])  # doctest: +SKIP
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    # -- generation ----------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, run_manager, kwargs)
        backend = self._backend()
        generation: Generation | None = None
        async with contextlib.aclosing(backend.stream(request)) as events:
            async for event in events:
                if isinstance(event, TextDelta) and run_manager is not None:
                    await run_manager.on_llm_new_token(event.text)
                elif isinstance(event, GenerationDone):
                    generation = event.generation
        if generation is None:
            raise RuntimeError(f"{type(backend).__name__}.stream ended without GenerationDone")
        message = ai_message(generation, self._model_name(backend))
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": message.response_metadata.get("model_name")},
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, run_manager, kwargs)
        backend = self._backend()
        errors: list[dict[str, Any]] = []
        async with contextlib.aclosing(backend.stream(request)) as events:
            async for event in events:
                chunk = _chunk(event, errors, self._model_name(backend))
                if chunk is None:
                    continue
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        coro = self._agenerate(messages, stop, None, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, self._loop_thread()).result()

    async def aclose(self) -> None:
        """Close the default backend of the running loop (a no-op for a given backend)."""
        if self.backend is None:
            backend = self._backends.pop(asyncio.get_running_loop(), None)
            if backend is not None:
                await backend.aclose()

    # -- helpers ---------------------------------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], run_manager: Any, kwargs: dict[str, Any]
    ) -> GenerationRequest:
        tools = [ToolSpec.from_openai(t) for t in kwargs.get("tools") or ()]
        if kwargs.get("tool_choice") == "none":
            tools = []
        sampling = Sampling(
            **{k: kwargs[k] if k in kwargs else getattr(self, k) for k in _SAMPLING}
        )
        metadata = getattr(run_manager, "metadata", None) or {}
        session = kwargs.get("session_id") or self.session_id or metadata.get("thread_id")
        return GenerationRequest(
            messages=to_messages(messages),
            tools=tools,
            sampling=sampling,
            json_schema=kwargs.get("json_schema") or _schema_of(kwargs.get("response_format")),
            constrain_tool_calls=kwargs.get("constrain_tool_calls", self.constrain_tool_calls),
            session_id=str(session) if session is not None else None,
        )

    def _backend(self) -> Backend:
        if self.backend is not None:
            return self.backend
        loop = asyncio.get_running_loop()
        backend = self._backends.get(loop)
        if backend is None:
            backend = VLLMBackend(
                self.base_url,
                model=self.model,
                mode=self.mode,
                timeout_s=self.timeout_s,
                max_retries=self.max_retries,
            )
            self._backends[loop] = backend
        return backend

    def _model_name(self, backend: Backend) -> str | None:
        return getattr(backend, "model", None) or self.model

    def _loop_thread(self) -> asyncio.AbstractEventLoop:
        with self._sync_lock:
            if self._sync_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="chat-hermes-sync", daemon=True
                ).start()
                self._sync_loop = loop
            return self._sync_loop


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    """The JSON Schema inside an OpenAI ``response_format``, if it holds one."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema") or {}
        return inner.get("schema") or None
    return None


def _chunk(
    event: Any, errors: list[dict[str, Any]], model: str | None
) -> ChatGenerationChunk | None:
    if isinstance(event, TextDelta):
        return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
    if isinstance(event, ToolCallParsed):
        c = event.call
        tcc = tool_call_chunk(name=c.name, args=json.dumps(c.arguments), id=c.id, index=event.index)
        return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[tcc]))
    if isinstance(event, ToolCallMalformed):
        errors.append({"index": event.index, "raw": event.raw, "reason": event.reason})
        tcc = tool_call_chunk(name=None, args=_unparsable(event.raw), id=None, index=event.index)
        return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[tcc]))
    if isinstance(event, GenerationDone):
        g = event.generation
        meta = response_metadata(g, model)
        meta["tool_call_errors"] = errors
        last = AIMessageChunk(
            content="",
            usage_metadata=usage_metadata(g),  # type: ignore[arg-type]
            response_metadata=meta,
            chunk_position="last",
        )
        return ChatGenerationChunk(message=last)
    return None  # scratch pad and call-started events have no langchain counterpart


def _unparsable(raw: str) -> str:
    """``raw`` as chunk args that langchain will not read as a valid call.

    langchain re-parses chunk args with a lenient partial-JSON parser; a malformed block
    (say, one missing ``name``) could come out as a dict and pass as a valid call.
    """
    from langchain_core.utils.json import parse_partial_json

    try:
        ok = isinstance(parse_partial_json(raw), dict)
    except Exception:  # any failure means langchain will reject it too
        ok = False
    return json.dumps(raw) if ok else raw
