"""JSON mode from the first call when a run has an output schema and no tools."""

from __future__ import annotations

from typing import Any

from tests.fakes import add

SCHEMA = {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}


async def test_without_tools_the_first_call_is_in_json_mode(make_agent: Any, sim: Any) -> None:
    agent = make_agent(['{"city": "Oslo"}'], output_schema=SCHEMA)
    result = await agent.run("Which city?")
    assert result.status == "done" and result.answer == {"city": "Oslo"}
    first = sim.requests[0]
    assert first["structured_outputs"] == {"json": SCHEMA}
    assert "<schema>" in first["prompt"].split("<|im_start|>user")[0], "in the system turn"


async def test_with_tools_the_schema_waits_for_the_answer(make_agent: Any, sim: Any) -> None:
    agent = make_agent(['{"city": "Oslo"}'], tools=(add,), output_schema=SCHEMA)
    await agent.run("Which city?")
    assert "structured_outputs" not in sim.requests[0], "calls come first; JSON at the end"
