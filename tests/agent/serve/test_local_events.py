"""A run running here: its listeners read recent events from memory, and it stays private.

A listener of a run that this process runs gets the events already published from the
hub's memory instead of the store (the usual client: start a run, then open its stream);
once the run has moved on past what memory keeps, or has ended here, the store answers.
Either way the client sees every event once, in order. Answering "whose run is this?"
from memory must not let another token see a run in progress.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from agent.runs import StoredEvent
from agent.serve import SecurityConfig
from agent.serve._hub import is_last
from agent.sim import ScriptPolicy
from tests.agent.serve.conftest import call, config, http_task, served, sse


def _until(client: httpx.Client, run_id: str, kind: str, after: int = 0) -> list[tuple]:
    """The run's events after ``after`` up to the first ``kind`` one (the stream goes on)."""
    out, fields = [], {}
    headers = {"Last-Event-ID": str(after)}
    with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "" and "data" in fields:
                out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                if fields["event"] == kind:
                    return out
                fields = {}
            elif line and not line.startswith(":"):
                key, _, value = line.partition(": ")
                fields[key] = value
    raise AssertionError(f"the stream ended before a {kind} event: {out}")


def _count_store_reads(service, monkeypatch) -> list[int]:
    reads = [0]
    real = service.events.events

    def counted(*args, **kwargs):
        reads[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(service.events, "events", counted)
    return reads


def test_listeners_of_a_run_running_here_read_from_memory(
    sim, tmp_path: Path, local_api, monkeypatch
) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/m"), "Got m."])
    task = http_task(tmp_path, "fetch", local_api)
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        reads = _count_store_reads(s.service, monkeypatch)
        run_id = c.post("/v1/runs", json={"task": "fetch"}).json()["run_id"]
        local_api.wait_arrived("/hold/m")
        first = _until(c, run_id, "tool_call")
        assert [i for i, _, _ in first] == list(range(1, len(first) + 1))
        assert first[0][1] == "run_started"
        assert _until(c, run_id, "tool_call", after=1) == first[1:]  # a reconnect
        assert reads[0] == 0  # the run runs here: its events came from memory
        local_api.release("/hold/m")
        whole = sse(c, run_id)
        assert whole[: len(first)] == first
        assert whole[-1][2]["result"]["status"] == "done"
        assert [i for i, _, _ in whole] == list(range(1, len(whole) + 1))
        # Ended: no longer in memory, so a listener reads the store and sees the same.
        assert sse(c, run_id, after=0) == whole
        assert reads[0] >= 1


def test_a_listener_behind_what_memory_keeps_reads_the_store(
    sim, tmp_path: Path, local_api, monkeypatch
) -> None:
    monkeypatch.setattr("agent.serve._hub.RECENT", 1)
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/r"), "Got r."])
    task = http_task(tmp_path, "fetch", local_api)
    with served(config(tmp_path, sim.url, task)) as s, s.client() as c:
        reads = _count_store_reads(s.service, monkeypatch)
        run_id = c.post("/v1/runs", json={"task": "fetch"}).json()["run_id"]
        local_api.wait_arrived("/hold/r")
        first = _until(c, run_id, "tool_call")  # published by now: memory holds only it
        assert len(first) >= 2 and first[0][1] == "run_started"
        assert [i for i, _, _ in first] == list(range(1, len(first) + 1))
        reads[0] = 0
        assert _until(c, run_id, "tool_call") == first
        assert reads[0] >= 1  # memory kept only the last one: the store had the rest
        local_api.release("/hold/r")
        assert sse(c, run_id)[: len(first)] == first


def test_a_run_in_progress_is_private_to_its_token(sim, tmp_path: Path, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/p"), "Got p."])
    task = http_task(tmp_path, "fetch", local_api)
    security = SecurityConfig(tokens=["tok-a", "tok-b"])
    with (
        served(config(tmp_path, sim.url, task, security=security)) as s,
        s.client("tok-a") as a,
        s.client("tok-b") as b,
    ):
        run_id = a.post("/v1/runs", json={"task": "fetch"}).json()["run_id"]
        local_api.wait_arrived("/hold/p")
        assert b.get(f"/v1/runs/{run_id}/events").status_code == 404
        assert b.get(f"/v1/runs/{run_id}").status_code == 404
        assert b.post(f"/v1/runs/{run_id}/cancel").status_code == 404
        assert b.post(f"/v1/runs/{run_id}/approval", json={"approve": True}).status_code == 404
        local_api.release("/hold/p")
        assert sse(a, run_id)[-1][2]["result"]["status"] == "done"


async def test_an_event_number_given_out_is_never_given_again(tmp_path: Path) -> None:
    """A run continued right after it paused here (an approval arriving within the few ms
    before its pause's ``final`` is stored) numbers its next event after that one, not
    after what the store has."""
    from agent._db import SqliteDatabase
    from agent.runs import RunStore
    from agent.serve._hub import EventHub

    hub = EventHub(RunStore(SqliteDatabase(tmp_path / "serve.db")))
    for seq in (1, 2, 3):
        hub.emit("run-a", seq, {"kind": "text", "text": "x"})
    assert await hub.last_seq("run-a") == 3  # none stored yet
    assert await hub.last_seq("run-b") == 0
    await hub.flush()
    assert await hub.last_seq("run-a") == 3  # stored now
    hub.emit("run-a", 4, {"kind": "final", "result": {"status": "awaiting_approval"}})
    assert await hub.last_seq("run-a") == 4


def test_a_pause_does_not_end_a_stream_however_its_json_is_spaced() -> None:
    pause = {"kind": "final", "result": {"status": "awaiting_approval"}}
    for data in (json.dumps(pause), json.dumps(pause, separators=(",", ":"))):
        assert not is_last(StoredEvent("r", 1, "final", data, 0.0))
    done = json.dumps({"kind": "final", "result": {"status": "done"}}, separators=(",", ":"))
    assert is_last(StoredEvent("r", 2, "final", done, 0.0))


async def test_events_another_writer_stored_first_stand(tmp_path: Path) -> None:
    """Two replicas writing one run (taken over while its owner still ran): each event
    number is stored once, and listeners here get the stored event, never the one that
    lost — so a stream and its replay agree."""
    from agent._db import SqliteDatabase
    from agent.runs import RunStore
    from agent.serve._hub import EventHub

    store = RunStore(SqliteDatabase(tmp_path / "serve.db"))
    theirs = StoredEvent("run-a", 2, "text", json.dumps({"kind": "text", "text": "theirs"}), 0.0)
    assert store.append_events([theirs]) == [theirs]
    twice = [StoredEvent("run-b", 1, "text", "{}", 0.0), StoredEvent("run-b", 1, "step", "{}", 0.0)]
    assert store.append_events(twice) == twice[:1]  # one number twice: the first is stored
    hub = EventHub(store, poll_s=0.05)
    hub.open_run("run-a", 1)
    for seq, text in ((1, "one"), (2, "ours"), (3, "three")):
        hub.emit("run-a", seq, {"kind": "text", "text": text})
    await hub.flush()
    seen: list[str] = []
    async for events in hub.follow("run-a", 0):
        seen += [json.loads(e.data)["text"] for e in events]
        if len(seen) >= 3:
            break
    assert seen == ["one", "theirs", "three"]
    assert [json.loads(e.data)["text"] for e in store.events("run-a")] == seen
