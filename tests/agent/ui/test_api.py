"""The page's API through ``gradio_client``: every button is an endpoint too.

``/send`` takes the message, the conversation (empty: a new one) and the left column's
settings, and streams the conversation: chat, conversation id, status, metrics.
``/outcome`` then says how the turn stands: the calls awaiting approval, the JSON answer
and its status, the trace to download.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent.ui.conftest import UI
from tests.agent.ui.policy import INJECTION

pytest.importorskip("gradio_client", reason="the ui extra is not installed")

CHAT, THREAD, STATUS, METRICS = range(4)
APPROVAL, JSON_OUT, JSON_STATUS, DOWNLOAD = range(4)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def client(ui: UI) -> Any:
    from gradio_client import Client

    return Client(ui.url, verbose=False)


def send_args(ui: UI, message: str, thread: str = "", **settings: Any) -> list[Any]:
    values = {
        "mode": "tools",
        "system": "",
        "tools": ["list_files", "read_file", "write_file"],
        "schema": "",
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 512,
        "seed": "",
        "tool_choice": "auto",
        "model_url": ui.sim.url,
    } | settings
    return [message, thread, *values.values()]


def send(client: Any, ui: UI, message: str, thread: str = "", **settings: Any) -> list[Any]:
    """Every streamed output of one ``/send``; the last is the turn's end."""
    job = client.submit(*send_args(ui, message, thread, **settings), api_name="/send")
    outputs = list(job)
    return outputs or [job.result()]


def outcome(client: Any, thread: str) -> Any:
    return client.predict(thread, api_name="/outcome")


def texts(chat: list[dict[str, Any]]) -> str:
    return "\n".join(part["text"] for m in chat for part in m["content"] if "text" in part)


def test_send_streams_a_turn_to_its_answer_metrics_and_trace(client: Any, ui: UI) -> None:
    outputs = send(client, ui, "Which files are there?")
    last = outputs[-1]
    assert len(outputs) >= 3, "the turn streams"
    assert last[STATUS] == "Done." and last[THREAD].startswith("ui_")
    chat = last[CHAT]
    assert [m["role"] for m in chat][:2] == ["user", "assistant"]
    boxes = [m["metadata"] for m in chat if m.get("metadata")]
    assert boxes[0]["title"] == "Tool call: list_files" and boxes[0]["status"] == "done"
    assert "The workspace holds notes.txt." in texts(chat)
    assert "| 1 | done |" in last[METRICS]
    trace = Path(outcome(client, last[THREAD])[DOWNLOAD]["value"])
    first = json.loads(trace.read_text().splitlines()[0])
    assert (first["type"], first["input"]) == ("run_started", "Which files are there?")


def test_turns_continue_a_thread_and_two_clients_are_two_conversations(client: Any, ui: UI) -> None:
    from gradio_client import Client

    first = send(client, ui, "My name is Ada")[-1]
    other = send(Client(ui.url, verbose=False), ui, "My name is Bob")[-1]
    assert first[THREAD] != other[THREAD]
    second = send(client, ui, "Say it again", first[THREAD])[-1]
    text = texts(second[CHAT])
    assert "My name is Ada" in text and "Say it again" in text and "Bob" not in text
    assert "| 2 | done |" in second[METRICS]


def test_chat_mode_is_a_plain_conversation_without_tools(client: Any, ui: UI) -> None:
    """Chat mode offers no tools: a plain answer, no tool box, no tools in the prompt, even
    with a tool left in the (then disabled) ``tool_choice`` dropdown."""
    question = "Chat mode question number 4711"
    last = send(client, ui, question, mode="chat", tool_choice="list_files")[-1]
    assert last[STATUS] == "Done.", texts(last[CHAT])
    assert [m["role"] for m in last[CHAT]] == ["user", "assistant"]
    assert not any(m.get("metadata") for m in last[CHAT]), "no tool box, no note"
    assert texts(last[CHAT]).startswith(question + "\nEcho: " + question)
    asked = [r for r in ui.sim.requests if question in json.dumps(r)]
    assert len(asked) == 1, "one model call"
    body = asked[0]
    chatml = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    assert body["prompt"].endswith(chatml) and "<tools>" not in body["prompt"]
    assert "tools" not in body and "tool_choice" not in body
    row = last[METRICS].splitlines()[-1].strip("| ").split(" | ")
    assert (row[0], row[1], row[7], row[8]) == ("1", "done", "1", "0"), "one step, no calls"


