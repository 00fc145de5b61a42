"""Pure parts of the simulator: token approximation, timing model, prefix cache, policies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.sim import PROFILES, FunctionPolicy, PolicyError, ScriptPolicy, SimRequest
from agent.sim.engine import BLOCK, PrefixCache, decode_step_seconds, prefill_seconds
from agent.sim.generate import apply_stop_and_length
from agent.sim.policy import count_assistant_turns
from agent.sim.tokens import count_tokens, detokenize, pieces, token_ids

H200, H100, INSTANT = PROFILES["h200"], PROFILES["h100"], PROFILES["instant"]


# -- tokens ---------------------------------------------------------------------------------
@given(st.text())
def test_pieces_round_trip(text: str) -> None:
    assert "".join(pieces(text)) == text
    assert count_tokens(text) == len(token_ids(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<|im_start|>", ["<|im_start|>"]),
        ("1234567", ["123", "456", "7"]),
        ("tokenizer", ["toke", "nize", "r"]),
        ("a  \n b", ["a", "  \n ", "b"]),
        ('{"x":', ["{", '"', "x", '"', ":"]),
    ],
)
def test_pieces_rules(text: str, expected: list[str]) -> None:
    assert pieces(text) == expected


def test_token_ids_are_stable_and_detokenize() -> None:
    assert token_ids("<|begin_of_text|>hello") == [128000, *token_ids("hello")]
    assert token_ids("hello world") == token_ids("hello world")
    assert detokenize(token_ids("some text, 42")) == "some text, 42"


# -- timing model -----------------------------------------------------------------------------
def test_prefill_cost_is_linear_in_uncached_tokens() -> None:
    assert prefill_seconds(H200, 0) == 0.0
    assert prefill_seconds(H200, 1000) == pytest.approx(0.012 + 0.030)
    assert prefill_seconds(H200, 2000) - prefill_seconds(H200, 1000) == pytest.approx(0.030)
    assert prefill_seconds(INSTANT, 10_000) == 0.0


def test_decode_step_grows_with_batch_and_context() -> None:
    alone = decode_step_seconds(H200, 0)
    assert alone == pytest.approx(15e9 / (0.72 * 4.8e12))  # ~4.3 ms: weights only
    batch_small = decode_step_seconds(H200, 8 * 2048)
    batch_big = decode_step_seconds(H200, 64 * 2048)
    assert alone < batch_small < batch_big
    assert 0.008 < batch_big < 0.011  # DESIGN.md: ~9.6 ms at 64 x 2k
    assert decode_step_seconds(H100, 0) > alone  # less bandwidth, slower steps
    assert decode_step_seconds(INSTANT, 10**6) == 0.0


# -- prefix cache ---------------------------------------------------------------------------
def test_prefix_cache_hits_shared_full_blocks_only() -> None:
    cache = PrefixCache(10_000)
    a = list(range(100))
    assert cache.lookup(a) == 0
    cache.insert(a)
    b = a[:50] + [999] * 50  # shares 3 full blocks (48 tokens)
    assert cache.lookup(b) == 48
    assert cache.lookup(a) == 96  # 6 full blocks; the last token is always recomputed
    assert cache.lookup(a[:32]) == 16  # all cached, but one token must be computed
    assert (cache.queries, cache.hits) == (100 + 100 + 100 + 32, 48 + 96 + 16)


def test_prefix_cache_evicts_least_recently_used() -> None:
    cache = PrefixCache(4 * BLOCK)  # room for four blocks
    a, b = list(range(2 * BLOCK)), list(range(1000, 1000 + 2 * BLOCK))
    cache.insert([*a, 0])
    cache.insert([*b, 0])
    assert cache.lookup([*a, 0]) == 2 * BLOCK  # touch a: b is now least recent
    cache.insert(list(range(5000, 5000 + 2 * BLOCK)))
    assert cache.lookup([*b, 0]) == 0
    assert cache.lookup([*a, 0]) == 2 * BLOCK
    assert cache.cached_tokens == 4 * BLOCK


# -- stop strings and max_tokens --------------------------------------------------------------
def test_stop_string_cuts_output_and_costs_one_token() -> None:
    out, finish, reason = apply_stop_and_length("Hello<|im_end|>junk", ["<|im_end|>"], 100)
    assert ("".join(out), finish, reason) == ("Hello", "stop", "<|im_end|>")
    assert len(out) == len(pieces("Hello")) + 1


def test_earliest_stop_string_wins() -> None:
    out, _, reason = apply_stop_and_length("a STOP b END", ["END", "STOP"], 100)
    assert ("".join(out), reason) == ("a ", "STOP")


def test_max_tokens_gives_length() -> None:
    out, finish, reason = apply_stop_and_length("one two three four", [], 3)
    assert (len(out), finish, reason) == (3, "length", None)
    assert "".join(out) == "one two"


# -- policies -------------------------------------------------------------------------------
def _prompt(k: int) -> str:
    turns = "".join(
        f"<|im_start|>user\nq{i}<|im_end|>\n<|im_start|>assistant\na{i}<|im_end|>\n"
        for i in range(k)
    )
    return f"<|begin_of_text|>{turns}<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("k", [0, 1, 3])
def test_assistant_turns_ignore_the_open_generation_prompt(k: int) -> None:
    assert count_assistant_turns(_prompt(k)) == k
    assert count_assistant_turns(_prompt(k).removesuffix("<|im_start|>assistant\n")) == k


def test_script_answers_by_turn_and_reports_exhaustion() -> None:
    policy = ScriptPolicy(["first", "second"])
    assert policy(SimRequest(prompt=_prompt(0))) == "first"
    assert policy(SimRequest(prompt=_prompt(1))) == "second"
    with pytest.raises(PolicyError, match="script has 2 entries; conversation asks for entry 3"):
        policy(SimRequest(prompt=_prompt(2)))


def test_script_file_yaml_and_json(tmp_path) -> None:
    (tmp_path / "s.yaml").write_text("- hello\n- |\n  <tool_call>\n  {}\n  </tool_call>\n")
    assert ScriptPolicy.from_file(tmp_path / "s.yaml").entries[0] == "hello"
    (tmp_path / "s.json").write_text(json.dumps(["a", "b"]))
    assert ScriptPolicy.from_file(tmp_path / "s.json").entries == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a: 1\n", "must be a list of strings"),
        ("- ok\n- {name: f}\n", "entry 2 must be a string"),
        ("- [unclosed\n", "bad.yaml:2: YAML syntax error"),
    ],
)
def test_script_file_errors_name_file_and_entry(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        ScriptPolicy.from_file(path)
    assert str(path) in str(info.value)


def test_function_policy_must_return_text() -> None:
    assert FunctionPolicy()(SimRequest(prompt="")) == ""
    with pytest.raises(PolicyError, match="returned int"):
        FunctionPolicy(lambda r: 3)(SimRequest(prompt=""))  # type: ignore[arg-type,return-value]


def test_cli_refuses_a_bad_script_naming_file_and_entry(tmp_path) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    path = tmp_path / "script.yaml"
    path.write_text("- fine\n- 42\n")
    result = CliRunner().invoke(main, ["sim", "--script", str(path), "--port", "0"])
    assert result.exit_code == 2
    assert "entry 2 must be a string" in result.output and "script.yaml" in result.output
