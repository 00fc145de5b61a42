"""The simulated vLLM server over real loopback HTTP: endpoints, streaming, usage, errors."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import httpx
import pytest

from agent.sim import ScriptPolicy, SimConfig, SimServer
from agent.sim.tokens import pieces
from agent.testing import arun_sim, run_sim

START = "<|begin_of_text|>"
GEN = "<|im_start|>assistant\n"


def convo(*turns: str, k_done: int = 0, tag: str = "") -> str:
    """A ChatML prompt with ``k_done`` completed assistant turns and an open one."""
    body = "".join(
        f"<|im_start|>user\n{tag}q{i}<|im_end|>\n{GEN}{t}<|im_end|>\n"
        for i, t in enumerate(turns[:k_done])
    )
    return f"{START}{body}<|im_start|>user\n{tag}next<|im_end|>\n{GEN}"


def complete(sim: SimServer, prompt: str, **extra: Any) -> httpx.Response:
    body = {
        "model": sim.config.model,
        "prompt": prompt,
        "add_special_tokens": False,
        "stop": ["<|im_end|>"],
        "skip_special_tokens": False,
        "max_tokens": 200,
        **extra,
    }
    return httpx.post(f"{sim.url}/v1/completions", json=body, timeout=10)


def sse_events(resp: httpx.Response) -> list[Any]:
    """Decode ``data:`` events; the ``[DONE]`` sentinel comes back as the string."""
    events = []
    for block in resp.text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_models_version(sim: SimServer) -> None:
    assert httpx.get(f"{sim.url}/health").status_code == 200
    models = httpx.get(f"{sim.url}/v1/models").json()
    assert models["data"][0]["id"] == "NousResearch/Hermes-3-Llama-3.1-8B"
    assert models["data"][0]["max_model_len"] == 131072
    assert "version" in httpx.get(f"{sim.url}/version").json()


def test_completion_non_streamed_with_usage(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["Hello there<|im_end|>ignored"])
    resp = complete(sim, convo())
    assert resp.status_code == 200
    data = resp.json()
    choice = data["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("Hello there", "stop")
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    usage = data["usage"]
    assert usage["prompt_tokens"] == len(
        httpx.post(
            f"{sim.url}/tokenize", json={"prompt": convo(), "add_special_tokens": False}
        ).json()["tokens"]
    )
    assert usage["completion_tokens"] == len(pieces("Hello there")) + 1  # + the stop token
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert sim.requests[-1]["stop"] == ["<|im_end|>"]


def test_completion_streamed_ends_with_usage_and_done(sim: SimServer) -> None:
    text = "The answer is 42, as computed by a very long and careful deliberation."
    sim.policy = ScriptPolicy([text])
    resp = complete(sim, convo(), stream=True, stream_options={"include_usage": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    usage_chunk, chunks = events[-2], events[:-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 1
    assert len(chunks) > 1  # tokens arrive over several steps
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["hi"])
    events = sse_events(complete(sim, convo(), stream=True))
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])


def test_max_tokens_gives_length(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["one two three four five six"])
    data = complete(sim, convo(), max_tokens=3).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["choices"][0]["text"] == "one two"
    assert data["usage"]["completion_tokens"] == 3


def test_context_overflow_is_a_vllm_400() -> None:
    with run_sim(ScriptPolicy(["x"]), SimConfig(max_model_len=64)) as sim:
        resp = complete(sim, "word " * 100, max_tokens=None)
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert err["type"] == "BadRequestError" and err["code"] == 400
        assert err["param"] == "input_tokens"
        # vLLM 0.32's wording (its tokenizer stops one token past the limit).
        assert re.match(
            r"This model's maximum context length is 64 tokens\. However, your "
            r"prompt contains at least 65 input tokens",
            err["message"],
        )
        # max_tokens above the whole context is refused...
        resp = complete(sim, "hi", max_tokens=65)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_tokens"
        assert resp.json()["error"]["message"].startswith(
            "max_tokens=65 cannot be greater than max_model_len=64"
        )
        # ...but one that only fails to fit beside the prompt is lowered, as vLLM 0.32 does.
        sim.policy = ScriptPolicy(["word " * 100])
        resp = complete(sim, "hi", max_tokens=64)
        assert resp.status_code == 200
        data = resp.json()
        assert data["choices"][0]["finish_reason"] == "length"
        assert data["usage"]["total_tokens"] == 64


def test_bad_max_tokens_is_a_400(sim: SimServer) -> None:
    resp = complete(sim, convo(), max_tokens=0)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_tokens"


def test_wrong_model_and_bad_json(sim: SimServer) -> None:
    resp = httpx.post(f"{sim.url}/v1/completions", json={"model": "gpt-4", "prompt": "x"})
    assert resp.status_code == 404
    assert resp.json()["error"]["message"].startswith("The model `gpt-4` does not exist.")
    resp = httpx.post(f"{sim.url}/v1/completions", content=b"{not json")
    error = resp.json()["error"]
    assert resp.status_code == 400 and "JSON decode error" in error["message"]
    assert error["type"] == "Bad Request"  # vLLM's type for a body that fails validation


def test_script_replays_by_turn_for_interleaved_conversations(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["turn one", "turn two", "turn three"])
    a0 = complete(sim, convo(tag="A")).json()["choices"][0]["text"]
    b0 = complete(sim, convo(tag="B")).json()["choices"][0]["text"]
    a1 = complete(sim, convo(a0, k_done=1, tag="A")).json()["choices"][0]["text"]
    b1 = complete(sim, convo(b0, k_done=1, tag="B")).json()["choices"][0]["text"]
    a2 = complete(sim, convo(a0, a1, k_done=2, tag="A")).json()["choices"][0]["text"]
    assert (a0, b0, a1, b1, a2) == ("turn one", "turn one", "turn two", "turn two", "turn three")


def test_script_exhausted_is_a_clear_error(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["only"])
    resp = complete(sim, convo("only", k_done=1))
    assert resp.status_code == 400
    assert "simulated script has 1 entries; conversation asks for entry 2" in resp.text


def test_policy_exception_is_a_500(sim: SimServer) -> None:
    def boom(request: Any) -> str:
        raise RuntimeError("kaput")

    sim.policy = boom
    resp = complete(sim, convo())
    assert resp.status_code == 500
    assert resp.json()["error"]["message"] == "simulated policy raised RuntimeError: kaput"


def test_tokenize_and_detokenize(sim: SimServer) -> None:
    data = httpx.post(f"{sim.url}/tokenize", json={"prompt": "<|im_start|>user\nhi"}).json()
    assert data["count"] == len(data["tokens"]) == 5  # BOS added by default
    assert data["tokens"][:2] == [128000, 128002]
    assert data["max_model_len"] == 131072
    text = httpx.post(f"{sim.url}/detokenize", json={"tokens": data["tokens"][1:]}).json()
    assert text["prompt"] == "<|im_start|>user\nhi"


def test_structured_outputs_recorded_and_refusable() -> None:
    config = SimConfig(refuse_structured=frozenset({"regex"}))
    with run_sim(ScriptPolicy(["{}"]), config) as sim:
        ok = complete(
            sim,
            convo(),
            structured_outputs={"json": {"type": "object"}},
            guided_json={"type": "object"},
        )
        assert ok.status_code == 200  # removed guided_* fields are ignored, like vLLM
        assert sim.requests[-1]["guided_json"] == {"type": "object"}  # but visible to tests
        refused = complete(sim, convo(), structured_outputs={"regex": "a+"})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "structured_outputs"


def test_prefix_cache_hits_show_in_usage_and_metrics(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["answer"] * 3)
    shared = START + "<|im_start|>system\n" + "You are helpful. " * 40 + "<|im_end|>\n"
    first = complete(sim, shared + "<|im_start|>user\nA<|im_end|>\n" + GEN).json()
    second = complete(sim, shared + "<|im_start|>user\nB<|im_end|>\n" + GEN).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0 and cached % 16 == 0
    assert cached < second["usage"]["prompt_tokens"]
    metrics = httpx.get(f"{sim.url}/metrics").text
    hits = re.search(
        r'^vllm:prefix_cache_hits_total\{engine="0",model_name="[^"]+"\} (\S+)$', metrics, re.M
    )
    queries = re.search(r"^vllm:prefix_cache_queries_total\{.*\} (\S+)$", metrics, re.M)
    assert hits and float(hits.group(1)) == cached
    assert queries and float(queries.group(1)) == (
        first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    )
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_count",
    ):
        assert name in metrics
    assert sim.stats()["prefix_cache_hits"] == cached


def test_tiny_cache_evicts_old_prefixes() -> None:
    with run_sim(ScriptPolicy(["ok"] * 9), SimConfig(cache_tokens=64)) as sim:  # 4 blocks
        # 36 tokens each (2 full blocks): four-letter words are one token, spaces another.
        a, b, c = (START + f"{w} " * 15 + GEN for w in ("able", "bake", "cake"))

        def cached(prompt: str) -> int:
            return complete(sim, prompt).json()["usage"]["prompt_tokens_details"]["cached_tokens"]

        assert [cached(a), cached(a)] == [0, 32]  # two full blocks each
        cached(b)
        assert cached(a) == 32  # a and b fit together; a is now the most recent
        cached(c)  # c's blocks push out b, the least recently used
        assert cached(b) == 0
        cached(c)
        assert cached(a) == 0  # b and c came back after a: a was evicted


def test_concurrent_streams_interleave(sim: SimServer) -> None:
    sim.policy = ScriptPolicy(["word " * 50])
    results: list[str] = []

    def one() -> None:
        events = sse_events(complete(sim, convo(), stream=True))
        results.append("".join(e["choices"][0]["text"] for e in events[:-1]))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["word " * 50] * 4


def test_h200_profile_advances_the_virtual_clock() -> None:
    # speed 50: ~60 modeled steps of ~4.5 ms each take a few ms of real time.
    config = SimConfig(profile="h200", speed=50.0)
    with run_sim(ScriptPolicy(["tok " * 30]), config) as sim:
        events = sse_events(complete(sim, convo(), stream=True))
        stats = sim.stats()
    n_tokens = 61  # 60 pieces + the stop token
    assert len(events) - 1 == n_tokens  # one chunk per engine step, as vLLM streams
    assert stats["steps"] >= n_tokens
    assert stats["busy_s"] > n_tokens * 0.004  # each decode step reads 15 GB of weights
    assert stats["ideal_wall_s"] == pytest.approx(stats["busy_s"] / 50)


async def test_arun_sim_works_inside_an_event_loop() -> None:
    async with arun_sim(ScriptPolicy(["async hi"])) as sim, httpx.AsyncClient() as client:
        resp = await client.post(f"{sim.url}/v1/completions", json={"prompt": convo()})
        assert resp.json()["choices"][0]["text"] == "async hi"


def test_sim_factory_starts_independent_servers(sim_factory) -> None:
    one, two = sim_factory(ScriptPolicy(["one"])), sim_factory(ScriptPolicy(["two"]))
    assert one.url != two.url
    assert complete(two, convo()).json()["choices"][0]["text"] == "two"
    assert one.requests == [] and len(two.requests) == 1
