"""BFCL data: read a category's JSON-lines file and its possible answers; make gold calls.

A category ``C`` is two files under the data folder: ``BFCL_v4_C.json`` (one case a line:
``id``, ``question`` — a list of turns, each a list of ``{role, content}`` — and
``function``, the function docs) and ``possible_answer/BFCL_v4_C.json`` (``id`` and
``ground_truth``: one ``{function_name: {param: [acceptable values]}}`` per expected call).
``irrelevance`` has no possible answers: the right answer is no call.

A possible answer is a set of answers; :func:`gold_calls` picks one concrete answer from it
(the first value of each parameter, omitting a parameter whose pick is ``""``).

>>> gold_calls([{"math.power": {"base": [2], "exponent": [3], "mod": ["", 1]}}])
[{'math.power': {'base': 2, 'exponent': 3}}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

__all__ = ["CATEGORIES", "BfclCase", "concrete_call", "gold_calls", "load_category"]

CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
"""The BFCL v4 single-turn Python categories this module reads and scores."""


@dataclass(frozen=True)
class BfclCase:
    """One BFCL test case, as in the data files.

    >>> BfclCase("irrelevance_0", "irrelevance", [[{"role": "user", "content": "Hi"}]], []).messages
    [{'role': 'user', 'content': 'Hi'}]
    """

    id: str
    category: str
    question: list[list[dict[str, str]]]
    """Turns of messages; the single-turn categories have exactly one turn."""
    functions: list[dict[str, Any]]
    """BFCL function docs: ``name``, ``description``, ``parameters`` (``"type": "dict"``)."""
    ground_truth: list[dict[str, Any]] | None = None
    """The possible answer, one entry per expected call; ``None`` for irrelevance."""

    @property
    def messages(self) -> list[dict[str, str]]:
        """The conversation to send: every turn's messages, in order."""
        return [message for turn in self.question for message in turn]


def load_category(data_dir: str | Path, category: str) -> list[BfclCase]:
    """Read ``BFCL_v4_<category>.json`` and, except for irrelevance, its possible answers.

    Raises ``ConfigError`` naming the file (and line) that is missing or malformed.

    >>> load_category("/nonexistent", "simple_python")
    Traceback (most recent call last):
    ...
    agent.errors.ConfigError: /nonexistent/BFCL_v4_simple_python.json: no such file ...
    """
    root = Path(data_dir)
    cases = _read_lines(root / f"BFCL_v4_{category}.json")
    if "irrelevance" in category:
        answers: dict[str, Any] = {}
    else:
        answer_file = root / "possible_answer" / f"BFCL_v4_{category}.json"
        answers = {a["id"]: a["ground_truth"] for a in _read_lines(answer_file)}
        missing = [c["id"] for c in cases if c["id"] not in answers]
        if missing:
            raise ConfigError(f"{answer_file}: no possible answer for {', '.join(missing[:5])}")
    return [
        BfclCase(c["id"], category, c["question"], c["function"], answers.get(c["id"]))
        for c in cases
    ]


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (expected BFCL_v4 JSON-lines data; see the "
            "berkeley-function-call-leaderboard's bfcl_eval/data folder)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: not valid JSON: {exc}") from None
        if not isinstance(row, dict) or "id" not in row:
            raise ConfigError(f"{path}:{number}: expected a JSON object with an 'id'")
        rows.append(row)
    return rows


def gold_calls(
    ground_truth: list[dict[str, Any]], functions: list[dict[str, Any]] | None = None
) -> list[dict[str, dict[str, Any]]]:
    """A concrete answer from a possible answer, as decoded calls.

    Without ``functions``: the first value of each parameter. With them, each pick also
    follows the schema where the possible answer allows both (a required parameter is
    given, an undeclared one is omitted), so the answer is one BFCL accepts.

    >>> gold_calls([{"f": {"unit": ["", "cm"]}}])
    [{'f': {}}]
    """
    by_name = {f["name"]: f for f in functions or ()}
    return [concrete_call(a, function=by_name.get(next(iter(a)))) for a in ground_truth]


def concrete_call(
    answer: dict[str, Any],
    pick: Mapping[str, int] | None = None,
    function: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """One call from one expected call: value ``pick[param]`` of each parameter, else the
    first (the first that suits ``function``'s schema, when given).

    A picked ``""`` omits the parameter. A possible dict lists each key's values; a list of
    such dicts stands for a list of dicts: both become concrete dicts the same way.

    >>> concrete_call({"f": {"x": [1, 2], "d": [{"k": ["", "v"]}]}}, {"x": 1})
    {'f': {'x': 2, 'd': {}}}
    """
    ((name, params),) = answer.items()
    pick = pick or {}
    schema = (function or {}).get("parameters", {})
    args = {}
    for param, options in params.items():
        if param in pick:
            value = options[pick[param]]
        elif function is None:
            value = options[0]
        else:
            value = _suitable(
                options, param in schema.get("required", ()), param in schema.get("properties", {})
            )
        if value != "":
            args[param] = _concrete(value)
    return {name: args}


def _suitable(options: list[Any], required: bool, declared: bool) -> Any:
    if not declared and "" in options:
        return ""
    if required:
        return next((o for o in options if o != ""), options[0])
    return options[0]


def _concrete(value: Any) -> Any:
    if type(value) is dict:
        return {key: values[0] for key, values in value.items() if values and values[0] != ""}
    if type(value) is list and value and all(type(item) is dict for item in value):
        return [_concrete(item) for item in value]
    return value
