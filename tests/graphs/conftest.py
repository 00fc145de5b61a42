"""Helpers for agent-loop tests: an Agent pointed at the simulator, with a tmp store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.api import Agent
from agent.config import Limits
from agent.sim import ScriptPolicy
from tools.policy import FilesPolicy, ToolPolicies


@pytest.fixture
async def make_agent(sim: Any, tmp_path: Path) -> AsyncIterator[Callable[..., Agent]]:
    """``make_agent(script, tools=[...], **agent_kwargs)``: a fresh agent on ``sim``."""
    agents: list[Agent] = []
    workspace = tmp_path / "ws"  # the tools' folder; the run store stays outside it
    workspace.mkdir()

    def make(script: list[str] | None = None, tools: tuple[Any, ...] = (), **kw: Any) -> Agent:
        if script is not None:
            sim.policy = ScriptPolicy(script)
        kw.setdefault("store", tmp_path / ".agent")
        kw.setdefault(
            "policies", ToolPolicies(workspace=workspace, files=FilesPolicy(allow_write=True))
        )
        if isinstance(kw.get("limits"), dict):
            kw["limits"] = Limits(**kw["limits"])
        agent = Agent(sim.url, tools=tools, **kw)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.aclose()
