"""OpenTelemetry spans of runs, following the GenAI semantic conventions (the ``otel`` extra).

A run is one trace: an ``invoke_agent {task}`` span, with a ``chat {model}`` span per
model call and an ``execute_tool {tool}`` span per tool call beneath it. The spans are
derived from the typed events (:mod:`agent.events`) — a ``StepFinished`` carries the
generation with its timings and usage, a ``ToolResultEvent`` the result with its
duration — so tracing is one more event consumer, attached by :class:`agent.Agent` when
``agent.tracer`` is set, and nothing in the loop knows about it. The trace id is kept in
the run's row (``RunRecord.trace_id``).

Attributes: ``gen_ai.operation.name`` (``invoke_agent``, ``chat``, ``execute_tool``),
``gen_ai.provider.name`` (``vllm``), ``gen_ai.agent.name``, ``gen_ai.conversation.id``
(the thread), ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.response.finish_reasons``, ``gen_ai.tool.name``,
``gen_ai.tool.call.id``, ``server.address`` and ``server.port`` (the model server's),
``error.type`` on failures. Message content only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true`` (it may hold personal
data): ``gen_ai.input.messages`` and ``gen_ai.output.messages`` as the conventions'
JSON (``[{"role", "parts": [{"type": "text", "content"}]}]``), tool arguments and results.

>>> agent.tracer = tracer()          # doctest: +SKIP  (the global provider's tracer)
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CAPTURE_CONTENT_ENV", "RunSpans", "capture_content", "cli_tracer", "tracer"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_NAME = "hermes-vllm-agent"


def tracer(provider: Any = None) -> Any:
    """A tracer of ``provider`` (default: the global one set by the application).

    ConfigError-free: raises ImportError naming the extra when OpenTelemetry is missing.
    """
    try:
        from opentelemetry import trace
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "tracing needs the otel extra: pip install -e '.[otel]' (opentelemetry-sdk)"
        ) from exc
    from agent import __version__

    return trace.get_tracer(_NAME, __version__, tracer_provider=provider)


def cli_tracer() -> Any:
    """The tracer of ``--otel``: the global provider's when the application (or
    ``opentelemetry-instrument``) set one; else an SDK provider printing spans to stderr."""
    try:
        from opentelemetry import trace
    except ImportError:
        from agent.errors import ConfigError

        raise ConfigError("--otel needs the otel extra: pip install -e '.[otel]'") from None
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        import sys

        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        trace.set_tracer_provider(provider)
    return tracer()


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans the global provider still holds. A process that exits by its
    signal (``agent serve`` after SIGTERM, as uvicorn does) runs no ``atexit`` hook, so
    the spans a drain ended would be lost."""
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if force_flush is not None:
        force_flush(int(timeout_s * 1000))


def capture_content() -> bool:
    """Whether spans may carry message content (opt-in through the standard variable)."""
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


