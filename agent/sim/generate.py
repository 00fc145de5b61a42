"""One generation request from JSON body to engine tokens: checks, policy, stop and length.

Shared by ``/v1/completions`` and ``/v1/chat/completions``. :func:`prepare` runs every
check that can fail *before* a response starts (model name, structured outputs, injected
errors, context length, policy), so failures are proper JSON errors; afterwards only the
injected disconnects and stalls of :func:`token_chunks` can break a response. The
policy's whole output is known up front (one answer per choice when ``n`` > 1), is made
to obey any structured-output constraint (:mod:`agent.sim.constrain`), and the engine
only paces its delivery. As in vLLM 0.32, a ``max_tokens`` that does not fit beside the
prompt is lowered to what fits; only one larger than the whole context is an error.

>>> apply_stop_and_length("Hi<|im_end|>junk", ["<|im_end|>"], 10)
(['Hi', ''], 'stop', '<|im_end|>')
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.sim import shapes
from agent.sim.constrain import (
    STRUCTURED_KINDS,
    Constraint,
    constraint_for,
    enforce,
    structured_kinds,
)
from agent.sim.engine import SeqHandle
from agent.sim.policy import PolicyError, SimRequest, is_verbatim
from agent.sim.tokens import SPECIAL_TOKENS, pieces, token_ids

if TYPE_CHECKING:
    from agent.sim.server import SimServer

__all__ = [
    "STRUCTURED_KINDS",
    "Choice",
    "Job",
    "SimulatedDisconnect",
    "apply_stop_and_length",
    "prepare",
    "token_chunks",
]

_BOS = SPECIAL_TOKENS["<|begin_of_text|>"]


class SimulatedDisconnect(Exception):
    """Raised inside a response to make the server drop the connection (an injected fault)."""


class RequestError(Exception):
    """A check failed before the response started; becomes a vLLM-shaped error."""

    def __init__(
        self, message: str, status: int = 400, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.kind = kind
        """The error ``type`` when it is not the status's usual one (``"Bad Request"``)."""


@dataclass
class Choice:
    """One generated answer (``n`` > 1 makes several): text, token pieces and finish."""

    index: int
    text: str
    """The output actually delivered (after the constraint, stop strings and ``max_tokens``)."""
    out_pieces: list[str]
    """One piece per generated token; a final stop token is an empty piece."""
    finish: str
    stop_reason: Any

    @property
    def n_tokens(self) -> int:
        return len(self.out_pieces)


@dataclass
class Job:
    """A request that passed every check: its prompt, its outputs and its faults."""

    rid: str
    prompt: str
    ids: list[int]
    choices: list[Choice]
    disconnect_after: int | None
    stall_s: float | None
    stall_after: int
    constraint: Constraint | None = None
    logprobs: int | None = None
    """Top alternatives asked per token (``None``: no logprobs)."""
    model: str = ""
    """The served name the request asked for (the base model or a LoRA adapter)."""

    # The first choice, for the common n=1 case.
    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def out_pieces(self) -> list[str]:
        return self.choices[0].out_pieces

    @property
    def finish(self) -> str:
        return self.choices[0].finish

    @property
    def stop_reason(self) -> Any:
        return self.choices[0].stop_reason

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.choices)


def apply_stop_and_length(
    text: str, stop: list[str], max_tokens: int
) -> tuple[list[str], str, Any]:
    """Cut ``text`` at the first stop string and at ``max_tokens`` tokens.

    Returns (pieces, finish_reason, stop_reason). Ending by a stop string or by the end of
    the script costs one more (empty) token, like the model's end-of-turn token.
    """
    cut, stop_reason = len(text), None
    for s in stop:
        at = text.find(s) if s else -1
        if 0 <= at < cut:
            cut, stop_reason = at, s
    out = [*pieces(text[:cut]), ""]
    if len(out) > max_tokens:
        return out[:max_tokens], "length", None
    return out, "stop", stop_reason


