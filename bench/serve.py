"""Benchmark of ``agent serve`` against the same runs through the Python API.

    python bench/serve.py [--quick] [--json] [--workers N]

(a) **Throughput** on the ``h200`` profile: N runs (500; 100 with ``--quick``) submitted
    over HTTP (``POST /v1/runs``), each followed by its own SSE listener
    (``GET /v1/runs/{id}/events``) until its ``final`` event; wall time from the first
    submission to the last ``final`` received, divided by the wall time of the same N runs
    through ``Agent.run`` in one process. The server runs with ``--workers N`` (default:
    this machine's cores: one Python process uses one core for its runs) and, for
    comparison, with one worker. Three baselines, because two things differ
    besides HTTP: ``agent serve`` runs on uvloop, while the Python API runs on whatever
    loop its caller has (asyncio's own, from ``asyncio.run``, or uvloop); and HTTP runs
    start as the server accepts them (over about a second for 500), not all at once —
    and the same runs started all at once cost the API less CPU each (more work per
    wake-up). So: the API on asyncio's loop, all at once; on uvloop, all at once; and on
    uvloop with each run started when the one-worker server accepted it in the batch
    just before (same loop, same arrivals: what HTTP itself costs). Three rounds, medians
    compared (each batch's ratio shown too). Goal: ≤ 1.10.
(b) **Event latency** on the ``instant`` profile: the simulated model writes the time at
    which it answered into its answer; the client reads it from the ``step`` event it
    receives. p50/p99 over three rounds of N runs made by 4 clients, each starting its next
    run when its last one ended (a burst of N runs at once on 2 cores measures CPU queueing instead:
    reported too, as ``burst``). Goal: p99 ≤ 50 ms.
(c) **Memory per idle SSE connection**: K listeners (1,000; 200 with ``--quick``) on a
    run paused for approval (its stream stays open), in a fresh server; the RSS of its
    processes before and after, divided by K.

(b) and (c) use ``--workers N``. The server is ``agent serve`` in a child process (SQLite
store in a temp folder; its workers are its children, and its CPU and memory are theirs
too), the simulator another child, the client this process: on a 2-core machine the
HTTP side shares the cores with its client and the simulator. Both sides run with the
garbage-collector settings of ``agent serve`` (:func:`agent.tune_gc`). ``--json`` prints
one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import tune_gc
from bench._common import SimChild

_run = uvloop.run
"""The client's loop: the load generator shares the machine, so it should cost little."""
_TS = re.compile(r"ts:(\d+\.\d+)")
REPS = 3
"""Batches each way in (a), alternating, and paced rounds in (b): this machine's speed
varies from one batch to the next by more than the difference being measured."""


def policy(request: Any) -> str:
    """The simulated model (in the simulator's child process)."""
    if "[approve]" in request.prompt:
        return (
            '<tool_call>\n{"name": "http_request", "arguments": {"url": "http://x/"}}\n</tool_call>'
        )
    return f"ts:{time.time():.6f} The answer is forty-two, as the tools showed earlier today."


def _tasks(folder: Path) -> list[Path]:
    (folder / "ws").mkdir()
    plain = {"name": "bench", "input": "What is the answer?", "workspace": "ws"}
    paused = {
        "name": "bench-approve",
        "input": "[approve] fetch it",
        "workspace": "ws",
        "tools": {"enabled": ["http_request"], "http": {"allowed_hosts": ["x"]}},
        "approval": {"require": "all"},
    }
    paths = []
    for body in (plain, paused):
        path = folder / f"{body['name']}.yaml"
        path.write_text(yaml.safe_dump(body))
        paths.append(path)
    return paths