class RunSpans:
    """The spans of one run, fed its events in order; ``close()`` ends what is open."""

    def __init__(
        self,
        tracer: Any,
        run_id: str,
        task: str | None,
        backend: Any,
        trace_id: str | None = None,
    ) -> None:
        """``trace_id``: the trace of the run's earlier part (a resumed run stays in it)."""
        from opentelemetry.trace import SpanKind

        self._tracer, self._backend, self._content = tracer, backend, capture_content()
        name = task or "agent"
        self._root = tracer.start_span(
            f"invoke_agent {name}",
            context=_continuing(trace_id),
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "vllm",
                "gen_ai.agent.name": name,
                "gen_ai.agent.id": run_id,
            },
        )
        self.trace_id = f"{self._root.get_span_context().trace_id:032x}"
        self._calls: dict[str, Any] = {}  # call id -> ToolCall, until its result arrives
        self._usage = [0, 0]

    def on_event(self, event: Any) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, e: Any) -> None:
        if e.thread_id:
            self._root.set_attribute("gen_ai.conversation.id", e.thread_id)

    def _on_step(self, e: Any) -> None:
        g = e.generation
        model = getattr(self._backend, "model", None) or "unknown"
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "vllm",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": g.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": g.usage.completion_tokens,
            "gen_ai.response.finish_reasons": [g.finish_reason],
        }
        if g.url:
            url = urlsplit(g.url)
            attrs["server.address"] = url.hostname or ""
            if url.port is not None:
                attrs["server.port"] = url.port
        if self._content:
            if g.prompt:  # completions mode: the rendered prompt (chat mode keeps none)
                attrs["gen_ai.input.messages"] = _messages(g.prompt)
            attrs["gen_ai.output.messages"] = _answer(g.text, g.finish_reason)
        self._usage[0] += g.usage.prompt_tokens
        self._usage[1] += g.usage.completion_tokens
        self._span_ending_now(f"chat {model}", g.timings.total_s, attrs, client=True)

    def _on_tool_call(self, e: Any) -> None:
        self._calls[e.call.id] = e.call

    def _on_tool_result(self, e: Any) -> None:
        r = e.result
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": r.name,
            "gen_ai.tool.call.id": r.call_id,
            "gen_ai.tool.type": "function",
        }
        if e.reused:
            attrs["agent.tool.reused"] = True
        call = self._calls.pop(r.call_id, None)
        if self._content:
            if call is not None:
                attrs["gen_ai.tool.call.arguments"] = json.dumps(call.arguments, default=str)
            attrs["gen_ai.tool.call.result"] = r.content
        error = None if r.status in ("ok", "denied", "skipped") else r.error or "execution"
        self._span_ending_now(f"execute_tool {r.name}", r.duration_s, attrs, error=error)

    def _on_error(self, e: Any) -> None:
        self._root.set_attribute("error.type", e.error_type)

    def _on_final(self, e: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        r = e.result
        self._root.set_attribute("gen_ai.usage.input_tokens", self._usage[0])
        self._root.set_attribute("gen_ai.usage.output_tokens", self._usage[1])
        self._root.set_attribute("agent.run.status", r.status)
        if r.status == "error":
            self._root.set_status(Status(StatusCode.ERROR, r.error or "error"))
            self._root.set_attribute("error.type", r.error_type or r.error_kind or "error")
        if self._content and r.answer is not None:
            answer = r.answer if isinstance(r.answer, str) else json.dumps(r.answer)
            finish = "length" if r.status == "limit" else "stop"
            self._root.set_attribute("gen_ai.output.messages", _answer(answer, finish))
        self.close()

    def interrupted(self) -> None:
        self._root.set_attribute("agent.run.status", "interrupted")

    def close(self) -> None:
        """End the run's span (once)."""
        if self._root.is_recording():
            self._root.end()

    def _span_ending_now(
        self,
        name: str,
        seconds: float,
        attrs: dict[str, Any],
        *,
        client: bool = False,
        error: str | None = None,
    ) -> None:
        """A child of the run's span that started ``seconds`` ago and ends now."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        end = time.time_ns()
        start = end - int(max(seconds, 0.0) * 1e9)
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(self._root),
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes=attrs,
            start_time=start,
        )
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end)


def _continuing(trace_id: str | None) -> Any:
    """A context whose parent is in trace ``trace_id`` (None: a new trace)."""
    if not trace_id:
        return None
    import random

    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    parent = SpanContext(
        trace_id=int(trace_id, 16),
        span_id=random.getrandbits(64) or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.DOTALL)


def _messages(prompt: str) -> str:
    """A ChatML prompt as the conventions' input messages (JSON: role and text parts)."""
    from agent.chatml import unescape

    turns = _TURN.findall(prompt) or [("user", prompt)]
    return json.dumps(
        [{"role": role, "parts": [{"type": "text", "content": unescape(text)}]}
         for role, text in turns],
        ensure_ascii=False,
    )  # fmt: skip


def _answer(text: str, finish_reason: str | None) -> str:
    """An answer as the conventions' output messages (JSON)."""
    message = {"role": "assistant", "parts": [{"type": "text", "content": text}]}
    return json.dumps([{**message, "finish_reason": finish_reason or "stop"}], ensure_ascii=False)
