"""An OpenAI-compatible facade: ``POST /v1/chat/completions`` and ``GET /v1/models``.

``model`` names a served task. The request becomes a run of that task — the same runs as
``POST /v1/runs``, readable at ``/v1/runs/{id}`` (the completion's ``run_id``, and the
``X-Run-Id`` header) — whose tools run **on the server**, under the task's policies.
Choices made here, and documented in README:

- The last message must be the user's; it is the run's input. Earlier user/assistant
  turns go into the input as a transcript (the run is stateless, as the API is; use
  threads in the runs API to continue a server-side conversation). ``system`` (and
  ``developer``) messages are appended to the task's system prompt.
- Client-supplied ``tools`` (and the legacy ``functions``) are refused with a 400: the
  agent calls the task's tools itself; a client cannot add tools to a task.
  ``tool_choice`` is about the task's tools: ``none`` runs without them; ``required``,
  or one of them by name, makes the model call before it answers (where the task leaves
  the choice to the model: ``options.tool_choice`` of the runs API).
- ``temperature``, ``top_p``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
  ``stop`` (added to the task's) and ``max_tokens`` (at most the task's) apply to each
  model call of the run. ``response_format`` ``json_object`` or ``json_schema`` becomes
  the run's output schema (the answer is that JSON, as text). ``logprobs`` are not
  returned (an answer is the end of a run, not one generation): asking is a 400. Calls
  that need approval are denied (no one can approve over this API): use the runs API
  for tasks that ask.
- Streamed, the answer arrives when it is final (intermediate steps are tool work, not
  answer text). Tool progress travels as extra SSE events named ``agent.progress``
  whose data is a chunk with an empty ``delta`` and an ``agent_event`` field (the typed
  event, as ``GET /v1/runs/{id}/events`` shows it): EventSource clients ignore named
  events, and the OpenAI SDKs see a chunk with no content.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from agent.serve._errors import HTTPError, invalid, scrub
from agent.serve._models import InlineTask, RunBody, RunOptions, SamplingOptions
from agent.serve._openapi import Route
from agent.serve._routes import IDEMPOTENCY_KEY, parse
from agent.task import Task

__all__ = ["OPENAI_ROUTES", "ChatBody"]

_PROGRESS = ("tool_call", "tool_result", "repair", "approval", "error")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Body):
    type: Literal["text"]
    text: str = Field(max_length=1_000_000)


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaFormat(_Body):
    name: str = Field(max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class NamedFunction(_Body):
    name: str = Field(max_length=64)


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class ChatBody(_Body):
    """The chat-completions request: the fields OpenAI clients commonly send."""

    model: str = Field(description="A served task's name (GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    max_tokens: int | None = Field(None, gt=0, le=1_000_000)
    max_completion_tokens: int | None = Field(None, gt=0, le=1_000_000)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | list[str] | None = Field(None, description="Added to the task's stop strings.")
    response_format: ResponseFormat | None = Field(
        None, description="json_object or json_schema: the run's output schema."
    )
    logprobs: bool | None = Field(None, description="Not returned: true is a 400.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Not returned.")
    n: Literal[1] | None = None
    tools: list[dict[str, Any]] | None = Field(None, description="Refused unless empty.")
    functions: list[dict[str, Any]] | None = Field(None, description="Refused unless empty.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="About the task's tools (options.tool_choice of the runs API)."
    )
    parallel_tool_calls: bool | None = None
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = Field(None, max_length=64, description="Ignored.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]
    run_id: str


def run_body(chat: ChatBody, task: Task) -> RunBody:
    """The run of ``task`` a chat request asks for (400/422 for what the facade refuses)."""
    try:
        return _run_body(chat, task)
    except ValidationError as exc:  # e.g. a stop string or a system prompt over the runs' caps
        raise invalid(exc) from None


def _run_body(chat: ChatBody, task: Task) -> RunBody:
    if chat.tools or chat.functions:
        raise HTTPError(
            400, "tools_not_supported",
            "this endpoint runs the task's own tools on the server; client-side tools are "
            "not accepted (omit tools, or call the tools yourself with another model)",
        )  # fmt: skip
    if chat.logprobs or chat.top_logprobs:
        raise HTTPError(
            400, "logprobs_not_supported",
            "logprobs are not returned: the answer ends a run of several generations (omit "
            "logprobs and top_logprobs)",
        )  # fmt: skip
    texts = [(m.role, _text(m)) for m in chat.messages]
    if texts[-1][0] != "user":
        raise HTTPError(422, "invalid_request", "messages: the last message must be the user's")
    system = [t for role, t in texts if role in ("system", "developer") and t]
    turns = [(role, t) for role, t in texts[:-1] if role in ("user", "assistant") and t]
    text = texts[-1][1]
    if turns:
        transcript = "\n".join(f"{role}: {t}" for role, t in turns)
        text = f"Earlier in this conversation:\n{transcript}\n\nThe user now says:\n{text}"
    sampling = SamplingOptions(
        temperature=chat.temperature,
        top_p=chat.top_p,
        seed=chat.seed,
        max_tokens=chat.max_completion_tokens or chat.max_tokens,
        presence_penalty=chat.presence_penalty,
        frequency_penalty=chat.frequency_penalty,
        stop=[chat.stop] if isinstance(chat.stop, str) else chat.stop,
    )
    choice = chat.tool_choice
    options = RunOptions(
        sampling=sampling,
        approve="none",
        tool_choice=choice.function.name if isinstance(choice, NamedToolChoice) else choice,
    )
    schema = _output_schema(chat.response_format)
    if not system and schema is None:
        return RunBody(task=chat.model, input=text, options=options)
    inline = InlineTask(
        extends=chat.model,
        system="\n\n".join([task.system, *system] if task.system else system) or None,
        output_schema=schema,
    )
    return RunBody(task=inline, input=text, options=options)


def fingerprint(chat: ChatBody) -> dict[str, Any]:
    """What a chat request asks for, for its Idempotency-Key: the fields it set, less how
    the answer is delivered (a streamed request retried unstreamed is the same request)."""
    return chat.model_dump(
        mode="json", by_alias=True, exclude_defaults=True, exclude={"stream", "stream_options"}
    )


def _output_schema(form: ResponseFormat | None) -> dict[str, Any] | None:
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "object"}
    if form.json_schema is None or form.json_schema.schema_ is None:
        raise HTTPError(
            422, "invalid_request", "response_format: json_schema needs json_schema.schema"
        )
    return form.json_schema.schema_


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return "".join(part.text for part in message.content)
    return message.content or ""


async def chat_completions(request: Request) -> Response:
    chat = await parse(request, ChatBody)
    svc = request.app.state.service
    if chat.model not in svc.catalog.tasks:
        raise HTTPError(404, "model_not_found", f"no model {chat.model!r} (see GET /v1/models)")
    body = run_body(chat, svc.catalog.get(chat.model))
    identity = request.scope["state"]["identity"]
    key = request.headers.get("idempotency-key")
    run_id, _, slot = await svc.submit_holding(body, identity, key, fingerprint(chat))
    headers = {"X-Run-Id": run_id}
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        stream = _stream(svc.follow(run_id, 0, slot), run_id, chat.model, include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    result = await svc.final_result(run_id, slot)
    if result.get("status") == "error":
        raise HTTPError(502, "run_error", result.get("error") or "the run failed")
    completion = ChatCompletion(
        id=f"chatcmpl-{run_id}",
        created=int(time.time()),
        model=chat.model,
        choices=[{"index": 0, "message": _message(result), "finish_reason": _finish(result),
                  "logprobs": None}],
        usage=_usage(result),
        run_id=run_id,
    )  # fmt: skip
    return JSONResponse(completion.model_dump(mode="json"), headers=headers)


async def _stream(
    events: AsyncIterator[Any], run_id: str, model: str, include_usage: bool
) -> AsyncIterator[str]:
    base = {"id": f"chatcmpl-{run_id}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}  # fmt: skip

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return json.dumps({**base, "choices": [choice], **extra}, ensure_ascii=False)

    yield f"data: {chunk({'role': 'assistant', 'content': ''})}\n\n"
    async for event in _each(events):
        if event is None:
            yield ": keep-alive\n\n"
        elif event.kind in _PROGRESS:
            progress = chunk({}, agent_event=json.loads(event.data))
            yield f"event: agent.progress\ndata: {progress}\n\n"
        elif event.kind == "final":
            result = json.loads(event.data)["result"]
            if result.get("status") == "error":
                error = {"type": "run_error", "message": scrub(result.get("error") or "failed")}
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            content = _message(result)["content"]
            yield f"data: {chunk({'content': content})}\n\n"
            yield f"data: {chunk({}, _finish(result))}\n\n"
            if include_usage:
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(result)})}\n\n"
            yield "data: [DONE]\n\n"
            return


async def _each(batches: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """One event at a time (``None`` for a keep-alive)."""
    async for events in batches:
        if not events:
            yield None
        for event in events:
            yield event


def _message(result: dict[str, Any]) -> dict[str, Any]:
    answer = result.get("answer")
    if answer is not None and not isinstance(answer, str):
        answer = json.dumps(answer, ensure_ascii=False)
    return {"role": "assistant", "content": answer or "", "refusal": None}


def _finish(result: dict[str, Any]) -> str:
    return "length" if result.get("status") == "limit" else "stop"


def _usage(result: dict[str, Any]) -> dict[str, int]:
    usage = result.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


async def list_models(request: Request) -> Response:
    names = sorted(request.app.state.service.catalog.tasks)
    data = [
        {"id": n, "object": "model", "created": 0, "owned_by": "hermes-vllm-agent"} for n in names
    ]
    return JSONResponse(ModelList(data=data).model_dump(mode="json"))


_ERRORS = (400, 401, 403, 404, 413, 422, 429, 502, 503)

OPENAI_ROUTES = [
    Route(
        "POST",
        "/v1/chat/completions",
        chat_completions,
        "OpenAI-compatible: model names a task; its tools run on the server.",
        ChatBody,
        {200: (ChatCompletion, "text/event-stream")},
        [IDEMPOTENCY_KEY],
        _ERRORS,
    ),
    Route(
        "GET",
        "/v1/models",
        list_models,
        "OpenAI-compatible: the tasks, as models.",
        None,
        {200: ModelList},
        [],
        (401, 403, 429),
    ),
]
