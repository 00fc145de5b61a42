"""A simulated model for suites: each sample replays its case's script.

One simulated server serves every sample of an eval, so the policy must tell samples
apart from the request alone. It keys on two things the request carries: the
conversation's first user turn (the case's rendered input, unescaped from the prompt)
and the sampling ``seed`` (trial *t* samples with ``suite.seed + t``), so each trial can
play its own script (``scripts:``) and cases never share one by accident. Entry *k* of a
script answers the *k*-th assistant turn, as :class:`agent.sim.ScriptPolicy` does.

Two cases with the same rendered input and different scripts cannot be told apart:
:meth:`SuitePolicy.add` refuses the second one.

>>> p = SuitePolicy()
>>> p.add("Hi", 0, ["Hello!"])
>>> from agent.chatml import render
>>> p(SimRequest(render([{"role": "user", "content": "Hi"}]), body={"seed": 0}))
'Hello!'
"""

from __future__ import annotations

import re

from agent.chatml import unescape
from agent.errors import ConfigError
from agent.sim.policy import PolicyError, SimRequest

__all__ = ["SuitePolicy", "render_script"]

_FIRST_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)


class SuitePolicy:
    """Scripts by (first user turn, seed); a ``FunctionPolicy``-compatible callable."""

    def __init__(self) -> None:
        self._scripts: dict[tuple[str, int | None], tuple[str, list[str]]] = {}

    def add(self, first_input: str, seed: int | None, script: list[str], case_id: str = "") -> None:
        """Serve ``script`` to conversations starting with ``first_input`` at ``seed``."""
        key = (first_input, seed)
        if key in self._scripts and self._scripts[key][1] != script:
            other = self._scripts[key][0]
            raise ConfigError(
                f"cases {other!r} and {case_id!r} have the same input and different scripts: "
                "the simulator tells cases apart by their input (make the inputs differ)"
            )
        self._scripts[key] = (case_id, script)

    def __call__(self, request: SimRequest) -> str:
        found = _FIRST_USER.search(request.prompt)
        first = unescape(found.group(1)) if found else ""
        seed = request.body.get("seed")
        entry = self._scripts.get((first, seed))
        if entry is None:
            raise PolicyError(
                f"no script for a conversation starting {first[:80]!r} (seed {seed}); "
                "every case needs script: (or scripts:) to run on the simulator"
            )
        case_id, script = entry
        k = request.assistant_turns
        if k >= len(script):
            raise PolicyError(
                f"case {case_id!r}: its script has {len(script)} entries; the conversation "
                f"asks for entry {k + 1}"
            )
        return script[k]


def render_script(entries: list[str], values: dict[str, str]) -> list[str]:
    """Fill ``{name}`` for the given names only (scripts hold JSON braces of their own).

    >>> render_script(['{"url": "{api_url}/x"}'], {"api_url": "http://h"})
    ['{"url": "http://h/x"}']
    """
    if not values:
        return list(entries)
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return [pattern.sub(lambda m: values[m.group(1)], e) for e in entries]
