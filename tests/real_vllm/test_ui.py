"""The web UI against a real vLLM: the page's API (``gradio_client``) in its three modes.

The page is built for ``examples/sales_duckdb`` and pointed at the real server, as
``agent ui TASK --model-url URL`` does. What SmolLM2 says is not checked: the model status
names the served model and its context length; Function calling with ``tool_choice:
required`` makes a real SQL call whose box ends ``done``; Chat mode answers with text and
no tool; JSON mode's answer is JSON that fits the schema (structured outputs); each turn
ends with its metrics.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.testing import RealVLLM

pytest.importorskip("gradio_client", reason="the ui extra is not installed")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sales_duckdb" / "task.yaml"
CHAT, THREAD, STATUS, METRICS = range(4)
SCHEMA = {
    "type": "object",
    "properties": {"region": {"type": "string"}, "total": {"type": "number"}},
    "required": ["region", "total"],
}


@pytest.fixture(scope="module")
def page(real_vllm: RealVLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from gradio_client import Client

    from agent.task import load_task
    from agent.ui import build_app

    task = load_task(EXAMPLE)
    # The page's controls set temperature, top-p, max tokens and seed; the task keeps the
    # rest: a presence penalty lets the small model's JSON strings end (see the contract
    # tests), so a forced call completes.
    sampling = task.model.sampling.model_copy(update={"presence_penalty": 1.5})
    task = task.model_copy(
        update={
            "store": str(tmp_path_factory.mktemp("ui") / ".agent"),
            "model": task.model.model_copy(update={"sampling": sampling}),
        }
    )
    app = build_app(task, real_vllm.url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = app.launch("127.0.0.1", port, quiet=True)
    try:
        yield Client(url, verbose=False)
    finally:
        app.close()


def _send(page: Any, real_vllm: RealVLLM, message: str, **settings: Any) -> list[Any]:
    values = {
        "mode": "tools",
        "system": "You are a data analyst.",
        "tools": ["sql_tables", "sql_query"],
        "schema": "",
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 96,
        "seed": "",
        "tool_choice": "auto",
        "model_url": real_vllm.url,
    } | settings
    job = page.submit(message, "", *values.values(), api_name="/send")
    return list(job) or [job.result()]


def _texts(chat: list[dict[str, Any]], role: str = "assistant") -> str:
    return "\n".join(
        part["text"]
        for m in chat
        if m["role"] == role and not m.get("metadata")
        for part in m["content"]
        if "text" in part
    )


def test_the_model_status_names_the_real_model(page: Any, real_vllm: RealVLLM) -> None:
    status, *_ = page.predict(real_vllm.url, api_name="/check_model")
    assert real_vllm.model in status and "8,192 tokens" in status


def test_function_calling_makes_a_real_sql_call(page: Any, real_vllm: RealVLLM) -> None:
    # sql_query only: under the grammar, the small model can fill sql_tables' empty
    # argument object with whitespace until max_tokens (seen: a malformed call).
    question = "Which region sold the most?"
    last = _send(
        page, real_vllm, question, tools=["sql_query"], tool_choice="required", max_tokens=160
    )[-1]
    boxes = [m["metadata"] for m in last[CHAT] if m.get("metadata")]
    assert boxes, "tool_choice required: the first step called a tool"
    # The model's SQL may well fail: DuckDB's error is the call's result ("— error").
    assert boxes[0]["title"] in ("Tool call: sql_query", "Tool call: sql_query — error")
    assert boxes[0]["status"] == "done"
    assert last[STATUS] != "" and last[THREAD].startswith("ui_")
    assert "| done |" in last[METRICS] or "| limit |" in last[METRICS]


def test_chat_mode_answers_in_text_without_tools(page: Any, real_vllm: RealVLLM) -> None:
    last = _send(page, real_vllm, "Say hello.", mode="chat", max_tokens=16)[-1]
    assert not [m for m in last[CHAT] if m.get("metadata")], "no tool in Chat mode"
    assert _texts(last[CHAT]).strip()


def test_json_mode_answers_json_that_fits_the_schema(page: Any, real_vllm: RealVLLM) -> None:
    import jsonschema

    last = _send(
        page,
        real_vllm,
        "Top region and its total?",
        mode="json",
        schema=json.dumps(SCHEMA),
        tools=[],
        max_tokens=64,
    )[-1]
    json_out, json_status = page.predict(last[THREAD], api_name="/outcome")[1:3]
    jsonschema.validate(json.loads(json_out), SCHEMA)
    assert json_status.startswith("valid")
