"""What the simulated model says: a policy maps a request to the raw assistant output.

Two policies ship: :class:`ScriptPolicy` replays a transcript, and :class:`FunctionPolicy`
calls a Python function (for tests). Under structured outputs (JSON mode, a forced tool
call) the server checks a policy's answer and replaces one that does not fit with one that
does, as a constrained decoder would have (:mod:`agent.sim.constrain`) — unless the policy
is ``verbatim``: a script is a transcript of what the model said, so its entries are sent
exactly as written, fitting or not (a non-fitting entry models a server that ignored the
constraint, or an answer cut short). ``FunctionPolicy(fn, verbatim=True)`` does the same.

A script answers the conversation's k-th assistant turn with entry k, k being the number of
assistant turns already *completed* in the prompt (the open generation prompt does not
count). Keying on the prompt instead of on a request counter means concurrent sessions
replay independently and a retried request gets the same answer; the price is that two
different conversations at the same depth get the same entry.

>>> ScriptPolicy(["Hi!"])(SimRequest(prompt="<|im_start|>assistant\\n"))
'Hi!'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.errors import ConfigError

__all__ = [
    "FunctionPolicy",
    "Policy",
    "PolicyError",
    "ScriptPolicy",
    "SimRequest",
    "count_assistant_turns",
    "is_verbatim",
]

_OPEN = "<|im_start|>assistant"
_END = "<|im_end|>"


def count_assistant_turns(prompt: str) -> int:
    """Completed assistant turns in a ChatML prompt; an open last turn is not counted.

    >>> count_assistant_turns("<|im_start|>assistant\\nA<|im_end|>\\n<|im_start|>assistant\\n")
    1
    """
    n = prompt.count(_OPEN)
    last = prompt.rfind(_OPEN)
    if last >= 0 and _END not in prompt[last:]:
        n -= 1
    return n


@dataclass
class SimRequest:
    """One generation request as the policy sees it."""

    prompt: str
    """The full ChatML prompt (rendered by the server for chat requests)."""
    body: dict[str, Any] = field(default_factory=dict)
    """The raw request JSON."""
    endpoint: str = "/v1/completions"

    @property
    def assistant_turns(self) -> int:
        """k: assistant turns already completed in the conversation."""
        return count_assistant_turns(self.prompt)


class PolicyError(Exception):
    """The policy cannot answer; the server turns it into a vLLM-shaped error with ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Policy(Protocol):
    def __call__(self, request: SimRequest) -> str: ...


def is_verbatim(policy: object) -> bool:
    """Are ``policy``'s answers sent as written even under a constraint they break?"""
    return bool(getattr(policy, "verbatim", False))


class FunctionPolicy:
    """Answer with ``fn(request)``; the default answers with an empty string.

    >>> FunctionPolicy(lambda r: r.endpoint)(SimRequest(prompt=""))
    '/v1/completions'
    """

    def __init__(
        self, fn: Callable[[SimRequest], str] | None = None, *, verbatim: bool = False
    ) -> None:
        self.fn = fn or (lambda _request: "")
        self.verbatim = verbatim

    def __call__(self, request: SimRequest) -> str:
        out = self.fn(request)
        if not isinstance(out, str):
            raise PolicyError(
                f"policy function returned {type(out).__name__}, expected str", status=500
            )
        return out


class ScriptPolicy:
    """Replay a list of raw assistant outputs, entry k for the k-th assistant turn.

    >>> ScriptPolicy(["a", "b"]).entries
    ['a', 'b']
    """

    verbatim = True

    def __init__(self, entries: list[str], *, source: str = "script") -> None:
        self.entries = _validate(entries, source)
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptPolicy:
        """Load a YAML or JSON file whose top level is a list of strings.

        Raises ``ConfigError`` naming the file and the offending entry.
        """
        from agent._yamlload import read_text, safe_load

        path = Path(path)
        text = read_text(path, "script")
        if path.suffix != ".json":
            return cls(safe_load(text, str(path)), source=str(path))
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        return cls(data, source=str(path))

    def __call__(self, request: SimRequest) -> str:
        k = request.assistant_turns
        if k >= len(self.entries):
            raise PolicyError(
                f"simulated script has {len(self.entries)} entries; "
                f"conversation asks for entry {k + 1} ({self.source})"
            )
        return self.entries[k]


def _validate(entries: Any, source: str) -> list[str]:
    if not isinstance(entries, list):
        raise ConfigError(
            f"{source}: a script must be a list of strings (raw assistant outputs), "
            f"got {type(entries).__name__}"
        )
    for i, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ConfigError(
                f"{source}: entry {i + 1} must be a string (the raw assistant output), "
                f"got {type(entry).__name__}: {entry!r:.80}"
            )
    return list(entries)
