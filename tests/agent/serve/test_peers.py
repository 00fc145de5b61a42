"""Workers of one host hand each other the events they store (``agent.serve._peers``).

Every run's events reach every other peer, in order (merged and sent again when a
peer's queue was full; as the run's id alone when they do not fit in a datagram); a
worker that starts late is sent to at once; a dead worker's socket is cleared away; and
a listener on one hub of a run another hub writes gets its events as soon as they are
stored, not at its next poll (these tests poll once a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path

import pytest

from agent._db import SqliteDatabase
from agent.runs import RunStore, StoredEvent
from agent.serve._hub import EventHub
from agent.serve._peers import _MAX_EVENTS, MAX_DATAGRAM, RETRY_S, PeerBus


def _ev(run_id: str, seq: int, data: str = "{}") -> StoredEvent:
    return StoredEvent(run_id, seq, "step", data, 1.5)


def _by_run(received: list) -> dict[str, list]:
    """Received (run, events) pairs as run -> [events..., or None for "read the store"]."""
    out: dict[str, list] = {}
    for run_id, events in received:
        out.setdefault(run_id, []).extend(events if events is not None else [None])
    return out


def test_events_reach_every_other_peer_and_not_the_sender(tmp_path: Path) -> None:
    a, b, c = PeerBus(tmp_path), PeerBus(tmp_path), PeerBus(tmp_path)
    batch = {
        "run-1": [_ev("run-1", 1), _ev("run-1", 2, '{"x": "é\\n"}')],
        "run-2": [_ev("run-2", 7)],
    }
    a.send(batch)
    assert b.receive() == list(batch.items())
    assert c.receive() == list(batch.items())
    assert a.receive() == []


def test_runs_beyond_a_datagram_all_arrive_and_a_big_one_as_its_id(tmp_path: Path) -> None:
    a, b = PeerBus(tmp_path), PeerBus(tmp_path)
    batch = {f"run_{i:04d}": [_ev(f"run_{i:04d}", 1, "x" * 100)] for i in range(400)}
    batch["big"] = [_ev("big", 1, "y" * MAX_DATAGRAM)]
    a.send(batch)
    got = b.receive()
    assert [run_id for run_id, _ in got] == list(batch)  # in order, over several datagrams
    assert got[-1] == ("big", None)
    assert all(events == batch[run_id] for run_id, events in got[:-1])


async def test_a_peer_whose_queue_is_full_gets_every_event_once_it_reads(tmp_path: Path) -> None:
    """A busy peer's queue holds few datagrams (10 by default on Linux): what it refused is
    kept, merged in order, and sent once it has read its queue — not dropped."""
    a, b = PeerBus(tmp_path), PeerBus(tmp_path)
    a.attach(lambda received: None)  # a's loop: the retries
    for i in range(200):  # one datagram each, while b reads none
        a.send({f"run-{i}": [_ev(f"run-{i}", 1)]})
    for seq in range(1, 31):  # one run's events, merged while they wait
        a.send({"same": [_ev("same", seq)]})
    got = b.receive()
    assert len(got) < 201  # the queue was full: the rest waits at a
    for _ in range(100):
        await asyncio.sleep(RETRY_S * 2)
        got += b.receive()
        if "same" in _by_run(got):
            break
    runs = _by_run(got)
    assert sorted(runs) == sorted([f"run-{i}" for i in range(200)] + ["same"])
    assert [e.seq for e in runs["same"]] == list(range(1, 31))
    a.close()


def test_a_peer_that_reads_nothing_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """A datagram counts against its sender's buffer until it is read: two peers that read
    nothing fill it (10 queued datagrams of ~15 KB each) unless each peer has its own."""
    a, c = PeerBus(tmp_path), PeerBus(tmp_path)
    stuck = [PeerBus(tmp_path), PeerBus(tmp_path)]
    got = []
    for i in range(100):
        a.send({f"run-{i}": [_ev(f"run-{i}", 1, "x" * 15000)]})
        got += c.receive()
    assert [run_id for run_id, _ in got] == [f"run-{i}" for i in range(100)]
    assert all(len(peer.receive()) < 100 for peer in stuck)


async def test_a_run_with_too_many_waiting_events_waits_as_its_id(tmp_path: Path) -> None:
    a, b = PeerBus(tmp_path), PeerBus(tmp_path)
    a.attach(lambda received: None)
    for i in range(20):  # fill b's queue
        a.send({f"run-{i}": [_ev(f"run-{i}", 1)]})
    for seq in range(1, _MAX_EVENTS + 2):
        a.send({"long": [_ev("long", seq)]})
    got = b.receive()
    for _ in range(100):
        await asyncio.sleep(RETRY_S * 2)
        got += b.receive()
        if "long" in _by_run(got):
            break
    assert _by_run(got)["long"] == [None]  # its listeners read the store
    a.close()


async def test_a_full_peer_is_retried_by_one_timer_however_often_events_are_sent(
    tmp_path: Path,
) -> None:
    a, b = PeerBus(tmp_path), PeerBus(tmp_path)
    a.attach(lambda received: None)
    for i in range(200):  # b reads none: its queue stays full
        a.send({f"run-{i}": [_ev(f"run-{i}", 1)]})
    scheduled = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
    retries = [h for h in scheduled if not h.cancelled() and h._callback == a._retry_refused]
    assert len(retries) == 1
    a.close()
    b.close()


async def test_a_peer_that_starts_later_is_sent_to_at_once(tmp_path: Path) -> None:
    """A peer keeps its list of peers for a second; one that starts meanwhile says hello,
    so the first events after it started reach it."""
    a = PeerBus(tmp_path)
    hello = asyncio.Event()
    a.attach(lambda received: hello.set())
    a.send({"before": [_ev("before", 1)]})  # a reads the folder now: nobody else yet
    b = PeerBus(tmp_path)
    b.attach(lambda received: None)  # hello to a
    async with asyncio.timeout(10):
        await hello.wait()
    a.send({"after": [_ev("after", 1)]})
    assert b.receive() == [("after", [_ev("after", 1)])]
    a.close()
    b.close()


def test_the_socket_of_a_dead_worker_is_removed(tmp_path: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(tmp_path / "999999-deadbeef.sock"))
    dead.close()  # the file stays, nobody reads it: as after kill -9
    a, b = PeerBus(tmp_path), PeerBus(tmp_path)
    a.send({"run-1": [_ev("run-1", 1)]})
    assert b.receive() == [("run-1", [_ev("run-1", 1)])]
    assert sorted(p.name for p in tmp_path.glob("*.sock")) == sorted([a.path.name, b.path.name])


def test_what_is_malformed_in_a_datagram_is_skipped_or_read_from_the_store(
    tmp_path: Path,
) -> None:
    """Only this user's processes can write to the folder; still, a bad item must neither
    crash the reader nor the streams: it is skipped, or its listeners read the store."""
    b = PeerBus(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        for payload in (
            b"run-1\nrun-2",  # not JSON
            b'{"run-0": []}',  # not a list
            b'[[["x"], null], ["r1", [[1, "step", "{}", 1.5]]]]',  # a bad item, a good one
            b'[["r2", [["1", "step", "{}", 1.5]]]]',  # a seq that is not a number
            b'[["r3", [[1, "step"]]]]',  # a short row
            b'[["r4", [[2, "final", "not json", 1.5]]]]',  # a final that says nothing
        ):
            other.sendto(payload, str(b.path))
    assert b.receive() == [
        ("r1", [_ev("r1", 1)]),
        ("r2", None),
        ("r3", None),
        ("r4", None),
    ]


def test_a_folder_whose_path_is_too_long_for_a_socket_is_a_config_error(tmp_path: Path) -> None:
    from agent.errors import ConfigError
    from agent.serve.app import _peer_bus

    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with pytest.raises(ConfigError, match="peers folder"):
        _peer_bus(deep)


async def test_a_listener_on_another_hub_gets_events_as_they_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hubs on one store, as two workers: a listener on ``b`` of a run ``a`` writes gets
    each event from ``a`` as soon as it is stored (it polls once a minute): small ones in
    the datagram, a big one by reading the store when told to."""
    folder = tmp_path / "peers"
    folder.mkdir()
    hubs = []
    for _ in range(2):
        hub = EventHub(RunStore(SqliteDatabase(tmp_path / "serve.db")), poll_s=60)
        hub.peers = PeerBus(folder)
        hub.peers.attach(hub.stored_elsewhere)
        hubs.append(hub)
    a, b = hubs
    reads = []
    real = b.events.events
    monkeypatch.setattr(b.events, "events", lambda *args: reads.append(args) or real(*args))
    a.open_run("r1", 1)
    got: list[int] = []

    async def listen() -> None:
        async for events in b.follow("r1", 0):
            got.extend(e.seq for e in events)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.05)  # b has read the store (empty) and waits
    for seq, kind, text in ((1, "run_started", ""), (2, "step", "x" * MAX_DATAGRAM)):
        a.emit("r1", seq, {"kind": kind, "text": text})
        await a.flush()
        async with asyncio.timeout(10):  # a poll would take 60 s
            while got[-1:] != [seq]:
                await asyncio.sleep(0.005)
    a.emit("r1", 3, {"kind": "final", "result": {"status": "done"}})
    await a.flush()
    async with asyncio.timeout(10):
        await listener  # the stream ends at the final event
    assert got == [1, 2, 3]
    assert len(reads) == 2  # at the start, and for the big event
    for hub in hubs:
        hub.peers.close()


