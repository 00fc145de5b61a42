"""``ChatHermes``: Hermes 3 on vLLM as a langchain-core chat model.

A thin adapter over any :class:`~agent.llm.base.Backend` (by default a
:class:`~agent.llm.vllm.VLLMBackend` built from this model's fields), so ChatHermes drops
into LangChain and LangGraph apps, ``langchain.agents.create_agent`` included, while the
prompt rendering and tool-call parsing stay ours. It passes LangChain's standard test
suites (``langchain-tests``); every capability it claims is enforced by the server.

- Native async: ``_agenerate`` and ``_astream`` call the backend directly. The sync
  ``_generate`` and ``_stream`` run the async path on a private event-loop thread (one per
  model), so sync callers stream chunk by chunk and never block a loop of their own.
- ``bind_tools`` takes plain functions, pydantic models, langchain tools and OpenAI dicts.
  ``tool_choice``: ``"auto"``, ``"any"``/``"required"`` or a tool's name force a call
  through vLLM's structured outputs; ``"none"`` hides the tools.
- ``with_structured_output(schema, method=...)``: ``function_calling`` (a forced call),
  ``json_schema`` (structured outputs with the schema), ``json_mode`` (any JSON object).
- Standard parameters map onto the backend: ``temperature``, ``max_tokens`` and the
  other sampling fields (:class:`~agent.config.Sampling`, declared once), ``stop`` (extra
  stop strings; the matched one is ``response_metadata["stop_reason"]``), ``timeout``,
  ``max_retries``, ``streaming``, and a per-call ``model=`` (vLLM serves LoRA adapters
  under their own names).
- History: langchain-core messages, with content blocks (LangChain v1 output and
  Anthropic-style ``tool_use`` blocks included) converted by :mod:`agent.messages`.
- Malformed calls come back in ``invalid_tool_calls`` with the parser's reason in
  ``error``. When streaming, langchain rebuilds invalid calls from chunks and drops
  ``error``, so the reasons also travel in ``response_metadata["tool_call_errors"]``.
- Replica affinity: ``session_id`` (field or call kwarg), else LangGraph's ``thread_id``.
- The default backend holds pooled connections, which belong to one event loop, so one is
  kept per loop (weakly, so a finished loop's backend can be collected).

>>> ChatHermes(base_url="http://127.0.0.1:8000", temperature=0.0)._llm_type
'chat-hermes'
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils import secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, create_model

from agent.config import Sampling
from agent.hermes import TextDelta
from agent.llm._structured import Method, normalize_tool_choice, structured_output
from agent.llm.base import Backend, Generation, GenerationDone, GenerationRequest
from agent.llm.vllm import VLLMBackend
from agent.messages import ai_message, message_chunk, to_messages
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
_UNNAMED = "hermes"
"""The model name traces report before the server has been asked for its own."""


class ChatHermes(_SamplingFields):  # type: ignore[valid-type,misc]
    """Hermes 3 served by vLLM (or the simulator), as a langchain-core chat model.

    >>> llm = ChatHermes(base_url=["http://a:8000", "http://b:8000"])
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    base_url: str | list[str] = Field(
        default_factory=lambda: os.environ.get("AGENT_MODEL_URL") or "http://127.0.0.1:8000"
    )
    """Server URL, or several replicas (env ``AGENT_MODEL_URL``)."""
    model: str | None = Field(default=None, alias="model_name")
    """Served model name; ``None`` asks the server. A call's ``model=`` overrides it."""
    mode: Literal["completions", "chat"] = "completions"
    """``completions``: our ChatML and parser (default). ``chat``: the server's."""
    timeout: float | None = 600.0
    """Total deadline of one model call in seconds, retries included (``None``: 600)."""
    max_retries: int = 3
    streaming: bool = False
    """``invoke`` streams through ``_stream`` (callbacks get every token either way)."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("AGENT_VLLM_API_KEY", default=None)
    )
    """Bearer token for a server started with ``--api-key`` (env ``AGENT_VLLM_API_KEY``)."""
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

    # Not LangChain-serialisable: `langchain_core.load` revives only the classes in its own
    # mapping (core and the partner packages it lists), even with allowed_objects="all",
    # so a dumped ChatHermes could never be loaded back. Build it from its fields instead.

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url, "mode": self.mode} | {
            k: getattr(self, k) for k in _SAMPLING
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="vllm",
            ls_model_name=kwargs.get("model") or self._served_name() or _UNNAMED,
            ls_model_type="chat",
        )
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if max_tokens := kwargs.get("max_tokens", self.max_tokens):
            params["ls_max_tokens"] = max_tokens
        if stop := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = stop
        return params

    # -- tools and structured output --------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in any form langchain knows; they reach the prompt as OpenAI specs.
        ``tool_choice`` ``any``/``required`` or a name is enforced by the server.

        >>> ChatHermes().bind_tools([get_weather], tool_choice="any")  # doctest: +SKIP
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        choice = normalize_tool_choice(tool_choice)
        if choice not in (None, "auto", "required", "none"):
            names = [t["function"]["name"] for t in formatted]
            if choice not in names:
                raise ValueError(f"tool_choice {choice!r} is not one of the tools: {names}")
        if choice is not None:
            kwargs["tool_choice"] = choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: Method = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Answers as ``schema`` (pydantic class, TypedDict, JSON Schema or OpenAI tool),
        enforced by the server: ``function_calling`` forces a call to the schema as a
        tool, ``json_schema`` constrains the answer to the schema, ``json_mode`` to JSON.
        ``strict`` is accepted for compatibility: every method here is strict already."""
        if kwargs:
            raise ValueError(f"unsupported arguments: {', '.join(sorted(kwargs))}")
        return structured_output(self, schema, method, include_raw)

    # -- generation ----------------------------------------------------------------------

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, run_manager, kwargs)
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
        message = ai_message(generation, self._model_name(backend, request))
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
        request = self._request(messages, stop, run_manager, kwargs)
        backend = self._backend()
        errors: list[dict[str, Any]] = []
        async with contextlib.aclosing(backend.stream(request)) as events:
            async for event in events:
                message = message_chunk(event, errors, self._model_name(backend, request))
                if message is None:
                    continue
                chunk = ChatGenerationChunk(message=message)
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

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """The async stream, chunk by chunk, pulled from the private loop's thread."""
        loop = self._loop_thread()
        chunks = self._astream(messages, stop, None, **kwargs)
        try:
            while True:
                try:
                    chunk = asyncio.run_coroutine_threadsafe(anext(chunks), loop).result()
                except StopAsyncIteration:
                    return
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:  # a consumer that stops early closes the HTTP stream too
            asyncio.run_coroutine_threadsafe(chunks.aclose(), loop).result()

    async def aclose(self) -> None:
        """Close the default backend of the running loop (a no-op for a given backend)."""
        if self.backend is None:
            backend = self._backends.pop(asyncio.get_running_loop(), None)
            if backend is not None:
                await backend.aclose()

    # -- helpers ---------------------------------------------------------------------------

    def _request(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: Any,
        kwargs: dict[str, Any],
    ) -> GenerationRequest:
        tools = [ToolSpec.from_openai(t) for t in kwargs.get("tools") or ()]
        values = {k: kwargs[k] if k in kwargs else getattr(self, k) for k in _SAMPLING}
        values["stop"] = stop or values["stop"] or None
        metadata = getattr(run_manager, "metadata", None) or {}
        session = kwargs.get("session_id") or self.session_id or metadata.get("thread_id")
        return GenerationRequest(
            messages=to_messages(messages),
            tools=tools,
            sampling=Sampling(**values),
            json_schema=kwargs.get("json_schema") or _schema_of(kwargs.get("response_format")),
            enforce_schema=kwargs.get("enforce_schema", True),
            constrain_tool_calls=kwargs.get("constrain_tool_calls", self.constrain_tool_calls),
            tool_choice=kwargs.get("tool_choice") or "auto",
            session_id=str(session) if session is not None else None,
            model=kwargs.get("model"),
        )

    def _backend(self) -> Backend:
        if self.backend is not None:
            return self.backend
        loop = asyncio.get_running_loop()
        backend = self._backends.get(loop)
        if backend is None:
            api_key = self.api_key.get_secret_value() if self.api_key else None
            backend = VLLMBackend(
                self.base_url,
                model=self.model,
                mode=self.mode,
                timeout_s=self.timeout or 600.0,
                max_retries=self.max_retries,
                api_key=api_key,
            )
            self._backends[loop] = backend
        return backend

    def _served_name(self) -> str | None:
        known = (getattr(b, "model", None) for b in [self.backend, *self._backends.values()])
        return self.model or next((name for name in known if name), None)

    def _model_name(self, backend: Backend, request: GenerationRequest) -> str | None:
        return request.model or getattr(backend, "model", None) or self.model

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
