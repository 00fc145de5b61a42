"""LangChain's integration suite (``langchain-tests``) once more, against the real vLLM tier.

The simulator run (``tests/agent/test_langchain_standard.py``) proves the suite end to end;
this one proves the contract holds on a real server: message and chunk types, usage with
``cache_read_input`` from vLLM's own prefix cache, stop sequences, tool calls forced by
``tool_choice`` under structured outputs, structured output that validates. The model is
SmolLM2-135M on the CPU (~2 s a request): sampling is greedy and short, only the contract
tests run (``_CONTRACT``), and every other test says why it is skipped here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="the dev extra installs langchain-tests")

from agent.testing import RealVLLM
from tests.agent import test_langchain_standard as on_simulator  # not its classes: pytest

_SERVER: dict[str, str] = {}

# The contract: message and chunk types, usage (cache reads included), stop sequences, the
# shape of calls forced by tool_choice, structured output that validates, history content
# blocks. Every other test runs on the simulator only, for one of these reasons.
_CONTRACT = {
    "test_invoke",
    "test_stream",
    "test_usage_metadata_streaming",
    "test_stop_sequence",
    "test_tool_choice",
    "test_structured_output[pydantic]",
}
_CONTENT = "asserts what the model says; a 135M model is no judge of it"
_SKIPS = {
    "test_agent_loop": _CONTENT + ": whether it calls a tool unforced",
    "test_tool_calling": _CONTENT + ": the forced call's argument must be 3 (it sends -256)",
    "test_json_mode": _CONTENT + ": JSON mode enforces JSON, not the schema the prompt asks",
    "test_unicode_tool_call_integration": _CONTENT + ": the arguments must carry given text",
    "test_structured_few_shot_examples": _CONTENT + ": it expects the few-shot answer's call",
    "test_tool_message_error_status": _CONTENT + ": it needs a reply about a tool's error",
    "test_stream_time": "replays a VCR cassette of recorded HTTP (none for a local server)",
}
_REPEATS = (
    "a variant of a contract test above (async, invoke, batch, another schema flavour), or"
    " the same code path with other content: at ~2 s a request, CI's time goes to the contract"
)


@pytest.fixture(scope="module", autouse=True)
def _server(real_vllm: RealVLLM) -> Iterator[None]:
    _SERVER.update(url=real_vllm.url, model=real_vllm.model)
    yield
    _SERVER.clear()


@pytest.fixture(autouse=True)
def _skip_content_dependent(request: pytest.FixtureRequest) -> None:
    name = request.node.originalname
    if name not in _CONTRACT and request.node.name not in _CONTRACT:
        pytest.skip(_SKIPS.get(name, _REPEATS))


# would collect them here again
class TestChatHermesOnRealVLLM(on_simulator.TestChatHermesIntegration):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Greedy and short: a small model's free text would run to any limit. Under greedy
        # decoding it also loops inside a JSON string until the limit (measured: no call
        # parsed at 160 tokens); the repetition penalty lets its strings end.
        return {
            "base_url": _SERVER.get("url", "http://127.0.0.1:9"),
            "model": _SERVER.get("model"),
            "temperature": 0.0,
            "repetition_penalty": 1.3,
            "max_tokens": 160,
        }

    @property
    def supports_model_override(self) -> bool:  # the tier serves no LoRA adapter
        return False
