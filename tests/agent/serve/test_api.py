"""The runs API end to end over real HTTP, against the simulator, on loopback."""

from __future__ import annotations

from pathlib import Path

from agent.serve import SecurityConfig
from agent.sim import ScriptPolicy
from tests.agent.serve.conftest import (
    call,
    config,
    http_task,
    served,
    sse,
    wait_status,
    write_task,
)


def test_run_streams_numbered_events_and_replays_after_last_event_id(
    sim, tmp_path: Path, local_api
) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/a"), "It said a."])
    task = http_task(tmp_path, "fetch", local_api)
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        created = c.post("/v1/runs", json={"task": "fetch", "input": "Fetch a"})
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        assert created.headers["location"] == f"/v1/runs/{run_id}"
        events = sse(c, run_id)
        ids = [i for i, _, _ in events]
        assert ids == list(range(1, len(ids) + 1))
        kinds = [k for _, k, _ in events]
        assert kinds[0] == "run_started" and kinds[-1] == "final"
        assert {"tool_call", "tool_result", "step"} <= set(kinds)
        assert all(data["kind"] == kind for _, kind, data in events)
        final = events[-1][2]["result"]
        assert final["status"] == "done" and final["answer"] == "It said a."
        assert "trace_path" not in final  # no host paths over HTTP
        # A client that saw event 3 gets exactly 4..N on reconnecting.
        assert sse(c, run_id, after=3) == events[3:]
        for bad in ({"headers": {"Last-Event-ID": b"\xb2"}}, {"params": {"after": "\u00b2"}}):
            refused = c.get(f"/v1/runs/{run_id}/events", **bad)  # a digit, not an ASCII one
            assert refused.status_code == 400, refused.text
        view = c.get(f"/v1/runs/{run_id}").json()
        assert view["status"] == "done" and view["answer"] == "It said a."
        assert view["steps"] == 2 and view["tool_calls"] == 1
        assert view["usage"]["prompt_tokens"] > 0 and view["last_event_id"] == len(events)
        assert view["duration_s"] > 0
    assert local_api.hits["/a"] == 1