def _check_request(server: SimServer, body: dict[str, Any], chat: bool) -> Constraint | None:
    cfg = server.config
    model = body.get("model")
    if model is not None and model != cfg.model and model not in cfg.lora_modules:
        valid = ", ".join([cfg.model, *cfg.lora_modules])
        raise RequestError(
            f"The model `{model}` does not exist. Valid aliases: {valid}.", 404, "model"
        )
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise RequestError(f"n must be at least 1, got {n}.", 400, "n")
    kinds = structured_kinds(body)
    if "structured_outputs" in body and body["structured_outputs"] is not None and not kinds:
        raise RequestError(
            "You must use one kind of structured outputs constraint but none "
            f"are specified: {body['structured_outputs']!r}",
            400,
        )
    if len(kinds) > 1:
        raise RequestError(
            "You can only use one kind of structured outputs constraint but "
            f"multiple are specified: {kinds}",
            400,
        )
    rf = body.get("response_format") or {}
    if isinstance(rf, dict) and rf.get("type") in ("json_schema", "json_object", "structural_tag"):
        kinds.append("response_format")
    refused = [k for k in kinds if k in cfg.refuse_structured]
    if refused:
        raise RequestError(
            f"structured output kind {refused[0]!r} is not supported by this server "
            "(simulated refusal: SimConfig.refuse_structured)",
            400,
            "structured_outputs",
        )
    try:
        return constraint_for(body, chat=chat)
    except (ValueError, KeyError, TypeError) as exc:
        raise RequestError(f"invalid structured outputs: {exc}", 400) from exc


def _context(server: SimServer, body: dict[str, Any], ids: list[int]) -> int:
    limit = server.config.max_model_len
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError(
            f"max_tokens must be at least 1, got {max_tokens}. "
            f"(parameter=max_tokens, value={max_tokens})",
            400,
            "max_tokens",
        )
    if max_tokens is not None and max_tokens > limit:
        raise RequestError(shapes.max_tokens_error(max_tokens, limit), 400, "max_tokens")
    if len(ids) >= limit:
        raise RequestError(shapes.context_error(limit, len(ids)), 400, "input_tokens")
    room = limit - len(ids)
    return room if max_tokens is None else min(max_tokens, room)


def _logprobs(body: dict[str, Any], chat: bool) -> int | None:
    if chat:
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    value = body.get("logprobs")
    return None if value is None else int(value)


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop") or []
    return [stop] if isinstance(stop, str) else list(stop)


def prepare(
    server: SimServer, body: dict[str, Any], prompt: str, *, add_special: bool, endpoint: str
) -> Job:
    """Check a request and ask the policy; raises :class:`RequestError`."""
    chat = "chat" in endpoint
    constraint = _check_request(server, body, chat)
    status = server.faults.draw_error()
    if status is not None:
        raise RequestError(f"simulated fault: HTTP {status} injected by the simulator", status)
    ids = token_ids(prompt)
    if add_special:
        ids = [_BOS, *ids]  # like vLLM's tokenizer, even when the prompt already has BOS
    max_tokens = _context(server, body, ids)
    choices = []
    for index in range(body.get("n") or 1):
        try:
            text = server.policy(SimRequest(prompt=prompt, body=body, endpoint=endpoint))
        except PolicyError as exc:
            raise RequestError(str(exc), exc.status) from exc
        except Exception as exc:
            raise RequestError(f"simulated policy raised {type(exc).__name__}: {exc}", 500) from exc
        if constraint is not None and not is_verbatim(server.policy):
            text = enforce(text, constraint)
        out, finish, stop_reason = apply_stop_and_length(text, _stops(body), max_tokens)
        choices.append(Choice(index, "".join(out), out, finish, stop_reason))
    f = server.faults
    return Job(
        shapes.new_id("chatcmpl" if chat else "cmpl"),
        prompt,
        ids,
        choices,
        f.disconnect_after_tokens,
        f.stall_s,
        f.stall_after_tokens,
        constraint,
        _logprobs(body, chat),
        model=body.get("model") or server.config.model,
    )


async def _stall(seconds: float, closing: threading.Event) -> None:
    # In slices, so a server shutting down does not wait out a long injected stall.
    deadline = time.monotonic() + seconds
    while not closing.is_set() and (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.05))


async def token_chunks(
    seq: SeqHandle, job: Job, closing: threading.Event
) -> AsyncIterator[list[str]]:
    """The engine's per-step token pieces for ``seq``, with the job's stall and disconnect.

    Raises :class:`SimulatedDisconnect` after yielding exactly ``disconnect_after`` pieces.
    """
    sent, stalled = 0, job.stall_s is None
    while True:
        if not stalled and sent >= job.stall_after:
            stalled = True
            await _stall(job.stall_s or 0.0, closing)
        chunk = await seq.queue.get()
        if chunk is None:
            return
        # Cut only when more than ``disconnect_after`` tokens would go out: a response no
        # longer than that is complete and ends normally.
        if job.disconnect_after is not None and sent + len(chunk) > job.disconnect_after:
            head = chunk[: job.disconnect_after - sent]
            if head:
                yield head
            raise SimulatedDisconnect(f"simulated disconnect after {job.disconnect_after} tokens")
        sent += len(chunk)
        yield chunk
