"""Two real ``agent serve`` processes on one PostgreSQL store share runs: a run started
through one is read, streamed (SSE, resumed with ``Last-Event-ID``), approved and
cancelled through the other."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.agent.serve._procs import agent_serve_procs
from tests.agent.serve.conftest import call, http_task, sse, wait_status

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_two_agent_serve_processes_share_runs(tmp_path: Path, pg_store: str, local_api) -> None:
    # Every run: a GET of /hold/k that needs approval, then an answer. The first GET of
    # /hold/k is held by the local API (a call provably in flight); later ones return.
    task = http_task(tmp_path, "fetch", local_api, approval={"require": ["http_request"]})
    script = tmp_path / "script.json"
    script.write_text(json.dumps([call("http_request", url=f"{local_api.url}/hold/k"), "Got k."]))
    args = [str(task), "--sim", str(script), "--store", pg_store, "--drain-s", "0.5"]
    # One after the other: two processes creating a fresh store's tables at once can
    # deadlock in PostgreSQL (agent/persistence.py, _setup_tables: a process waiting in
    # pg_advisory_lock holds a snapshot that the other's CREATE INDEX CONCURRENTLY waits on).
    procs = agent_serve_procs(tmp_path, args, args, one_at_a_time=True)
    with procs as (a, b), a.client() as ca, b.client() as cb:
        # 1. Started through A, read and streamed through B, approved through B (B runs
        #    it: the held call), cancelled through A while B runs it.
        one = ca.post("/v1/runs", json={"task": "fetch"})
        assert one.status_code == 202, one.text
        run_id = one.json()["run_id"]
        view = _paused_view(cb, run_id)
        assert view["task"] == "fetch" and view["pending_approval"][0]["name"] == "http_request"
        seen = _until_paused(cb, run_id)
        assert [i for i, _, _ in seen] == list(range(1, len(seen) + 1))
        assert seen[0][1] == "run_started" and "approval" in [k for _, k, _ in seen]
        assert seen[-1][2]["result"]["status"] == "awaiting_approval"
        approved = cb.post(f"/v1/runs/{run_id}/approval", json={"approve": True})
        assert approved.status_code == 202, approved.text
        local_api.wait_arrived("/hold/k")  # B is running the approved call
        cancel = ca.post(f"/v1/runs/{run_id}/cancel")
        assert cancel.status_code == 202 and cancel.json()["status"] == "cancelling"
        rest = sse(ca, run_id, after=seen[-1][0])  # A streams, from event N+1, B's run
        assert [i for i, _, _ in rest] == list(range(len(seen) + 1, len(seen) + len(rest) + 1))
        assert rest[-1][1] == "final" and rest[-1][2]["result"]["status"] == "cancelled"
        assert sse(cb, run_id) == seen + rest  # the same numbered events on both
        assert wait_status(ca, run_id, {"cancelled"})["status"] == "cancelled"
        assert wait_status(cb, run_id, {"cancelled"})["status"] == "cancelled"
        assert cb.post(f"/v1/runs/{run_id}/cancel").status_code == 409

        # 2. Started through B, approved through A (A runs it to the end), streamed
        #    through B after the last event it saw: nothing missed, nothing twice.
        run_id = cb.post("/v1/runs", json={"task": "fetch"}).json()["run_id"]
        view = _paused_view(ca, run_id)
        seen = _until_paused(cb, run_id)
        [pending] = view["pending_approval"]
        approved = ca.post(f"/v1/runs/{run_id}/approval", json={"decisions": {pending["id"]: True}})
        assert approved.status_code == 202, approved.text
        rest = sse(cb, run_id, after=seen[-1][0])
        assert rest[0][0] == seen[-1][0] + 1
        assert rest[-1][2]["result"]["status"] == "done"
        assert rest[-1][2]["result"]["answer"] == "Got k."
        assert sse(ca, run_id) == seen + rest
        done = cb.get(f"/v1/runs/{run_id}").json()
        assert done["status"] == "done" and done["answer"] == "Got k." and done["tool_calls"] == 1
    local_api.release("/hold/k")
    assert local_api.hits["/hold/k"] == 2  # once per approved run, never repeated


def _until_paused(client: httpx.Client, run_id: str) -> list:
    """The run's events up to its first ``final`` (the pause; the stream stays open)."""
    n = 0
    while True:  # one more event each time until the pause's final is among them
        n += 1
        events = sse(client, run_id, limit=n)
        if events[-1][1] == "final":
            assert events[-1][2]["result"]["status"] == "awaiting_approval"
            return events


def _paused_view(client: httpx.Client, run_id: str) -> dict:
    """``GET /v1/runs/{id}`` once it shows the pause and the calls waiting (the run's
    record can say ``awaiting_approval`` a moment before its events are stored)."""
    deadline = time.monotonic() + 30
    while True:
        view = wait_status(client, run_id, {"awaiting_approval"})
        if view["pending_approval"]:
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