def test_wait_idempotency_and_unknown_runs(sim, tmp_path: Path) -> None:
    sim.policy = ScriptPolicy(["Hello there."])
    task = write_task(tmp_path, "greet")
    security = SecurityConfig(tokens=["tok-a", "tok-b"])
    with served(config(tmp_path, sim.url, task, security=security)) as s:
        a, b = s.client("tok-a"), s.client("tok-b")
        view = a.post("/v1/runs/wait", json={"task": "greet"}).json()
        assert view["status"] == "done" and view["answer"] == "Hello there."
        key = {"Idempotency-Key": "order-17"}
        first = a.post("/v1/runs", json={"task": "greet"}, headers=key)
        again = a.post("/v1/runs", json={"task": "greet"}, headers=key)
        other = b.post("/v1/runs", json={"task": "greet"}, headers=key)
        assert first.status_code == 202 and again.status_code == 200
        assert again.json()["run_id"] == first.json()["run_id"]
        assert other.json()["run_id"] != first.json()["run_id"]  # keys are per token
        reused = a.post("/v1/runs", json={"task": "greet", "input": "other"}, headers=key)
        assert reused.status_code == 422  # the same key for another request: not its run
        assert reused.json()["error"]["type"] == "idempotency_key_reused"
        # The same request again, spelt with a default written out, or waited for: its run.
        same = {"task": "greet", "options": {"approve": "pause"}, "vars": {}}
        assert a.post("/v1/runs", json=same, headers=key).json()["run_id"] == first.json()["run_id"]
        waited = a.post("/v1/runs/wait", json={"task": "greet"}, headers=key)
        assert waited.json()["run_id"] == first.json()["run_id"]
        chat = {"model": "greet", "messages": [{"role": "user", "content": "hi"}]}
        chat_key = {"Idempotency-Key": "chat-1"}
        streamed = a.post("/v1/chat/completions", json={**chat, "stream": True}, headers=chat_key)
        plain = a.post("/v1/chat/completions", json=chat, headers=chat_key)  # a retry, unstreamed
        assert plain.headers["x-run-id"] == streamed.headers["x-run-id"]
        other_chat = {"model": "greet", "messages": [{"role": "user", "content": "bye"}]}
        assert a.post("/v1/chat/completions", json=other_chat, headers=chat_key).status_code == 422
        long_key = {"Idempotency-Key": "k" * 256}
        chat = {"model": "greet", "messages": [{"role": "user", "content": "hi"}]}
        for route, body in (("/v1/runs", {"task": "greet"}), ("/v1/runs/wait", {"task": "greet"}),
                            ("/v1/chat/completions", chat)):  # fmt: skip
            refused = a.post(route, json=body, headers=long_key)
            assert refused.status_code == 400, (route, refused.text)
            assert "Idempotency-Key" in refused.json()["error"]["message"]
        # Runs are per token too: b cannot see a's run.
        assert b.get(f"/v1/runs/{first.json()['run_id']}").status_code == 404
        missing = a.get("/v1/runs/run_nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "run_not_found"
        a.close()
        b.close()


def test_approval_pauses_then_continues(sim, tmp_path: Path) -> None:
    sim.policy = ScriptPolicy(
        [call("write_file", path="out.txt", content="hi"), "Wrote it.", "Denied, fine."]
    )
    tools = {"enabled": ["write_file"], "files": {"allow_write": True}}
    task = write_task(tmp_path, "writer", tools=tools)
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        run_id = c.post("/v1/runs", json={"task": "writer"}).json()["run_id"]
        view = wait_status(c, run_id, {"awaiting_approval"})
        [pending] = view["pending_approval"]
        assert pending["name"] == "write_file" and pending["arguments"]["path"] == "out.txt"
        assert not (tmp_path / "ws" / "out.txt").exists()
        bad = c.post(f"/v1/runs/{run_id}/approval", json={})
        assert bad.status_code == 422
        ok = c.post(f"/v1/runs/{run_id}/approval", json={"decisions": {pending["id"]: True}})
        assert ok.status_code == 202, ok.text
        events = sse(c, run_id)  # one stream across the pause: it ends at the real end
        kinds = [k for _, k, _ in events]
        assert kinds.count("final") == 2 and kinds[-1] == "final"
        assert events[-1][2]["result"]["status"] == "done"
        assert (tmp_path / "ws" / "out.txt").read_text() == "hi"
        again = c.post(f"/v1/runs/{run_id}/approval", json={"approve": True})
        assert again.status_code == 409
        # One run: ended once (done), paused once; a pause is not an end.
        metrics = c.get("/metrics").text
        assert 'agent_runs_total{status="done"} 1' in metrics
        assert "awaiting_approval" not in metrics and "agent_run_pauses_total 1" in metrics
        assert 'agent_tool_calls_total{tool="write_file",status="ok"} 1' in metrics


def test_cancel_stops_a_run_in_flight(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/c"), "never"])
    task = http_task(tmp_path, "slow", local_api)
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        run_id = c.post("/v1/runs", json={"task": "slow"}).json()["run_id"]
        local_api.wait_arrived("/hold/c")
        response = c.post(f"/v1/runs/{run_id}/cancel")
        assert response.json() == {"run_id": run_id, "status": "cancelled"}
        events = sse(c, run_id)
        assert events[-1][2]["result"]["status"] == "cancelled"
        assert c.get(f"/v1/runs/{run_id}").json()["status"] == "cancelled"
        assert c.post(f"/v1/runs/{run_id}/cancel").status_code == 409


def test_threads_continue_a_conversation(sim, tmp_path: Path) -> None:
    sim.policy = ScriptPolicy(["First answer.", "Second answer."])
    task = write_task(tmp_path, "chat")
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        thread = c.post("/v1/threads", json={"task": "chat", "metadata": {"user": "ada"}})
        assert thread.status_code == 201
        thread_id = thread.json()["thread_id"]
        one = c.post("/v1/runs/wait", json={"task": "chat", "input": "one", "thread_id": thread_id})
        two = c.post("/v1/runs/wait", json={"task": "chat", "input": "two", "thread_id": thread_id})
        assert one.json()["answer"] == "First answer."
        assert two.json()["answer"] == "Second answer."  # the sim saw one earlier turn
        view = c.get(f"/v1/threads/{thread_id}").json()
        assert view["runs"] == [one.json()["run_id"], two.json()["run_id"]]
        said = [(m["role"], m["content"]) for m in view["messages"]]
        assert ("user", "one") in said and ("assistant", "Second answer.") in said
        wrong = c.post("/v1/runs", json={"task": "chat", "thread_id": "thread_unknown"})
        assert wrong.status_code == 404


def test_tasks_probes_metrics_and_openapi(sim, tmp_path: Path) -> None:
    sim.policy = ScriptPolicy(["Done."])
    task = write_task(tmp_path, "greet", description="Says hello.", vars={"who": "you"})
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        [listed] = c.get("/v1/tasks").json()["tasks"]
        assert listed["name"] == "greet" and listed["description"] == "Says hello."
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
        c.post("/v1/runs/wait", json={"task": "greet"})
        text = c.get("/metrics").text
        assert 'agent_runs_total{status="done"} 1' in text
        assert "agent_steps_total 1" in text and "agent_step_seconds_bucket" in text
        doc = c.get("/openapi.json").json()
        assert doc["openapi"].startswith("3.1")
        assert {"/v1/runs", "/v1/runs/{run_id}/events", "/v1/chat/completions"} <= set(doc["paths"])
        # What README documents is in the document too: ?after= and Idempotency-Key on chat.
        events = doc["paths"]["/v1/runs/{run_id}/events"]["get"]["parameters"]
        assert {(p["in"], p["name"]) for p in events} >= {
            ("query", "after"),
            ("header", "Last-Event-ID"),
        }
        chat = doc["paths"]["/v1/chat/completions"]["post"]["parameters"]
        assert [p["name"] for p in chat] == ["Idempotency-Key"]
