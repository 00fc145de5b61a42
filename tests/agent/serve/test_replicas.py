"""Two replicas on one Postgres store: a run started through one is readable, streamable,
approvable and cancellable through the other; a replica's orphaned runs are taken over."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sim import ScriptPolicy
from tests.agent.serve.conftest import call, config, http_task, served, sse, wait_status, write_task

pytestmark = pytest.mark.postgres


def test_read_stream_and_approve_through_the_other_replica(
    sim, tmp_path: Path, pg_store: str
) -> None:
    sim.policy = ScriptPolicy([call("write_file", path="r.txt", content="x"), "Written."])
    tools = {"enabled": ["write_file"], "files": {"allow_write": True}}
    task = write_task(tmp_path, "writer", tools=tools)
    cfg = config(tmp_path, sim.url, task, store=pg_store, poll_s=0.05)
    with served(cfg) as a, served(cfg) as b, a.client() as ca, b.client() as cb:
        run_id = ca.post("/v1/runs", json={"task": "writer"}).json()["run_id"]
        view = wait_status(cb, run_id, {"awaiting_approval"})  # read through B
        [pending] = view["pending_approval"]
        ok = cb.post(f"/v1/runs/{run_id}/approval", json={"decisions": {pending["id"]: True}})
        assert ok.status_code == 202  # B continues the run A started
        from_b, from_a = sse(cb, run_id), sse(ca, run_id)
        assert from_a == from_b  # the same numbered events on both replicas
        assert [i for i, _, _ in from_b] == list(range(1, len(from_b) + 1))
        assert from_b[-1][2]["result"]["status"] == "done"
        assert ca.get(f"/v1/runs/{run_id}").json()["status"] == "done"
        assert (tmp_path / "ws" / "r.txt").read_text() == "x"


def test_cancel_through_the_other_replica(sim, tmp_path: Path, pg_store: str, local_api) -> None:
    sim.policy = ScriptPolicy([call("http_request", url=f"{local_api.url}/hold/z"), "never"])
    task = http_task(tmp_path, "slow", local_api)
    cfg = config(tmp_path, sim.url, task, store=pg_store, poll_s=0.05)
    with served(cfg) as a, served(cfg) as b, a.client() as ca, b.client() as cb:
        run_id = ca.post("/v1/runs", json={"task": "slow"}).json()["run_id"]
        local_api.wait_arrived("/hold/z")
        answer = cb.post(f"/v1/runs/{run_id}/cancel")
        assert answer.status_code == 202 and answer.json()["status"] == "cancelling"
        events = sse(cb, run_id)  # B streams the run A owns, to its end
        assert events[-1][2]["result"]["status"] == "cancelled"
        assert wait_status(cb, run_id, {"cancelled"})["status"] == "cancelled"
    local_api.release("/hold/z")


def test_a_stopped_replicas_runs_are_taken_over(
    sim, tmp_path: Path, pg_store: str, local_api
) -> None:
    sim.policy = ScriptPolicy(
        [call("http_request", url=f"{local_api.url}/once"),
         call("http_request", url=f"{local_api.url}/hold/t"), "Both fetched."]
    )  # fmt: skip
    task = http_task(tmp_path, "two", local_api)
    cfg = config(tmp_path, sim.url, task, store=pg_store, poll_s=0.05, drain_s=0.2)
    with served(cfg) as b, b.client() as cb:
        with served(cfg) as a, a.client() as ca:
            run_id = ca.post("/v1/runs", json={"task": "two"}).json()["run_id"]
            local_api.wait_arrived("/hold/t")
            seen = sse(ca, run_id, limit=4)
        # A drained (stopped at the held call, released the run); B resumes it.
        local_api.release("/hold/t")
        events = sse(cb, run_id, after=seen[-1][0])
        assert [i for i, _, _ in events] == list(range(seen[-1][0] + 1, events[-1][0] + 1))
        assert events[-1][2]["result"]["status"] == "done"
        assert any(k == "run_started" and d["resumed"] for _, k, d in events)
    assert local_api.hits["/once"] == 1  # the completed call did not run twice
    assert local_api.hits["/hold/t"] == 2  # the interrupted one ran again


def test_readyz_says_when_the_store_does_not_answer(sim, tmp_path: Path, pg_store: str) -> None:
    import psycopg

    task = write_task(tmp_path, "greet")
    with served(config(tmp_path, sim.url, task, store=pg_store)) as s, s.client() as c:
        assert c.get("/readyz").json() == {"status": "ready"}
        with psycopg.connect(pg_store, autocommit=True) as conn:  # the events table goes away
            conn.execute("ALTER TABLE run_events RENAME TO run_events_away")
            try:
                down = c.get("/readyz")
            finally:
                conn.execute("ALTER TABLE run_events_away RENAME TO run_events")
        assert down.status_code == 503 and down.json() == {"status": "store unreachable"}
        assert c.get("/healthz").status_code == 200  # alive all along: not a restart
        assert c.get("/readyz").status_code == 200
