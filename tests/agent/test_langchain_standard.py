"""LangChain's own standard test suites (``langchain-tests``) against ``ChatHermes``.

The integration suites run against the simulated vLLM server with a generic policy
(:mod:`tests.agent.generic_policy`): the prompt and the request's constraints decide the
answer, never the test's name. Capability flags are claimed only where the feature is
real and enforced by the server; each flag left ``False`` says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="the dev extra installs langchain-tests")

from langchain_core.messages import AIMessage, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from agent.llm.chat_model import ChatHermes
from agent.sim import FunctionPolicy, SimConfig
from agent.testing import run_sim
from tests.agent.generic_policy import answer

SERVED = "NousResearch/Hermes-3-Llama-3.1-8B"
ADAPTER = "hermes-sql-lora"  # a LoRA adapter served under its own name
_SIM: dict[str, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _simulator() -> Iterator[None]:
    config = SimConfig(model=SERVED, lora_modules=(ADAPTER,))
    with run_sim(FunctionPolicy(answer), config) as sim:
        _SIM["url"] = sim.url
        yield
    _SIM.clear()


class _Flags:
    """What ChatHermes claims, shared by the unit and integration suites."""

    @property
    def chat_model_class(self) -> type[ChatHermes]:
        return ChatHermes

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": _SIM.get("url", "http://127.0.0.1:9"), "model": SERVED}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:  # "any"/"required" and a name: structured outputs
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:  # tool_use / thinking blocks in history
        return True

    @property
    def supports_model_override(self) -> bool:  # vLLM serves LoRA adapters by name
        return True

    @property
    def model_override_value(self) -> str:
        return ADAPTER

    # Left False: Hermes 3 reads text only, so images, PDFs, audio and video (and tool
    # messages carrying them) are refused with an error naming the block type.
    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False


class TestChatHermesUnit(_Flags, ChatModelUnitTests):
    # test_serdes skips: ChatHermes is not LangChain-serialisable, because
    # langchain_core.load revives only classes in its own mapping (see chat_model.py).
    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return {"AGENT_VLLM_API_KEY": "secret"}, {}, {"api_key": "secret"}


class TestChatHermesIntegration(_Flags, ChatModelIntegrationTests):
    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        """The same long prompt twice: the second reads its prefix from vLLM's cache."""
        llm = ChatHermes(**self.chat_model_params)
        prompt = [HumanMessage("Read this twice. " + "The cache keeps prefixes. " * 60)]
        llm.invoke(prompt)
        if not stream:
            return llm.invoke(prompt)
        full = None
        for chunk in llm.stream(prompt):
            full = chunk if full is None else full + chunk
        assert isinstance(full, AIMessage)
        return full


class TestChatHermesJsonSchema(TestChatHermesIntegration):
    """The whole integration suite again with ``with_structured_output(method=
    "json_schema")``: structured outputs constrain the answer to the schema."""

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}
