"""BFCL end to end without a GPU: prompt → simulated vLLM → parser → ast_check.

The simulator answers from each case's gold answer (:class:`evals.bfcl_policy.BfclPolicy`);
every case scores with no corruption, and exactly the corrupted ones fail otherwise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.chatml import render, to_messages
from agent.config import Sampling
from agent.hermes import parse
from agent.llm import GenerationDone, GenerationRequest, VLLMBackend, VLLMConfig
from agent.sim import PolicyError, SimRequest
from agent.testing import arun_sim
from evals.bfcl import CATEGORIES, BfclCase, CheckResult, load_category, score, to_tool_specs
from evals.bfcl_policy import CORRUPTIONS, NO_CALL_TEXT, BfclPolicy

PER_CATEGORY = 25
# Which check each corruption trips (BFCL's error types); in parallel categories a bad call
# shows up as an expected call that no call matches.
EXPECTED_ERRORS = {
    "no_call": "wrong_count",
    "extra_call": "wrong_count",
    "wrong_name": "wrong_func_name",
    "extra_param": "unexpected_param",
    "drop_required": "missing_required",
    "spurious_call": "irrelevance_error:decoder_success",
}


def _sample(bfcl_data: Path) -> list[BfclCase]:
    cases = []
    for category in CATEGORIES:
        every = load_category(bfcl_data, category)
        cases += every[:: max(1, len(every) // PER_CATEGORY)][:PER_CATEGORY]
    return cases


async def _run(cases: list[BfclCase], policy: BfclPolicy) -> dict[str, CheckResult]:
    async with (
        arun_sim(policy) as sim,
        VLLMBackend(sim.url, config=VLLMConfig(timeout_s=60.0)) as backend,
    ):
        results = await asyncio.gather(*(_score(backend, case) for case in cases))
    return {case.id: result for case, result in zip(cases, results, strict=True)}


async def _score(backend: VLLMBackend, case: BfclCase) -> CheckResult:
    request = GenerationRequest(
        to_messages(case.messages),
        tools=to_tool_specs(case.functions),
        sampling=Sampling(temperature=0.0),
    )
    events = [event async for event in backend.stream(request)]
    done = events[-1]
    assert isinstance(done, GenerationDone) and not done.generation.errors
    return score(case, done.generation.tool_calls)


async def test_gold_answers_score_100_percent_end_to_end(bfcl_data: Path) -> None:
    cases = _sample(bfcl_data)
    results = await _run(cases, BfclPolicy(cases))
    failed = {cid: r for cid, r in results.items() if not r.valid}
    print(f"\nBFCL end to end, no corruption: {len(cases) - len(failed)}/{len(cases)} valid")
    assert not failed
    assert {c.category for c in cases} == set(CATEGORIES)


async def test_exactly_the_injected_failures_fail_end_to_end(bfcl_data: Path) -> None:
    cases = _sample(bfcl_data)
    policy = BfclPolicy(cases, corruption_rate=0.4, seed=11)
    planned = {c.id: policy.plan(c) for c in cases if policy.plan(c)}
    results = await _run(cases, policy)
    failed = {cid for cid, r in results.items() if not r.valid}
    print(
        f"\nBFCL end to end, 40% corruption: {len(cases) - len(failed)}/{len(cases)} valid, "
        f"{len(planned)} corrupted"
    )
    assert failed == set(planned)
    assert set(planned.values()) == set(CORRUPTIONS)  # this seed tries every kind
    for cid, kind in planned.items():
        expected = EXPECTED_ERRORS[kind]
        if cid.startswith("parallel") and expected != "wrong_count":
            expected = "cannot_find_match"
        assert (results[cid].error_type or "").endswith(expected), (cid, results[cid])


def test_plan_is_deterministic_and_follows_the_rate(bfcl_data: Path) -> None:
    cases = load_category(bfcl_data, "simple_python")
    plans = [BfclPolicy(cases, corruption_rate=0.3, seed=5).plan(c) for c in cases]
    again = [BfclPolicy(cases, corruption_rate=0.3, seed=5).plan(c) for c in cases]
    other = [BfclPolicy(cases, corruption_rate=0.3, seed=6).plan(c) for c in cases]
    assert plans == again != other
    assert 0.2 < sum(p is not None for p in plans) / len(cases) < 0.4
    assert all(BfclPolicy(cases, corruption_rate=1.0).plan(c) for c in cases)


def test_policy_answers_the_rendered_prompt_offline(bfcl_data: Path) -> None:
    """Without a server: the policy's raw output parses into calls that score."""
    cases = load_category(bfcl_data, "parallel_multiple")[:20]
    policy = BfclPolicy(cases)
    for case in cases:
        prompt = render(case.messages, to_tool_specs(case.functions))
        parsed = parse(policy(SimRequest(prompt)))
        assert not parsed.errors and score(case, parsed.tool_calls).valid, case.id


def test_policy_tells_cases_with_the_same_question_apart_by_their_tools(
    bfcl_data: Path,
) -> None:
    simple = {c.id: c for c in load_category(bfcl_data, "simple_python")}["simple_python_8"]
    multiple = {c.id: c for c in load_category(bfcl_data, "multiple")}["multiple_97"]
    assert simple.messages == multiple.messages  # BFCL reuses the question
    policy = BfclPolicy([simple, multiple])
    for case in (simple, multiple):
        assert policy.case_for(render(case.messages, to_tool_specs(case.functions))) is case


def test_policy_refuses_an_unknown_prompt_and_ends_later_turns() -> None:
    policy = BfclPolicy([])
    with pytest.raises(PolicyError, match="0 BFCL cases"):
        policy(SimRequest(render([{"role": "user", "content": "Hi"}])))
    later = render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "x"}])
    assert policy(SimRequest(later)) == "Done."
    irrelevant = BfclCase("irrelevance_x", "irrelevance", [[{"role": "user", "content": "Hi"}]], [])
    assert BfclPolicy([irrelevant])(SimRequest(render(irrelevant.messages))) == NO_CALL_TEXT
