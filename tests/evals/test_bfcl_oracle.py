"""Agreement with BFCL's own checker: the same verdict on every gold answer and perturbation.

The oracle is PyPI's ``bfcl-eval``, installed without its (heavy, API-client) dependencies:
``pip install --no-deps bfcl-eval==2026.3.23``. Its AST checker imports the model-config
registry (which imports every model handler) only to learn whether a model's tool names
had ``.`` replaced by ``_``; a stub answers "no" — our scorer gets the original dotted
names back from :class:`evals.bfcl.ToolNames`. Irrelevance is scored in BFCL's
``eval_runner.py`` with ``utils.is_empty_output``; ``utils`` needs ``filelock``, stubbed
when absent. The test skips when ``bfcl-eval`` or the data is missing.
"""

from __future__ import annotations

import collections
import copy
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from evals.bfcl import CATEGORIES, ast_check, gold_calls, load_category
from tests.evals.bfcl_perturb import answers
from tests.evals.test_bfcl_checker import SIMPLE_RULES, _fn

ORACLE = "bfcl-eval==2026.3.23"
MODEL = "hermes-test-model"  # any name: the stubbed registry knows every model


class _Oracle:
    """BFCL's checker functions, imported once with the stubs in place."""

    def __init__(self) -> None:
        if importlib.util.find_spec("bfcl_eval") is None:
            pytest.skip(f"BFCL's checker is not installed: pip install --no-deps {ORACLE}")
        config = types.ModuleType("bfcl_eval.constants.model_config")
        config.MODEL_CONFIG_MAPPING = collections.defaultdict(  # type: ignore[attr-defined]
            lambda: types.SimpleNamespace(underscore_to_dot=False)
        )
        stubs: dict[str, types.ModuleType] = {config.__name__: config}
        if importlib.util.find_spec("filelock") is None:
            stubs["filelock"] = types.ModuleType("filelock")
            stubs["filelock"].FileLock = object  # type: ignore[attr-defined]
        saved = {name: sys.modules.get(name) for name in stubs}
        sys.modules.update(stubs)
        try:
            checker = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
            utils = importlib.import_module("bfcl_eval.utils")
            self.python = importlib.import_module("bfcl_eval.constants.enums").Language.PYTHON
        finally:
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module
        self.ast_checker = checker.ast_checker
        self.is_empty_output = utils.is_empty_output
        self.is_call_format = utils.is_function_calling_format_output

    def verdict(
        self, functions: list[Any], calls: Any, truth: Any, category: str
    ) -> tuple[bool, str | None]:
        """What BFCL's eval runner concludes for already-decoded calls."""
        calls = copy.deepcopy(calls)
        if category == "irrelevance":  # eval_runner._evaluate_single_relevance_entry
            if self.is_empty_output(calls):
                return True, None
            return False, "irrelevance_error:decoder_success"
        if not self.is_call_format(calls):  # eval_runner._evaluate_single_ast_entry
            return False, "ast_decoder:decoder_wrong_output_format"
        result = self.ast_checker(functions, calls, truth, self.python, category, MODEL)
        return result["valid"], None if result["valid"] else result["error_type"]


@pytest.fixture(scope="module")
def oracle() -> _Oracle:
    return _Oracle()


def _ours(functions: list[Any], calls: Any, truth: Any, category: str) -> tuple[bool, str | None]:
    result = ast_check(functions, calls, truth, category)
    return result.valid, result.error_type


def _guarded(check: Any, *args: Any) -> tuple[bool, str | None]:
    try:
        return check(*args)
    except Exception as exc:  # a crash is a verdict too: both must crash alike
        return False, f"raised {type(exc).__name__}"


def _irrelevance_answers(functions: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    tried: list[tuple[str, Any]] = [
        ("no_call", []),
        ("empty_call_item", [{}]),
        ("not_calls", "I cannot help with that."),
    ]
    for f in functions:
        tried.append(("call_no_args", [{f["name"]: {}}]))
        args = {p: "x" for p in f["parameters"].get("required", [])}
        tried.append(("call_required_args", [{f["name"]: args}]))
        tried.append(("two_calls", [{f["name"]: args}, {f["name"]: {}}]))
    return tried


@pytest.mark.parametrize("category", CATEGORIES)
def test_same_verdict_as_bfcl_on_gold_and_perturbations(
    oracle: _Oracle, bfcl_data: Path, category: str
) -> None:
    per_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    disagreements = []
    cases = load_category(bfcl_data, category)
    for case in cases:
        tried = (
            _irrelevance_answers(case.functions)
            if category == "irrelevance"
            else list(answers(case))
        )
        for kind, calls in tried:
            args = (case.functions, calls, case.ground_truth, category)
            theirs = _guarded(oracle.verdict, *args)
            ours = _guarded(_ours, *args)
            per_kind[kind]["total"] += 1
            per_kind[kind]["valid"] += theirs[0]
            if theirs == ours:
                per_kind[kind]["agree"] += 1
            else:
                disagreements.append((case.id, kind, calls, theirs, ours))

    total = sum(c["total"] for c in per_kind.values())
    agree = sum(c["agree"] for c in per_kind.values())
    print(f"\nBFCL oracle agreement, {category}: {agree}/{total} over {len(cases)} cases")
    for kind, c in sorted(per_kind.items()):
        print(f"  {kind:24} {c['agree']:6}/{c['total']:<6} (BFCL valid: {c['valid']})")
    assert not disagreements, f"{len(disagreements)} disagreements, e.g. {disagreements[:5]}"
    assert agree == total > len(cases)


def test_gold_answers_pass_bfcl_when_picked_with_the_schema(
    oracle: _Oracle, bfcl_data: Path
) -> None:
    """The simulator's gold answers are right by BFCL's own verdict, in every case."""
    for category in CATEGORIES[:4]:
        for case in load_category(bfcl_data, category):
            calls = gold_calls(case.ground_truth or [], case.functions)
            verdict = oracle.verdict(case.functions, calls, case.ground_truth, category)
            assert verdict == (True, None), (case.id, verdict)


@pytest.mark.parametrize(("props", "truth", "args", "verdict"), SIMPLE_RULES)
def test_bfcl_agrees_with_the_hand_written_rules(
    oracle: _Oracle,
    props: dict[str, Any],
    truth: dict[str, Any],
    args: dict[str, Any],
    verdict: tuple[bool, str | None],
) -> None:
    functions = [_fn("f", (), **props)]
    assert oracle.verdict(functions, [{"f": args}], [{"f": truth}], "simple_python") == verdict
