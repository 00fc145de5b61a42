"""BFCL (Berkeley Function Calling Leaderboard) AST evaluation: data, tools, scoring.

The pieces, one per module, all re-exported here:

- :mod:`evals._bfcl_data` — :func:`load_category` reads a BFCL_v4 category and its
  possible answers into :class:`BfclCase` objects; :func:`gold_calls` makes a concrete
  answer from a possible answer.
- :mod:`evals._bfcl_tools` — :func:`to_tool_specs` turns a case's functions into
  :class:`~agent.types.ToolSpec` (reversible names through :class:`ToolNames`, BFCL types
  as JSON Schema); :func:`to_bfcl_calls` turns the parser's calls into BFCL's decoded form.
- :mod:`evals._bfcl_checker` — :func:`ast_check`, BFCL's AST checker semantics and error
  types, verified against BFCL's own code (``tests/evals/test_bfcl_oracle.py``).

The model's calls are scored, never executed. Credit: the checker's semantics, the data
and the error types are BFCL's (ShishirPatil/gorilla, berkeley-function-call-leaderboard,
Apache-2.0); the code here is this project's own.

>>> case = BfclCase("simple_python_1", "simple_python", [[]],
...     [{"name": "math.factorial", "description": "n!", "parameters": {"type": "dict",
...       "properties": {"number": {"type": "integer"}}, "required": ["number"]}}],
...     [{"math.factorial": {"number": [5]}}])
>>> score(case, [ToolCall("math_factorial", {"number": 5})]).valid
True
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.types import ToolCall
from evals._bfcl_checker import CheckResult, ast_check, normalize_string
from evals._bfcl_data import CATEGORIES, BfclCase, concrete_call, gold_calls, load_category
from evals._bfcl_tools import (
    ToolNames,
    to_bfcl_calls,
    to_json_schema,
    to_tool_calls,
    to_tool_specs,
)

__all__ = [
    "CATEGORIES",
    "BfclCase",
    "CheckResult",
    "ToolNames",
    "ast_check",
    "concrete_call",
    "gold_calls",
    "load_category",
    "normalize_string",
    "score",
    "to_bfcl_calls",
    "to_json_schema",
    "to_tool_calls",
    "to_tool_specs",
]


def score(case: BfclCase, calls: Iterable[ToolCall]) -> CheckResult:
    """Score the calls a model made for ``case`` (tool names as :func:`to_tool_specs` gave).

    >>> score(BfclCase("irrelevance_0", "irrelevance", [[]], []), []).valid
    True
    """
    decoded = to_bfcl_calls(calls, ToolNames.for_functions(case.functions))
    return ast_check(case.functions, decoded, case.ground_truth, case.category)