def test_metrics_add_up_every_worker_and_a_dead_one_keeps_only_its_counters(
    tmp_path: Path,
) -> None:
    from agent.serve._metrics import Metrics

    a, b = PeerBus(tmp_path), PeerBus(tmp_path)
    ma, mb = Metrics(), Metrics()
    ma.runs.inc(("done",))
    ma.run_seconds.observe(0.2)
    mb.runs.inc(("done",), 2)
    mb.runs.inc(("failed",))
    mb.run_seconds.observe(3.0)
    a.write_metrics(ma.snapshot(active_runs=1, listeners=2))
    b.write_metrics(mb.snapshot(active_runs=4, listeners=5))
    dead = Metrics()
    dead.runs.inc(("done",), 10)  # a worker that died: its socket file stays, unread
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(str(tmp_path / "999999-deadbeef.sock"))
    gone.close()
    (tmp_path / "999999-deadbeef.metrics.json").write_text(
        json.dumps(dead.snapshot(active_runs=7, listeners=7))
    )
    (tmp_path / "junk.metrics.json").write_text('{"parts": {"agent_runs_total": 5}}')
    lines = Metrics.render_all(a.all_metrics()).splitlines()
    assert 'agent_runs_total{status="done"} 13' in lines
    assert 'agent_runs_total{status="failed"} 1' in lines
    assert "agent_runs_active 5" in lines  # 1 + 4, not the dead worker's 7
    assert "agent_sse_listeners 7" in lines
    assert "agent_run_seconds_count 2" in lines
    assert 'agent_run_seconds_bucket{le="0.25"} 1' in lines
    assert Metrics.render_all(b.all_metrics()) == "\n".join(lines) + "\n"  # any worker


