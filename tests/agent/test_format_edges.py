"""Edge cases of the format core found in review: numbers JSON does not have, and lone
surrogates, must neither crash the parser nor make a prompt that cannot be sent."""

from __future__ import annotations

import json

import pytest

from agent import chatml, jsonmode
from agent.errors import ModelOutputError
from agent.hermes import parse


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ('{"a": ' + "1" * 5000 + "}", "limit"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": 1e999}', "out of range"),
        ('{"a": -Infinity}', "Infinity is not valid JSON"),
    ],
)
def test_numbers_json_lacks_are_malformed_not_crashes(arguments: str, why: str) -> None:
    out = parse(f'<tool_call>{{"name": "f", "arguments": {arguments}}}</tool_call>')
    assert out.tool_calls == [] and len(out.errors) == 1
    assert why in out.errors[0].reason


def test_a_lone_surrogate_in_arguments_renders_as_sendable_json() -> None:
    raw = '<tool_call>{"name": "f", "arguments": {"q": "\\ud83d"}}</tool_call>'
    (call,) = parse(raw).tool_calls
    text = chatml.render_call(call)
    text.encode("utf-8")  # sendable
    assert json.loads(text.split("\n")[1])["arguments"] == {"q": "\ud83d"}


def test_lone_surrogates_in_plain_text_do_not_break_the_prompt() -> None:
    prompt = chatml.render([{"role": "user", "content": "half an emoji: \ud83d"}])
    assert "half an emoji: \ufffd" in prompt
    prompt.encode("utf-8")


@pytest.mark.parametrize("result", ['{"x": NaN}', '{"y": 1e400}'])
def test_tool_results_with_non_json_numbers_are_embedded_as_text(result: str) -> None:
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "1", "name": "f", "content": result},
    ]
    body = chatml.render(messages).split("<tool_response>\n")[1].split("\n</tool_response>")[0]
    assert json.loads(body) == {"name": "f", "content": result}


@pytest.mark.parametrize("answer", ['{"a": NaN}', '{"a": 1e999}'])
def test_json_mode_answers_must_be_real_json(answer: str) -> None:
    with pytest.raises(ModelOutputError, match="not valid JSON"):
        jsonmode.extract_json(answer)


@pytest.mark.parametrize("junk", ["Let's go", 'say "hi', "plain words"])
def test_junk_after_a_calls_json_never_hides_the_next_call(junk: str) -> None:
    text = (
        f'<tool_call>{{"name": "f", "arguments": {{}}}} {junk}</tool_call>\n'
        '<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    )
    out = parse(text)
    assert [c.name for c in out.tool_calls] == ["g"]
    assert len(out.errors) == 1 and "after the JSON object" in out.errors[0].reason
    assert "<tool_call>" not in out.content
