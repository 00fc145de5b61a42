"""The incremental Hermes output parser: real-world outputs, chunking, round trips, BFCL."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.chatml import render_call
from agent.hermes import (
    ScratchPadDelta,
    StreamParser,
    TextDelta,
    ToolCallMalformed,
    ToolCallParsed,
    ToolCallStarted,
    parse,
    parse_events,
)
from agent.types import ToolCall


def calls(text: str) -> list[tuple[str, dict]]:
    return [(c.name, c.arguments) for c in parse(text).tool_calls]


def normalise(events: list) -> list:
    """Merge adjacent deltas of one kind; blank out fresh call ids."""
    out: list = []
    for e in events:
        if isinstance(e, TextDelta | ScratchPadDelta) and out and type(out[-1]) is type(e):
            out[-1] = type(e)(out[-1].text + e.text)
        elif isinstance(e, ToolCallParsed):
            out.append(replace(e, call=replace(e.call, id="")))
        else:
            out.append(e)
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', [("f", {"a": 1})]),
        ('<tool_call>\n{"arguments": {"a": 1}, "name": "f"}\n</tool_call>', [("f", {"a": 1})]),
        (
            "<tool_call>\n{'arguments': {'q': None, 'ok': True, 't': (1, 2)}, 'name': 'f'}\n"
            "</tool_call>",
            [("f", {"q": None, "ok": True, "t": [1, 2]})],
        ),
        (
            '<tool_call>{"name": "f", "arguments": "{\\"a\\": [1, 2]}"}</tool_call>',
            [("f", {"a": [1, 2]})],
        ),
        ('<tool_call>{"name": "f", "arguments": "{\'a\': 1}"}</tool_call>', [("f", {"a": 1})]),
        ('<tool_call>\n{"name": "f", "arguments": {"x": 1}}', [("f", {"x": 1})]),
        (
            '<tool_call>{"name": "w", "arguments": {"s": "a</tool_call>b<tool_call>{}}"}}'
            "</tool_call>",
            [("w", {"s": "a</tool_call>b<tool_call>{}}"})],
        ),
        (
            '<tool_call>{"name": "w", "arguments": {"s": "x\\"}</tool_call>"}}</tool_call>',
            [("w", {"s": 'x"}</tool_call>'})],
        ),
        ('<tool_call>{"name": "f"}</tool_call>', [("f", {})]),
        ('<tool_call>{"name": "f", "arguments": {}}}</tool_call>', [("f", {})]),
        (
            '<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {}}',
            [("a", {}), ("b", {})],
        ),
    ],
)
def test_real_world_outputs(text, expected):
    assert calls(text) == expected
    assert parse(text).errors == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"arguments": {"a": 1}}', 'no "name"'),
        ('{"name": 7, "arguments": {}}', '"name" must be a non-empty string'),
        ('{"name": "f", "arguments": [1, 2]}', "\"arguments\" of 'f' must be an object"),
        ('{"name": "f", "arguments": "[1]"}', "must be an object"),
        ('{"name": "f", "arguments": "{oops"}', "is a string that is not a JSON object"),
        ("", "block is empty"),
        ("   \n ", "block is empty"),
        ('{"name": "f", "arguments": {"a": 1}', "not valid JSON"),
        ("{'name': 'f', 'arguments': {'q': 'it's'}}", "double quotes"),
        ('[{"name": "f", "arguments": {}}]', "one call per <tool_call> block"),
        ('{"name": "f", "arguments": {}} and more', "unexpected text after the JSON object"),
        ("{'name': 'f', 'arguments': {1, 2}}", "not valid JSON"),
        ("{'name': __import__('os').system('true')}", "not valid JSON"),
    ],
)
def test_malformed_calls_say_what_is_wrong_and_show_the_form(body, needle):
    out = parse(f"<tool_call>{body}</tool_call>")
    assert out.tool_calls == []
    [error] = out.errors
    assert needle in error.reason
    assert '{"arguments": <args-dict>, "name": <function-name>}' in error.reason
    assert error.raw == f"<tool_call>{body}</tool_call>"


def test_one_malformed_call_never_drops_the_others():
    text = (
        'Let me look.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"arguments": {"x": 1}}\n</tool_call>\n'
        "<tool_call>\n{'name': 'c', 'arguments': {'q': 'it's'}}\n</tool_call>\n"
        '<tool_call>\n{"name": "d", "arguments": {"k": "v"}}\n</tool_call>\nDone.'
    )
    out = parse(text)
    assert [c.name for c in out.tool_calls] == ["a", "d"]
    assert len(out.errors) == 2
    assert out.content == "Let me look.\n\n\n\n\nDone."
    kinds = [(e.kind, getattr(e, "index", None)) for e in parse_events(text)]
    assert [k for k in kinds if k[0] in ("call", "malformed")] == [
        ("call", 0),
        ("malformed", 1),
        ("malformed", 2),
        ("call", 3),
    ]


def test_text_scratch_pad_and_started_events_in_order():
    text = (
        "<scratch_pad>Need weather: call get_weather, see <tool_call> docs.</scratch_pad>\n"
        'On it.<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        " Bye"
    )
    events = normalise(parse_events(text))
    assert events[0] == ScratchPadDelta("Need weather: call get_weather, see <tool_call> docs.")
    assert events[1] == TextDelta("\nOn it.")
    assert events[2] == ToolCallStarted(0, "get_weather")
    assert isinstance(events[3], ToolCallParsed) and events[3].call.arguments == {"city": "Oslo"}
    assert events[4] == TextDelta(" Bye")
    out = parse(text)
    assert out.content == "On it. Bye"
    assert out.scratch_pad == "Need weather: call get_weather, see <tool_call> docs."


def test_started_is_emitted_before_the_block_ends():
    p = StreamParser()
    events = p.feed('<tool_call>\n{"name": "search", "arguments": {"q": "lo')
    assert events == [ToolCallStarted(0, "search")]
    assert [e.kind for e in p.feed('ng"}}\n</tool_call>')] == ["call"]


def test_unclosed_scratch_pad_that_holds_a_call():
    out = parse('<scratch_pad>plan<tool_call>{"name": "f", "arguments": {}}</tool_call>ok')
    assert (out.scratch_pad, out.content, calls_of(out)) == ("plan", "ok", ["f"])


def calls_of(out) -> list[str]:
    return [c.name for c in out.tool_calls]


def test_buffer_holds_back_only_a_possible_partial_tag():
    """Linear cost: nothing already judged is kept for re-scanning."""
    p = StreamParser()
    text = (
        "Some words < and more " * 50
        + '<tool_call>{"name": "f", "arguments": {"s": "'
        + "long string " * 200
        + '"}}</tool_call>'
    ) * 3
    for i in range(0, len(text), 3):
        p.feed(text[i : i + 3])
        assert len(p._buf) < 16
    p.close()
    assert calls_of(p.result) == ["f", "f", "f"]


def test_huge_or_deep_python_literal_is_refused_safely():
    deep = "{'name': 'f', 'arguments': " + "[" * 5000 + "]" * 5000 + "}"
    assert "not valid JSON" in parse(f"<tool_call>{deep}</tool_call>").errors[0].reason
    big = "{'name': 'f', 'arguments': {'s': '" + "x" * 200_000 + "'}}"
    assert parse(f"<tool_call>{big}</tool_call>").errors


def test_feed_after_close_is_an_error():
    p = StreamParser()
    p.close()
    with pytest.raises(RuntimeError, match="make a new parser"):
        p.feed("x")


# -- any chunking gives the same events ---------------------------------------------------------

PIECES = [
    "Hello ",
    "\n",
    "<",
    ">",
    "<tool_call>",
    "</tool_call>",
    "<scratch_pad>",
    "</scratch_pad>",
    "<tool_",
    "call>",
    '{"name": "f", "arguments": {"a": 1}}',
    "{'name': 'g', 'arguments': {}}",
    '"',
    "'",
    "\\",
    "{",
    "}",
    '"</tool_call>"',
    '{"name": "h", "arguments": {"s": "<tool_call>}"}}',
    '{"arguments": {}}',
    "x",
]
outputs = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


@settings(max_examples=300, deadline=None)
@given(outputs, st.lists(st.integers(1, 12), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_events(text, sizes):
    whole = normalise(parse_events(text))
    p, events, pos, k = StreamParser(), [], 0, 0
    while pos < len(text):
        n = sizes[k % len(sizes)]
        events += p.feed(text[pos : pos + n])
        pos, k = pos + n, k + 1
    events += p.close()
    assert normalise(events) == whole
    # Nothing is lost: text, pad and judged blocks cover the whole output.
    covered = "".join(
        e.text
        if isinstance(e, TextDelta | ScratchPadDelta)
        else e.raw
        if isinstance(e, ToolCallParsed | ToolCallMalformed)
        else ""
        for e in events
    )
    assert len(covered) <= len(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
tag_text = st.lists(
    st.sampled_from(["<tool_call>", "</tool_call>", "{", "}", '"', "'", "\\", "a", " ", "\n"]),
    max_size=10,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(
    st.text(min_size=1, max_size=20) | tag_text,
    st.dictionaries(st.text(max_size=8) | tag_text, json_values | tag_text, max_size=4),
    st.integers(1, 7),
)
def test_rendered_calls_parse_back(name, arguments, chunk):
    text = (
        "Sure.\n"
        + render_call(ToolCall(name, arguments))
        + "\n"
        + render_call(ToolCall("second", {"n": 1}))
    )
    p, events = StreamParser(), []
    for i in range(0, len(text), chunk):
        events += p.feed(text[i : i + chunk])
    events += p.close()
    if name.strip():
        assert [(c.name, c.arguments) for c in p.result.tool_calls] == [
            (name.strip(), arguments),
            ("second", {"n": 1}),
        ]
    else:
        assert [c.name for c in p.result.tool_calls] == ["second"]


# -- BFCL ground truth --------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["parallel", "parallel_multiple", "multiple"])
def test_bfcl_ground_truth_round_trips(bfcl_dir, suite):
    path = bfcl_dir / "possible_answer" / f"BFCL_v4_{suite}.json"
    if not path.exists():
        pytest.skip(f"{path.name} is not present")
    n = 0
    for line in path.read_text().splitlines():
        truth = [
            (name, {k: v[0] for k, v in args.items()})
            for entry in json.loads(line)["ground_truth"]
            for name, args in entry.items()
        ]
        text = "\n".join(render_call(ToolCall(nm, a)) for nm, a in truth)
        assert calls(text) == truth
        # Also in the Python-dict style some models emit.
        py = "\n".join(
            f"<tool_call>\n{{'name': {nm!r}, 'arguments': {a!r}}}\n</tool_call>" for nm, a in truth
        )
        assert calls(py) == truth
        n += 1
    assert n > 50


def test_raw_control_characters_in_strings_are_read_and_re_rendered_escaped() -> None:
    # xgrammar's grammars let raw control characters into JSON strings: a call that is
    # valid by construction must not be reported malformed.
    from agent.chatml import render_call

    out = parse('<tool_call>\n{"name": "f", "arguments": {"q": "a\x1db\tc\nd"}}\n</tool_call>')
    assert out.errors == [] and out.tool_calls[0].arguments == {"q": "a\x1db\tc\nd"}
    rendered = render_call(out.tool_calls[0])
    assert "\\u001d" in rendered and "\\t" in rendered and "\x1d" not in rendered


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_numbers_past_json_stay_malformed(value: str) -> None:
    out = parse(f'<tool_call>\n{{"name": "f", "arguments": {{"x": {value}}}}}\n</tool_call>')
    assert out.tool_calls == [] and len(out.errors) == 1
