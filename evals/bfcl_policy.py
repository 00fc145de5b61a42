"""A simulated model for BFCL: answers each case from its gold answer, with chosen mistakes.

Plugged into the simulated vLLM server (``agent.sim``), it lets the whole BFCL path run
without a GPU: render the prompt with the case's tools → server → parse the Hermes
``<tool_call>`` blocks → score with :func:`evals.bfcl.ast_check`. With
``corruption_rate=0`` every case scores; otherwise exactly the corrupted cases fail.

How it finds the case: by the prompt's user messages (unescaped) and, when several cases
share a question, by the set of tool names in the prompt's ``<tools>`` block. Later turns
(the prompt already holds an assistant turn) get a plain final answer.

Which cases are corrupted, and how, is fixed by ``seed`` and the case id alone
(:meth:`BfclPolicy.plan`), so a test knows the expected failures in advance. Each kind of
corruption fails BFCL's checker by construction:

==================  =========================================================
``no_call``         answer in text only (wrong call count)
``extra_call``      repeat the first call (wrong call count)
``wrong_name``      the first call names a function that does not exist
``extra_param``     the first call gets an argument its function does not declare
``drop_required``   the first call leaves out a required argument it had
``spurious_call``   irrelevance only: call a function when none should be called
==================  =========================================================

>>> BfclPolicy([], corruption_rate=0.0).corruption_rate
0.0
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from agent.chatml import render_call, unescape
from agent.sim.policy import PolicyError, SimRequest
from evals._bfcl_data import BfclCase, gold_calls
from evals._bfcl_tools import ToolNames, to_tool_calls

__all__ = ["CORRUPTIONS", "BfclPolicy"]

CORRUPTIONS = (
    "no_call",
    "extra_call",
    "wrong_name",
    "extra_param",
    "drop_required",
    "spurious_call",
)
NO_CALL_TEXT = "None of the available functions can answer this request."
_USER_TURN = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_TOOLS = re.compile(r"<tools> (.*?) </tools>", re.DOTALL)
_UNKNOWN_NAME = "no_such_function"
_UNKNOWN_PARAM = "unexpected_argument"


class BfclPolicy:
    """Answer BFCL prompts from gold answers; corrupt a seeded fraction of the cases.

    >>> policy = BfclPolicy([], corruption_rate=0.25, seed=3)
    """

    def __init__(
        self,
        cases: Iterable[BfclCase],
        *,
        corruption_rate: float = 0.0,
        seed: int = 0,
        final_answer: str = "Done.",
    ) -> None:
        if not 0.0 <= corruption_rate <= 1.0:
            raise ValueError(f"corruption_rate must be within [0, 1], got {corruption_rate}")
        self.corruption_rate = corruption_rate
        self.seed = seed
        self.final_answer = final_answer
        self._by_question: dict[tuple[str, ...], list[BfclCase]] = defaultdict(list)
        for case in cases:
            self._by_question[_user_texts(case.messages)].append(case)

    def __call__(self, request: SimRequest) -> str:
        if request.assistant_turns:
            return self.final_answer
        return self.answer(self.case_for(request.prompt))

    def plan(self, case: BfclCase) -> str | None:
        """The corruption this policy applies to ``case``, or None (a right answer).

        >>> BfclPolicy([], corruption_rate=0.0).plan(BfclCase("x", "irrelevance", [[]], []))
        """
        rng = random.Random(f"{self.seed}:{case.id}")
        if rng.random() >= self.corruption_rate:
            return None
        if case.ground_truth is None:
            return "spurious_call"
        kinds = ["no_call", "extra_call", "wrong_name", "extra_param"]
        if _droppable(case):
            kinds.append("drop_required")
        return rng.choice(kinds)

    def answer(self, case: BfclCase) -> str:
        """The raw assistant output for ``case``: ``<tool_call>`` blocks, or text."""
        calls = gold_calls(case.ground_truth, case.functions) if case.ground_truth else []
        calls = _corrupt(case, calls, self.plan(case))
        if not calls:
            return NO_CALL_TEXT
        names = ToolNames.for_functions(case.functions)
        return "\n".join(render_call(call) for call in to_tool_calls(calls, names))

    def case_for(self, prompt: str) -> BfclCase:
        """The case whose question (and tool set, if needed) the prompt shows."""
        question = tuple(unescape(text) for text in _USER_TURN.findall(prompt))
        candidates = self._by_question.get(question, [])
        if len(candidates) > 1:
            tools = _tool_names(prompt)
            candidates = [
                c for c in candidates if set(ToolNames.for_functions(c.functions).to_bfcl) == tools
            ]
        if len(candidates) != 1:
            raise PolicyError(
                f"{len(candidates)} BFCL cases match this prompt (user text "
                f"{question[-1][:80] if question else ''!r}); expected exactly one"
            )
        return candidates[0]


def _user_texts(messages: list[dict[str, str]]) -> tuple[str, ...]:
    return tuple(m["content"] for m in messages if m["role"] == "user")


def _tool_names(prompt: str) -> set[str]:
    found = _TOOLS.search(prompt)
    names = set()
    for line in found.group(1).splitlines() if found else ():
        try:
            names.add(json.loads(line)["function"]["name"])
        except (ValueError, KeyError, TypeError):
            continue
    return names


def _schema(case: BfclCase, name: str) -> dict[str, Any]:
    return next(f for f in case.functions if f["name"] == name)["parameters"]


def _droppable(case: BfclCase) -> str | None:
    """A required argument of the first gold call, if it has one."""
    ((name, args),) = gold_calls(case.ground_truth or [], case.functions)[0].items()
    return next((p for p in _schema(case, name).get("required", []) if p in args), None)


def _corrupt(case: BfclCase, calls: list[dict[str, Any]], kind: str | None) -> list[dict[str, Any]]:
    if kind is None:
        return calls
    if kind == "spurious_call":
        name = case.functions[0]["name"] if case.functions else _UNKNOWN_NAME
        return [{name: {}}]
    if kind == "no_call":
        return []
    if kind == "extra_call":
        return [*calls, calls[0]]
    ((name, args),) = calls[0].items()
    if kind == "wrong_name":
        names = ToolNames.for_functions(case.functions)
        taken = {*names.to_tool, *names.to_bfcl}
        first = {_UNKNOWN_NAME + "_x" if _UNKNOWN_NAME in taken else _UNKNOWN_NAME: args}
    elif kind == "extra_param":
        declared = _schema(case, name).get("properties", {})
        first = {name: {**args, _UNKNOWN_PARAM + "_x" * (_UNKNOWN_PARAM in declared): 1}}
    elif kind == "drop_required":
        dropped = _droppable(case)
        first = {name: {k: v for k, v in args.items() if k != dropped}}
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    return [first, *calls[1:]]
