"""KV-aware admission: runs start only while their contexts fit the server's KV cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.errors import ConfigError
from agent.llm._admission import Admission, parse_kv_capacity
from agent.llm.base import GenerationRequest
from agent.llm.vllm import VLLMBackend, VLLMConfig
from agent.testing import ScriptPolicy, run_sim
from agent.types import Message

A, B = "http://a", "http://b"


async def _hold(
    gate: Admission, session: str, order: list[str], log: list[Any], release: asyncio.Event
) -> None:
    async with gate.admitted(session, order) as url:
        log.append((session, url))
        await release.wait()


async def test_runs_wait_first_come_first_served_until_room_frees() -> None:
    gate = Admission({A: 10_000}, reserve_tokens=4_000)
    log: list[Any] = []
    done = [asyncio.Event() for _ in range(4)]
    tasks = [asyncio.create_task(_hold(gate, f"r{i}", [A], log, done[i])) for i in range(4)]
    await asyncio.sleep(0.01)
    assert [s for s, _ in log] == ["r0", "r1"] and gate.waiting == 2
    done[1].set()
    await asyncio.sleep(0.01)
    assert [s for s, _ in log] == ["r0", "r1", "r2"], "the next in line, in order"
    for event in done:
        event.set()
    await asyncio.gather(*tasks)
    assert gate.used(A) == 0 and gate.waiting == 0


async def test_an_admitted_run_is_never_held_back_and_reservations_learn() -> None:
    gate = Admission({A: 10_000}, reserve_tokens=1_000)
    async with gate.admitted("big", [A]):
        gate.observe("big", 9_500)  # grew past its reservation: it goes on, others wait
        assert gate.used(A) == 9_500
        waiter = asyncio.create_task(gate.admitted("next", [A]).__aenter__())
        await asyncio.sleep(0.01)
        assert not waiter.done()
    assert await waiter == A
    assert gate.reservation() == 9_500, "new runs reserve the peaks of recent ones"


async def test_a_run_goes_to_the_first_replica_with_room() -> None:
    gate = Admission({A: 5_000, B: 5_000}, reserve_tokens=4_000)
    log: list[Any] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(gate, f"r{i}", [A, B], log, release)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert log == [("r0", A), ("r1", B)] and gate.waiting == 1
    release.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    gate = Admission({A: 1_000}, reserve_tokens=1_000)
    async with gate.admitted("first", [A]):
        waiter = asyncio.create_task(_hold(gate, "second", [A], [], asyncio.Event()))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0


def test_kv_capacity_from_vllm_metrics() -> None:
    text = (
        "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n"
        'vllm:cache_config_info{block_size="16",cache_dtype="auto",num_cpu_blocks="0",'
        'num_gpu_blocks="4096"} 1.0\n'
    )
    assert parse_kv_capacity(text) == 65_536
    assert parse_kv_capacity("vllm:num_requests_running 0\n") is None


async def test_the_backend_admits_sessions_and_pins_them() -> None:
    with run_sim(ScriptPolicy(["ok"] * 4)) as sim:
        config = VLLMConfig(urls=(sim.url,), kv_budget=100, reserve_tokens=100)
        async with VLLMBackend(sim.url, config=config) as backend:
            async with backend.admitted("s1"):
                request = GenerationRequest([Message("user", "hi " * 40)], session_id="s1")
                await backend.generate(request)
                second = asyncio.create_task(backend.admitted("s2").__aenter__())
                await asyncio.sleep(0.05)
                assert not second.done(), "s1's context fills the budget"
            await second
        auto = VLLMBackend(sim.url, config=VLLMConfig(urls=(sim.url,), kv_budget="auto"))
        async with auto.admitted("s3"):  # 90% of the cache vllm:cache_config_info reports
            assert auto._gate is not None
            assert auto._gate.budgets == {sim.url: int(sim.engine.profile.cache_tokens * 0.9)}
        await auto.aclose()


async def test_auto_budget_needs_the_cache_metric() -> None:
    bare = httpx.MockTransport(lambda request: httpx.Response(200, text="vllm:x 1\n"))
    async with httpx.AsyncClient(transport=bare) as client:
        backend = VLLMBackend(
            "http://old", client=client, config=VLLMConfig(urls=("http://old",), kv_budget="auto")
        )
        with pytest.raises(ConfigError, match="does not report vllm:cache_config_info"):
            async with backend.admitted("s"):
                pass


@pytest.mark.parametrize("budget", [None, 100])
async def test_a_task_files_kv_budget_queues_agent_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int | None
) -> None:
    """``model.kv_budget`` in a task file reaches the runs: two runs started together run
    one after the other when one context fills the budget, and overlap without one."""
    from agent.api import Agent

    monkeypatch.chdir(tmp_path)
    with run_sim(ScriptPolicy(["ok"])) as sim:
        task = tmp_path / "task.yaml"
        extra = f"\n  kv_budget: {budget}" if budget else ""
        task.write_text(f"name: queued\ninput: hi\nmodel:\n  url: {sim.url}{extra}\n")
        agent = Agent.from_task(task)
        order: list[str] = []

        async def run(tag: str) -> None:
            async for event in agent.stream():
                if event.kind in ("run_started", "final"):
                    order.append(f"{tag}:{event.kind}")

        try:
            await asyncio.gather(run("a"), run("b"))
        finally:
            await agent.aclose()
    if budget:
        assert order == ["a:run_started", "a:final", "b:run_started", "b:final"]
    else:
        assert order[:2] == ["a:run_started", "b:run_started"]
