"""The page's engine without the page: turns on the async API, conversations from the
run store, approval after a restart, one agent per configuration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.sim import FunctionPolicy
from agent.task import Task
from agent.ui.engine import Engine, new_thread_id
from agent.ui.settings import Settings
from tests.agent.ui.policy import ui_policy


def make(tmp_path: Path, sim: Any) -> tuple[Engine, Settings]:
    sim.policy = FunctionPolicy(ui_policy)
    (tmp_path / "ws").mkdir(exist_ok=True)
    task = Task(
        name="engine-test",
        input="-",
        workspace=tmp_path / "ws",
        store=str(tmp_path / ".agent"),
        tools={"enabled": ["list_files", "write_file"], "files": {"allow_write": True}},
    )
    engine = Engine(task, model_url=sim.url)
    return engine, engine.defaults


async def test_a_paused_run_is_approved_by_a_restarted_server(sim: Any, tmp_path: Path) -> None:
    first, settings = make(tmp_path, sim)
    thread = new_thread_id()
    turn = await first.start(thread, settings, input="write the file", new=True)
    await turn.wait()
    run = turn.view.last_run
    assert run is not None and run.status == "awaiting_approval"
    await first.aclose()

    second, _ = make(tmp_path, sim)  # a new process: nothing in memory
    view = await second.view(thread)
    assert view.pending_calls()[0].name == "write_file", "rebuilt from the trace"
    turn = await second.start(thread, None, run_id=run.run_id, approve=True)
    await turn.wait()
    assert turn.view.last_run is not None and turn.view.last_run.status == "done"
    assert (tmp_path / "ws" / "out.txt").read_text() == "hello"
    [conversation] = await second.conversations()
    assert (conversation.thread_id, conversation.title, conversation.turns) == (
        thread,
        "write the file",
        1,
    )
    await second.aclose()


async def test_one_agent_per_configuration_and_a_busy_conversation(
    sim: Any, tmp_path: Path
) -> None:
    engine, settings = make(tmp_path, sim)
    sim.faults.stall_s, sim.faults.stall_after_tokens = 5.0, 1
    one, two = new_thread_id(), new_thread_id()
    first = await engine.start(one, settings, input="hello", new=True)
    busy = await engine.start(one, settings, input="again")
    assert busy.done and busy.notice and "running" in busy.notice
    other = await engine.start(two, settings, input="hi", new=True)
    assert first.agent_key == other.agent_key, "sessions share the agent of a configuration"
    for turn in (first, other):  # until both runs have started
        async for _ in turn.updates():
            if turn.view.last_run is not None:
                break
    assert engine.stop(one) and engine.stop(two)
    await first.wait()
    await other.wait()
    sim.faults.stall_s = None
    assert first.view.can_resume() and len(first.view.turns) == 1, "the busy send left no trace"
    await engine.aclose()


async def test_page_runs_send_the_api_key_of_a_vllm_started_with_api_key(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A page turn against a server that wants ``Authorization: Bearer KEY``: the agent's
    backend sends ``AGENT_VLLM_API_KEY``; without it the turn ends in a 401 that says so."""
    from agent.sim import SimConfig
    from agent.testing import run_sim

    with run_sim(FunctionPolicy(ui_policy), SimConfig(api_key="k-123")) as sim:
        monkeypatch.setenv("AGENT_VLLM_API_KEY", "k-123")
        engine, settings = make(tmp_path, sim)
        chat = replace(settings, mode="chat")
        turn = await engine.start(new_thread_id(), chat, input="hello", new=True)
        await turn.wait()
        assert turn.view.last_run is not None and turn.view.last_run.status == "done"
        assert "Echo: hello" in str(turn.view.messages())
        await engine.aclose()

        monkeypatch.delenv("AGENT_VLLM_API_KEY")
        engine, settings = make(tmp_path, sim)
        turn = await engine.start(new_thread_id(), chat, input="hello", new=True)
        await turn.wait()
        assert turn.view.last_run is not None and turn.view.last_run.status == "error"
        assert "401" in str(turn.view.last_run.error) and "AGENT_VLLM_API_KEY" in str(
            turn.view.last_run.error
        )
        await engine.aclose()