def test_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    from agent.errors import ConfigError
    from agent.serve.app import _peer_bus

    tmp_path.chmod(0o777)
    with pytest.raises(ConfigError, match="not be writable by others"):
        _peer_bus(tmp_path)


async def test_hints_for_a_listener_are_one_until_it_reads_the_store(tmp_path: Path) -> None:
    hub = EventHub(RunStore(SqliteDatabase(tmp_path / "serve.db")), poll_s=60)
    stream = hub.follow("r1", 0)
    waiting = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)  # it reads the store (empty), then waits for live events
    (queue,) = hub._listeners["r1"]
    for _ in range(50):
        hub.stored_elsewhere([("r1", None)])
    assert queue.qsize() == 1
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    assert "r1" not in hub._listeners  # the listener is gone


def test_tool_labels_are_the_served_tools_or_other() -> None:
    from agent.events import ToolResultEvent
    from agent.serve._metrics import Metrics
    from agent.types import ToolResult

    metrics = Metrics(tools=["read_file"])
    for name in ("read_file", "made_up_1", "made_up_2"):  # names come from the model
        metrics.observe(ToolResultEvent(1, ToolResult("c", name, "error", "no such tool")))
    text = metrics.render(0, 0)
    assert 'agent_tool_calls_total{tool="read_file",status="error"} 1' in text
    assert 'agent_tool_calls_total{tool="other",status="error"} 2' in text
    assert "made_up" not in text