def test_json_mode_answers_a_validated_formatted_object(client: Any, ui: UI) -> None:
    schema = json.dumps({"type": "object", "required": ["city", "temp_c"]})
    last = outcome(client, send(client, ui, "Weather in Paris", mode="json", schema=schema)[-1][1])
    assert json.loads(last[JSON_OUT]) == {"city": "Paris", "temp_c": 21}
    assert last[JSON_OUT].startswith("{\n  ") and last[JSON_STATUS].startswith("valid")
    refused = send(client, ui, "Weather?", mode="json", schema='{"type": ')[-1]
    assert "JSON schema: not JSON" in texts(refused[CHAT]) and refused[STATUS] == "Not sent."
    stricter = json.dumps({"type": "object", "required": ["country"]})
    invalid = send(client, ui, "Weather in Paris", mode="json", schema=stricter)[-1]
    status = outcome(client, invalid[THREAD])[JSON_STATUS]
    assert status.startswith("invalid") and "country" in status


def test_approval_through_approve_and_deny(client: Any, ui: UI) -> None:
    target = ui.workspace / "out.txt"
    target.unlink(missing_ok=True)
    paused = send(client, ui, "write the file")[-1]
    assert paused[STATUS].startswith("Waiting")
    assert "write_file" in outcome(client, paused[THREAD])[APPROVAL]
    done = client.predict(paused[THREAD], api_name="/approve")
    assert done[STATUS] == "Done." and target.read_text() == "hello"
    target.unlink()
    paused = send(client, ui, "write the file")[-1]
    denied = client.predict(paused[THREAD], api_name="/deny")
    assert denied[STATUS] == "Done." and not target.exists()
    box = next(m["metadata"] for m in denied[CHAT] if m.get("metadata"))
    assert box["log"] == "denied"


def test_stop_interrupts_then_resume_finishes_and_a_stopped_thread_takes_no_message(
    client: Any, ui: UI
) -> None:
    ui.sim.faults.stall_s, ui.sim.faults.stall_after_tokens = 30.0, 3
    job = client.submit(*send_args(ui, "Tell me a long story"), api_name="/send")
    thread = ""
    deadline = time.monotonic() + 20
    while not thread and time.monotonic() < deadline:
        time.sleep(0.05)
        outputs = job.outputs()
        if outputs and "Echo" in texts(outputs[-1][CHAT]):
            thread = outputs[-1][THREAD]
    assert client.predict(thread, api_name="/stop") == "Stopping…"
    stopped = job.result()
    assert stopped[STATUS].startswith("Stopped")
    refused = send(client, ui, "Something else", thread)[-1]
    assert "unfinished run" in texts(refused[CHAT])
    ui.sim.faults.stall_s = None
    resumed = client.predict(thread, api_name="/resume")
    assert resumed[STATUS] == "Done." and "word word" in texts(resumed[CHAT])


def test_user_text_model_output_and_tool_output_arrive_escaped(client: Any, ui: UI) -> None:
    last = send(client, ui, "inject " + INJECTION)[-1]
    contents = [m["content"][0]["text"] for m in last[CHAT]]
    assert all("<img" not in c and "<script" not in c for c in contents)
    assert sum("&lt;img src=x onerror=" in c for c in contents) == 3, "input, tool, answer"
    assert any("&lt;script&gt;window.__pwned=3&lt;/script&gt;" in c for c in contents)
    titles = [m["metadata"]["title"] for m in last[CHAT] if m.get("metadata")]
    assert titles == ["Tool call: read_file"]


def test_schema_and_model_checks(client: Any, ui: UI) -> None:
    assert client.predict('{"type": "object"}', api_name="/check_schema") == "valid JSON Schema"
    assert client.predict('{"type": "objct"}', api_name="/check_schema").startswith("invalid")
    status = client.predict(ui.sim.url, api_name="/check_model")
    assert status[0].startswith("reachable · NousResearch/Hermes-3-Llama-3.1-8B")
    down = client.predict("http://127.0.0.1:9", api_name="/check_model")
    assert down[0].startswith("unreachable")
    assert client.predict("ftp://x", api_name="/check_model")[0].startswith("unreachable")


def test_load_task_fills_the_settings_not_the_policies(client: Any, ui: UI, tmp_path: Path) -> None:
    from gradio_client import handle_file

    task = ROOT / "examples" / "incident_report" / "task.yaml"
    mode, system, tools, schema, temperature, *_, message, status = client.predict(
        handle_file(str(task)), api_name="/load_task"
    )
    assert (mode, tools, temperature) == ("json", ["list_files", "read_file", "write_file"], 0.2)
    assert "incident reports" in system and json.loads(schema)["required"][0] == "report_path"
    assert message.startswith("Read the incident notes") and "server's policies" in status
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: hi\ntools:\n  enabled: [sql_querry]\n")
    *_, status = client.predict(handle_file(str(bad)), api_name="/load_task")
    assert status.startswith("not loaded") and "sql_querry" in status and "bad.yaml" in status


def test_history_lists_conversations_and_runs(client: Any, ui: UI) -> None:
    last = send(client, ui, "A conversation for the history")[-1]
    conversations, runs = client.predict(api_name="/history")
    assert last[THREAD] in [value for _, value in conversations["choices"]]
    assert runs["data"] and runs["headers"][0] == "run"
