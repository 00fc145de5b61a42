"""A property of the whole CLI: whatever the task file, options and script, ``agent run``
exits 0, 1, 2 or 3 — never with a traceback.

Hypothesis mutates a valid task file (keys set to odd values, removed, misspelt; the text
cut, the bytes not UTF-8), draws options (vars, URLs, trace paths, stores, resume ids,
approval) and writes a script of model outputs (answers, calls, malformed calls, junk).
Each example runs in process through click's runner against the real simulator.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.cli import main

BASE: dict[str, Any] = {
    "name": "fuzz",
    "input": "Add {a} and 2",
    "vars": {"a": "40"},
    "tools": {"enabled": ["sql_query", "read_file"], "sql": {"max_rows": 5}},
    "limits": {"max_steps": 3, "deadline_s": 20, "max_tool_calls": 4},
    "model": {"sampling": {"max_tokens": 64, "temperature": 0}},
    "workspace": "ws",
}
PATHS = [
    ("name",),
    ("input",),
    ("vars",),
    ("vars", "a"),
    ("tools",),
    ("tools", "enabled"),
    ("tools", "sql"),
    ("tools", "sql", "max_rows"),
    ("limits",),
    ("limits", "max_steps"),
    ("limits", "deadline_s"),
    ("model",),
    ("model", "url"),
    ("model", "mode"),
    ("model", "sampling", "temperature"),
    ("workspace",),
    ("output_schema",),
    ("approval", "require"),
    ("store",),
    ("system",),
]
OUTPUTS = [
    "The answer is 42.",
    '<tool_call>\n{"name": "sql_query", "arguments": {"query": "SELECT 40 + 2"}}\n</tool_call>',
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "../../etc/passwd"}}\n</tool_call>',
    '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>',
    '<tool_call>\n{"name": "sql_query", "arguments": {"query": 1,,}\n',
    "",
    '{"answer": 42}',
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["sql_query", "http://127.0.0.1:9", "ftp://x", "..", "{b}", "{", "none"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), values),
    st.tuples(st.just("drop"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("add"), st.text(min_size=1, max_size=10), values),
)


def _mutate(doc: dict[str, Any], op: str, where: Any, value: Any) -> None:
    if op == "add":
        doc[where] = value
        return
    node = doc
    for key in where[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if op == "set":
        node[where[-1]] = value
    else:
        node.pop(where[-1], None)


@st.composite
def task_files(draw: st.DrawFn) -> bytes:
    doc = json.loads(json.dumps(BASE))
    if draw(st.integers(0, 2)):  # a third of the files stay valid: runs reach the model
        for op, where, value in draw(st.lists(mutation, min_size=1, max_size=3)):
            _mutate(doc, op, where, value)
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    damage = draw(st.sampled_from(["none"] * 7 + ["cut", "latin1", "junk"]))
    if damage == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "latin1":
        text = text.replace(b"Add", b"Add \xe9")
    elif damage == "junk":
        text = draw(st.binary(max_size=60))
    return text


@st.composite
def scripts(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["list"] * 8 + ["mapping", "binary"]))
    if kind == "binary":
        return draw(st.binary(max_size=40))
    entries = draw(
        st.lists(st.one_of(st.sampled_from(OUTPUTS), st.text(max_size=40)), min_size=0, max_size=5)
    )
    data: Any = entries if kind == "list" else {"entries": entries}
    return json.dumps(data).encode()


@st.composite
def options(draw: st.DrawFn) -> list[str]:
    def sometimes() -> bool:  # each option on its own; most runs carry only a few
        return draw(st.integers(0, 4)) == 0

    args: list[str] = ["--json"] if draw(st.booleans()) else []
    if sometimes():
        args += ["--var", draw(st.sampled_from(["a=1", "b=2", "=x", "a", "a==", "é=é"]))]
    if sometimes():
        args += ["--approve", draw(st.sampled_from(["all", "none", "ask"]))]
    if sometimes():
        args += ["--trace", draw(st.sampled_from(["t.jsonl", "missing/t.jsonl", "ws", ""]))]
    if sometimes():
        args += ["--resume", draw(st.sampled_from(["zz", "run_", "", "%", "_"]))]
    if sometimes():
        args += ["--store", draw(st.sampled_from(["store", "ws/inside", "postgres://x@/y"]))]
    if sometimes():
        args += ["--model-url", draw(st.sampled_from(["http://127.0.0.1:9", "ftp://x", ""]))]
    return args


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            (Path(tmp) / "ws").mkdir()
            yield Path(tmp)
        finally:
            os.chdir(old)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    task=task_files(),
    script=scripts(),
    opts=options(),
    use_sim=st.sampled_from([True] * 5 + [False]),
)
def test_agent_run_exits_cleanly_whatever_the_input(
    task: bytes, script: bytes, opts: list[str], use_sim: bool
) -> None:
    with _workdir() as tmp:
        (tmp / "task.yaml").write_bytes(task)
        (tmp / "script.json").write_bytes(script)
        sim = ["--sim", "script.json"] if use_sim else ["--model-url", "http://127.0.0.1:9"]
        result = CliRunner().invoke(main, ["run", "task.yaml", *sim, *opts], input="n\n")
    event(f"exit {result.exit_code} " + (result.output.strip().splitlines() or [""])[-1][:60])
    shown = f"exit {result.exit_code}\n{result.output}"
    assert result.exit_code in (0, 1, 2, 3), shown
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), (repr(result.exception), shown)
    assert "Traceback" not in result.output, shown
