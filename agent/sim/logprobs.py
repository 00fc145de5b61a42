"""``logprobs`` in vLLM's two shapes, for the simulator's tokens.

The simulator has no model, so it has no real probabilities: every generated token gets
log-probability ``0.0`` (probability 1: the policy was certain), and the only "top"
alternative listed is the token itself. The *shapes* are vLLM's:

- completions (``logprobs: k``): ``{"text_offset", "token_logprobs", "tokens",
  "top_logprobs": [{token: logprob}]}``, one entry per token, offsets into the output;
- chat (``logprobs: true, top_logprobs: k``): ``{"content": [{"token", "logprob",
  "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}``.

A final stop token has no text and gets no entry.

>>> completion_logprobs(["Hi", " there"], 0)["text_offset"]
[0, 2]
"""

from __future__ import annotations

from typing import Any

__all__ = ["chat_logprobs", "completion_logprobs"]

LOGPROB = 0.0


def completion_logprobs(pieces: list[str], offset: int) -> dict[str, Any]:
    """Completions-shaped logprobs for ``pieces`` starting ``offset`` characters in."""
    tokens = [p for p in pieces if p]
    offsets, at = [], offset
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {
        "text_offset": offsets,
        "token_logprobs": [LOGPROB] * len(tokens),
        "tokens": tokens,
        "top_logprobs": [{t: LOGPROB} for t in tokens],
    }


def chat_logprobs(pieces: list[str], top: int) -> dict[str, Any]:
    """Chat-shaped logprobs for ``pieces`` with up to ``top`` alternatives (only the token).

    >>> chat_logprobs(["A"], 2)["content"][0]["bytes"]
    [65]
    """
    content = []
    for token in (p for p in pieces if p):
        entry = {"token": token, "logprob": LOGPROB, "bytes": list(token.encode())}
        content.append({**entry, "top_logprobs": [entry] if top > 0 else []})
    return {"content": content}
