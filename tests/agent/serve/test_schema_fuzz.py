"""``/openapi.json`` is published, and schemathesis fuzzes every operation of a running
server with it: no 5xx, and every response matches the schema (status, content type,
body). The server runs on loopback against the simulator, as ``agent serve`` does."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agent.serve import SecurityConfig  # noqa: E402
from agent.sim import FunctionPolicy  # noqa: E402
from agent.testing import run_sim  # noqa: E402
from tests.agent.serve.conftest import config, served, write_task  # noqa: E402

EXAMPLES = 50
_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("fuzz")
    task = write_task(tmp, "greet", vars={"who": "you"}, limits={"max_steps": 2})
    security = SecurityConfig(rate=10_000, burst=10_000)
    with (
        run_sim(FunctionPolicy(lambda r: "Hello.")) as sim,
        served(config(tmp, sim.url, task, security=security)) as s,
    ):
        yield schemathesis.openapi.from_url(f"{s.url}/openapi.json")


@pytest.mark.slow
def test_no_server_errors_and_responses_match_the_schema(api_schema) -> None:
    # Driven through schemathesis's Python API: its pytest plugin does not run on pytest 9.
    ran: dict[str, int] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for operation, mode in itertools.product(operations, modes):
        fuzz = _fuzzer(operation, mode, ran)
        try:
            fuzz()
        except Unsatisfiable:  # nothing invalid to send (no parameters, no body)
            assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    total = sum(ran.values())
    print(f"\nschemathesis: {total} examples over {len(operations)} operations, no failure")


def _fuzzer(operation, mode, ran: dict[str, int]):
    label = f"{operation.label} {mode.value}"

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case) -> None:
        ran[label] = ran.get(label, 0) + 1
        case.call_and_validate(checks=_CHECKS, timeout=30)

    return fuzz
