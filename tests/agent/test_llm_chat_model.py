"""ChatHermes against the simulated vLLM server: langchain-core, LangGraph and create_agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from pydantic import BaseModel

from agent.llm import ChatHermes
from agent.sim import SimRequest
from agent.testing import FunctionPolicy, ScriptPolicy, SimServer, run_sim

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
BAD = '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture
def sim() -> Iterator[SimServer]:
    with run_sim(FunctionPolicy()) as server:
        yield server


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"Sunny in {city}"


def lookup(query: str, limit: int = 3) -> str:
    """Search the catalogue."""
    return query


class Convert(BaseModel):
    """Convert an amount between currencies."""

    amount: float
    currency: str


RAW = {"type": "function", "function": {"name": "raw_tool", "description": "d", "parameters": {}}}


async def test_ainvoke_returns_tool_calls_and_usage(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["On it. " + CALL])
    llm = ChatHermes(base_url=sim.url, temperature=0.0).bind_tools([get_weather])
    msg = await llm.ainvoke([HumanMessage("weather in Paris?")])
    assert isinstance(msg, AIMessage)
    assert msg.content == "On it."
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert msg.usage_metadata["input_tokens"] > 0 and msg.usage_metadata["output_tokens"] > 0
    assert msg.response_metadata["finish_reason"] == "stop"
    assert sim.requests[-1]["temperature"] == 0.0


async def test_astream_yields_text_then_calls(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["Checking the forecast now. " + CALL])
    llm = ChatHermes(base_url=sim.url).bind_tools([get_weather])
    chunks = [c async for c in llm.astream("weather?")]
    assert len(chunks) > 2 and all(isinstance(c, AIMessageChunk) for c in chunks)
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert "Checking the forecast" in merged.content
    assert [c["args"] for c in merged.tool_calls] == [{"city": "Paris"}]
    assert merged.usage_metadata["output_tokens"] > 0


async def test_malformed_calls_become_invalid_tool_calls(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([BAD + CALL])
    llm = ChatHermes(base_url=sim.url).bind_tools([get_weather])
    msg = await llm.ainvoke("weather?")
    assert len(msg.tool_calls) == 1
    (bad,) = msg.invalid_tool_calls
    assert "name" in bad["error"]

    merged = None
    async for c in llm.astream("weather?"):
        merged = c if merged is None else merged + c
    assert len(merged.tool_calls) == 1 and len(merged.invalid_tool_calls) == 1
    assert "name" in merged.response_metadata["tool_call_errors"][0]["reason"]


async def test_bind_tools_accepts_every_form(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["ok"])
    llm = ChatHermes(base_url=sim.url).bind_tools([get_weather, lookup, Convert, RAW])
    await llm.ainvoke("hi")
    prompt = sim.requests[-1]["prompt"]
    for name in ("get_weather", "lookup", "Convert", "raw_tool"):
        assert f'"name": "{name}"' in prompt


def test_sync_invoke_runs_the_async_path(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["sync ok"])
    assert ChatHermes(base_url=sim.url).invoke("hi").content == "sync ok"


async def test_json_mode_through_response_format(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(['{"city": "Paris"}'])
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    msg = await ChatHermes(base_url=sim.url).bind(response_format=fmt).ainvoke("city?")
    assert json.loads(msg.content) == {"city": "Paris"}
    assert sim.requests[-1]["structured_outputs"] == {"json": schema}


async def test_chat_mode_through_langchain(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL])
    llm = ChatHermes(base_url=sim.url, mode="chat").bind_tools([get_weather])
    msg = await llm.ainvoke("weather?")
    assert msg.tool_calls[0]["args"] == {"city": "Paris"}
    assert sim.requests[-1]["tools"][0]["function"]["name"] == "get_weather"


class _State(TypedDict):
    messages: Annotated[list, add_messages]


async def test_inside_a_state_graph(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["graph answer"])
    llm = ChatHermes(base_url=sim.url)

    async def model(state: _State) -> dict:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    graph = StateGraph(_State)
    graph.add_node("model", model)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    out = await graph.compile().ainvoke({"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "graph answer"


async def test_inside_create_agent(sim: SimServer) -> None:
    from langchain.agents import create_agent

    def answer(request: SimRequest) -> str:
        # Turn 1: call the tool. Turn 2: answer from the tool's result in the prompt.
        if "<tool_response>" not in request.prompt:
            return CALL
        return "It is sunny in Paris." if "Sunny in Paris" in request.prompt else "no result"

    sim.policy = FunctionPolicy(answer)
    agent = create_agent(ChatHermes(base_url=sim.url), tools=[get_weather])
    out = await agent.ainvoke({"messages": [HumanMessage("weather in Paris?")]})
    messages = out["messages"]
    assert isinstance(messages[1], AIMessage) and messages[1].tool_calls
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "Sunny in Paris"
    assert messages[-1].content == "It is sunny in Paris."
    assert len(sim.requests) == 2
    # The second prompt extends the first byte for byte (prefix cache stays hot).
    first, second = (r["prompt"] for r in sim.requests)
    assert second.startswith(first)


def test_sampling_fields_agree_everywhere() -> None:
    """Task files, ChatHermes and the backend take the sampling knobs of one declaration."""
    from agent.config import Sampling
    from agent.llm.base import GenerationRequest
    from agent.llm.chat_model import ChatHermes
    from agent.task import ModelConfig

    names = set(Sampling.model_fields)
    assert ModelConfig.model_fields["sampling"].annotation is Sampling
    assert GenerationRequest.__dataclass_fields__["sampling"].type in ("Sampling", Sampling)
    assert names <= set(ChatHermes.model_fields)
    for name in names:  # same defaults and constraints, not a copy that can drift
        assert ChatHermes.model_fields[name].default == Sampling.model_fields[name].default
        assert ChatHermes.model_fields[name].metadata == Sampling.model_fields[name].metadata
