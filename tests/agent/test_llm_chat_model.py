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


# -- defects found beside LangChain's standard suite --------------------------------------


def test_stop_sequences_are_sent_and_honoured(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["Thank you for asking, have a nice day."])
    msg = ChatHermes(base_url=sim.url).invoke("hi", stop=["you"])
    assert msg.content.strip() == "Thank"
    assert msg.response_metadata["stop_reason"] == "you"
    assert sim.requests[-1]["stop"] == ["<|im_end|>", "you"]
    ChatHermes(base_url=sim.url, stop=["nice"]).invoke("hi")
    assert sim.requests[-1]["stop"] == ["<|im_end|>", "nice"], "a constructor stop too"


def test_standard_constructor_arguments_are_kept() -> None:
    llm = ChatHermes(timeout=5, stop=["END"], streaming=True, max_retries=1, model="m")
    assert (llm.timeout, llm.stop, llm.streaming, llm.max_retries) == (5, ["END"], True, 1)
    params = llm._get_ls_params()
    assert (params["ls_model_name"], params["ls_stop"]) == ("m", ["END"])
    assert ChatHermes()._get_ls_params()["ls_model_name"], "a name before the server is asked"


async def test_timeout_reaches_the_backend(sim: SimServer) -> None:
    llm = ChatHermes(base_url=sim.url, timeout=5, max_retries=1)
    assert llm._backend().config.timeout_s == 5 and llm._backend().config.max_retries == 1
    await llm.aclose()


def test_a_per_call_model_is_asked_for(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["ok"])
    ChatHermes(base_url=sim.url, model="NousResearch/Hermes-3-Llama-3.1-8B").invoke("hi")
    assert sim.requests[-1]["model"] == "NousResearch/Hermes-3-Llama-3.1-8B"
    with pytest.raises(Exception, match=r"does not exist|not found|404"):
        ChatHermes(base_url=sim.url).invoke("hi", model="no-such-adapter")
    assert sim.requests[-1]["model"] == "no-such-adapter"


def test_sync_stream_yields_chunks_as_they_come() -> None:
    from agent.testing import SimConfig

    # A timed profile streams token by token (the instant one sends the text at once).
    with run_sim(ScriptPolicy(["one two three four five"]), SimConfig("h200", speed=20)) as sim:
        chunks = list(ChatHermes(base_url=sim.url).stream("count"))
    assert len(chunks) > 5 and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == "one two three four five"
    assert chunks[-1].usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("choice", ["any", "required", "get_weather", True])
def test_bound_tool_choice_is_enforced_by_the_server(sim: SimServer, choice: object) -> None:
    sim.policy = ScriptPolicy([CALL])
    msg = ChatHermes(base_url=sim.url).bind_tools([get_weather], tool_choice=choice).invoke("?")
    tag = json.loads(sim.requests[-1]["structured_outputs"]["structural_tag"])
    assert tag["format"]["at_least_one"] is True
    # A named tool is one call: the grammar ends after it ("required" allows several).
    assert tag["format"]["stop_after_first"] is (choice == "get_weather")
    assert msg.tool_calls[0]["name"] == "get_weather"


def test_structured_output_methods_are_not_discarded(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(['{"amount": 2.5, "currency": "EUR"}'] * 2)
    llm = ChatHermes(base_url=sim.url)
    out = llm.with_structured_output(Convert, method="json_schema").invoke("2.5 euros")
    assert out == Convert(amount=2.5, currency="EUR")
    assert sim.requests[-1]["structured_outputs"]["json"]["properties"]["currency"]
    out = llm.with_structured_output(Convert, method="json_mode").invoke("2.5 euros")
    assert out == Convert(amount=2.5, currency="EUR")
    assert sim.requests[-1]["structured_outputs"] == {"json_object": True}
    assert "currency" in sim.requests[-1]["prompt"], "the schema is in Hermes' JSON prompt"
    with pytest.raises(ValueError, match="method='xml'"):
        llm.with_structured_output(Convert, method="xml")  # type: ignore[arg-type]


def test_v1_output_fed_back_as_history_renders(sim: SimServer) -> None:
    sim.policy = ScriptPolicy([CALL, "Sunny."])
    llm = ChatHermes(base_url=sim.url, output_version="v1").bind_tools([get_weather])
    first = llm.invoke([HumanMessage("weather?")])
    assert isinstance(first.content, list), "v1 output: content blocks"
    result = ToolMessage("Sunny in Paris", tool_call_id=first.tool_calls[0]["id"])
    second = llm.invoke([HumanMessage("weather?"), first, result])
    assert second.text == "Sunny."
    before, after = (r["prompt"].count("<tool_call>\n{") for r in sim.requests[-2:])
    assert after == before + 1, "the call, rendered once from tool_calls"


def test_non_text_blocks_are_refused_by_type(sim: SimServer) -> None:
    image = {"type": "image", "url": "https://example.com/cat.png"}
    with pytest.raises(ValueError, match="'image' content block cannot be sent"):
        ChatHermes(base_url=sim.url).invoke([HumanMessage([{"type": "text", "text": "?"}, image])])