class ServeChild:
    """``agent serve`` (``--workers``) in a child process."""

    def __init__(self, tasks: list[Path], model_url: str, store: Path, workers: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [sys.executable, "-m", "agent.cli", "serve", *map(str, tasks)]
        args += ["--model-url", model_url, "--store", str(store), "--port", str(self.port)]
        args += ["--max-runs", "100000", "--rate", "1000000", "--burst", "1000000"]
        args += ["--log-level", "warning", "--workers", str(workers)]
        self.proc = subprocess.Popen(args, cwd=store.parent)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("agent serve did not start")
            time.sleep(0.1)
        if workers > 1:  # /readyz answered from one worker: wait for the others too
            while len(self._pids()) <= workers:
                time.sleep(0.1)
            time.sleep(2.0)

    def _pids(self) -> list[int]:
        """The server's process and its descendants (the workers)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat.parent.name))
        pids, i = [self.proc.pid], 0
        while i < len(pids):
            pids += children.get(pids[i], [])
            i += 1
        return pids

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server's processes so far."""
        total = 0
        for pid in self._pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        """Resident memory of the server's processes."""
        total = 0
        for pid in self._pids():
            with contextlib.suppress(OSError, TypeError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(re.search(r"VmRSS:\s+(\d+)", status)[1])
        return total

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Client:
    """A minimal HTTP/1.1 client on asyncio streams: the load generator should cost the
    shared CPU as little as possible (httpx parses each SSE line in Python)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)

    async def post_run(self, task: str) -> str:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps({"task": task}).encode()
        writer.write(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        response = await reader.read()
        writer.close()
        head, _, payload = response.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 202"):
            raise RuntimeError(f"POST /v1/runs: {response[:300]!r}")
        return json.loads(payload)["run_id"]

    async def follow(self, run_id: str, latencies: list[float]) -> str:
        """Read the run's SSE stream until its final event; its status."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        kind = b""
        try:
            while line := await reader.readline():
                if line.startswith(b"event: "):
                    kind = line[7:].strip()
                elif line.startswith(b"data: ") and kind in (b"step", b"final"):
                    if kind == b"step" and (m := _TS.search(line.decode())):
                        latencies.append(time.time() - float(m[1]))
                    if kind == b"final":
                        return json.loads(line[6:])["result"]["status"]
        finally:
            writer.close()
        return "unterminated"


async def _one_over_http(
    client: _Client, task: str, latencies: list[float], accepted: list[float] | None = None
) -> str:
    run_id = await client.post_run(task)
    if accepted is not None:
        accepted.append(time.perf_counter())
    return await client.follow(run_id, latencies)


async def _over_http(url: str, n: int, task: str = "bench") -> tuple[float, list, list, list]:
    """``n`` runs at once: wall, event latencies, statuses, and when each run was accepted
    (seconds after the first submission)."""
    latencies: list[float] = []
    accepted: list[float] = []
    client = _Client(url)
    start = time.perf_counter()
    statuses = await asyncio.gather(
        *(_one_over_http(client, task, latencies, accepted) for _ in range(n))
    )
    return time.perf_counter() - start, latencies, statuses, [t - start for t in accepted]


async def _paced(url: str, n: int, clients: int = 4) -> list[float]:
    latencies: list[float] = []
    client = _Client(url)

    async def worker(count: int) -> None:
        for _ in range(count):
            await _one_over_http(client, "bench", latencies)

    await asyncio.gather(*(worker(n // clients) for _ in range(clients)))
    return latencies


async def _api_batch(
    task: Path, sim_url: str, n: int, starts: list[float] | None = None
) -> tuple[float, float, list]:
    """``n`` runs through ``Agent.run`` on a warm agent: wall, CPU, statuses. All at once,
    or run i at ``starts[i]`` seconds (when the server accepted the i-th run over HTTP)."""
    from agent import Agent
    from agent.task import load_task

    async def run_at(agent: Agent, delay: float) -> Any:
        await asyncio.sleep(delay)
        return await agent.run()

    loaded = load_task(task).model_copy(update={"store": str(task.parent / "api")})
    async with Agent.from_task(loaded, model_url=sim_url) as agent:
        await asyncio.gather(*(agent.run() for _ in range(5)))  # warm: imports, connections
        start, cpu = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(run_at(agent, t) for t in starts or [0.0] * n))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, [r.status for r in results]


BASELINES = ("api", "api_uvloop", "api_paced")
"""The Python API on asyncio's own loop and on uvloop, all runs at once; and on uvloop
with each run started when the one-worker server had accepted it in the batch before."""


def _throughput(
    task: Path, sim_url: str, servers: dict[str, ServeChild], n: int, reps: int
) -> dict:
    """``reps`` rounds of ``n`` runs over HTTP to each server, then through each baseline;
    each batch on a loop of its own. Walls and CPU of each."""
    kinds = (*servers, *BASELINES)
    out: dict[str, list] = {key: [] for kind in kinds for key in (kind, f"{kind}_cpu")}
    out["status"] = []
    for server in servers.values():
        _run(_over_http(server.url, 20))  # warm the server as the agents are warmed
    for _ in range(reps):
        for kind, server in servers.items():
            before = server.cpu_s()
            wall, _, status, accepted = _run(_over_http(server.url, n))
            out[kind].append(wall)
            out[f"{kind}_cpu"].append(server.cpu_s() - before)
            out["status"] += status
            if kind == "http_1":
                arrivals = sorted(accepted)
        for key, run, starts in (
            ("api", asyncio.run, None),
            ("api_uvloop", uvloop.run, None),
            ("api_paced", uvloop.run, arrivals),
        ):
            wall, cpu, status = run(_api_batch(task, sim_url, n, starts))
            out[key].append(wall)
            out[f"{key}_cpu"].append(cpu)
            out["status"] += status
    return out


async def _idle_memory(server: ServeChild, k: int) -> float:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        run = (await client.post("/v1/runs/wait", json={"task": "bench-approve"})).json()
        assert run["status"] == "awaiting_approval", run
        await asyncio.sleep(1.0)
        before = server.rss_kib()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as many:
            streams = [many.stream("GET", f"/v1/runs/{run['run_id']}/events") for _ in range(k)]
            opened = [await s.__aenter__() for s in streams]
            await asyncio.sleep(2.0)
            after = server.rss_kib()
            for s in streams:
                await s.__aexit__(None, None, None)
        assert all(r.status_code == 200 for r in opened)
    return (after - before) / k


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print(out: dict[str, Any]) -> None:
    w = out["workers"]
    print(f"{'runs (h200 profile)':<44}{out['runs']}")
    print(f"{f'HTTP + SSE listener, {w} workers (median)':<44}{out['http_wall_s']:.2f} s, "
          f"server CPU {out['server_cpu_ms_per_run']} ms a run")  # fmt: skip
    print(f"{'HTTP + SSE listener, 1 worker':<44}{out['http_1_wall_s']:.2f} s, "
          f"server CPU {out['server_1_cpu_ms_per_run']} ms a run")  # fmt: skip
    for suffix, name in (
        ("", "Python API, asyncio, all at once"),
        ("_uvloop", "Python API, uvloop, all at once"),
        ("_paced", "Python API, uvloop, as 1 worker accepted"),
    ):
        print(f"{name:<44}{out[f'api{suffix}_wall_s']:.2f} s, "
              f"CPU {out[f'api{suffix}_cpu_ms_per_run']} ms a run")  # fmt: skip
    for key, name in (
        ("", f"ratio {w} workers / API (goal <= 1.10)"),
        ("_uvloop", f"ratio {w} workers / API on uvloop"),
        ("_1", "ratio 1 worker / API"),
        ("_1_paced", "ratio 1 worker / API, same arrivals"),
    ):
        print(f"{name:<44}{out[f'ratio{key}']:.3f}"
              f"  (each batch: {', '.join(map(str, out[f'ratios{key}']))})")  # fmt: skip
    print(f"{'event latency p50 (instant)':<44}{out['event_latency_p50_ms']} ms")
    print(f"{'event latency p99 (goal <= 50 ms)':<44}{out['event_latency_p99_ms']} ms")
    print(f"{'  (all N runs at once: p50, p99)':<44}{out['burst_latency_p50_ms']} ms, "
          f"{out['burst_latency_p99_ms']} ms")  # fmt: skip
    print(f"{'memory per idle SSE connection':<44}{out['idle_sse_kib_per_connection']} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (under a minute)")
    parser.add_argument("--json", action="store_true", help="one JSON object on the last line")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="agent serve --workers"
    )
    args = parser.parse_args()
    tune_gc()  # as `agent serve` does for the server
    n, k = (100, 200) if args.quick else (500, 1000)
    out: dict[str, Any] = {"runs": n, "reps": REPS, "idle_connections": k, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tasks = _tasks(tmp_path)
        with contextlib.ExitStack() as stack:
            sim = stack.enter_context(SimChild("bench.serve:policy", profile="h200"))
            servers = {
                kind: ServeChild(tasks, sim.url, tmp_path / f"serve-{kind}", workers)
                for kind, workers in (("http", args.workers), ("http_1", 1))
            }
            for server in servers.values():
                stack.callback(server.close)
            runs = _throughput(tasks[0], sim.url, servers, n, REPS)
        with SimChild("bench.serve:policy", profile="instant") as sim:
            server = ServeChild(tasks, sim.url, tmp_path / "serve-instant", args.workers)
            try:
                _run(_over_http(server.url, 10))  # warm up: imports, first connections
                latencies = [t for _ in range(REPS) for t in _run(_paced(server.url, n))]
                _, burst, _, _ = _run(_over_http(server.url, n))
            finally:
                server.close()
            # a fresh heap
            server = ServeChild(tasks, sim.url, tmp_path / "serve-idle", args.workers)
            try:
                per_conn = _run(_idle_memory(server, k))
            finally:
                server.close()
    assert set(runs["status"]) == {"done"}, runs["status"]

    for kind in ("http", "http_1", *BASELINES):
        out[f"{kind}_wall_s"] = round(statistics.median(runs[kind]), 3)
        cpu = round(statistics.median(runs[f"{kind}_cpu"]) / n * 1000, 1)
        out[f"server{kind.removeprefix('http')}_cpu_ms_per_run" if kind.startswith("http")
            else f"{kind}_cpu_ms_per_run"] = cpu  # fmt: skip
    for key, http, api in (
        ("", "http", "api"),
        ("_uvloop", "http", "api_uvloop"),
        ("_1", "http_1", "api"),
        ("_1_paced", "http_1", "api_paced"),
    ):
        ratio = statistics.median(runs[http]) / statistics.median(runs[api])
        out[f"ratio{key}"] = round(ratio, 3)
        out[f"ratios{key}"] = [round(h / a, 3) for h, a in zip(runs[http], runs[api], strict=True)]
    out |= {
        "event_latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "event_latency_p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "burst_latency_p50_ms": round(statistics.median(burst) * 1000, 2),
        "burst_latency_p99_ms": round(_percentile(burst, 0.99) * 1000, 2),
        "idle_sse_kib_per_connection": round(per_conn, 1),
    }
    _print(out)
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
