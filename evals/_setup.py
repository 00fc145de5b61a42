"""What an eval starts once and shares: services, recording proxy, simulator, backend,
agents; and the plan of its samples.

:class:`Env` owns them for the length of one ``run_suite`` (closed by its exit stack).

>>> _free_port() > 0
True
"""

from __future__ import annotations

import hashlib
import socket
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import agent
from agent.errors import BackendUnavailable, ConfigError
from agent.task import ServiceSpec, Task
from evals._execute import Sample
from evals.results import git_revision
from evals.sim_policy import SuitePolicy, render_script
from evals.suite import Case, Suite, canonical

__all__ = ["Env", "config", "plan", "start"]


class Env:
    """The eval's shared pieces: backend, agents by configuration, services, simulator."""

    def __init__(self, suite: Suite, options: Any) -> None:
        self.suite, self.options = suite, options
        self.recorder: Any = None
        self.sim: Any = None
        self.policy: SuitePolicy | None = None
        self.backend: Any = None
        self.server: dict[str, Any] = {}
        self.tasks: dict[str, Task] = {}
        self.workspaces: dict[str, Path] = {}
        self._agents: dict[tuple[str, int], Any] = {}
        self._extra = {t.name: t for t in map(_as_tool, options.extra_tools)}

    def policy_for(self, samples: list[Sample]) -> None:
        """Give the simulator every sample's script (simulated evals only)."""
        if self.policy is None:
            return
        for s in samples:
            script = s.case.trial_script(s.trial)
            if script is None:
                raise ConfigError(
                    f"case {s.case.id!r} has no script: running on the simulator needs "
                    "script: (or scripts:) in every case"
                )
            self.policy.add(s.turns[0], s.seed, render_script(script, s.values), s.case.id)

    async def connect(self, stack: AsyncExitStack) -> None:
        """The shared backend, after checking the server answers (exit 3 when not)."""
        from agent.llm.vllm import VLLMBackend

        model = self.tasks[next(iter(self.tasks))].model
        urls = [self.sim.url] if self.sim is not None else model.urls(self.options.model_url)
        self.backend = VLLMBackend(
            urls, model=model.name, mode=model.mode, timeout_s=model.timeout_s
        )
        stack.push_async_callback(self.backend.aclose)
        self.server = await _server_info(urls[0])

    def agent_for(self, s: Sample, workspace: Path | None) -> Any:
        """The agent of the sample's configuration and trial (its own with a workspace)."""
        if workspace is not None:
            return self._build(self.tasks[s.agent_key], s.seed, workspace)
        key = (s.agent_key, s.trial)
        if key not in self._agents:
            self._agents[key] = self._build(self.tasks[s.agent_key], s.seed, None)
        return self._agents[key]

    def _build(self, task: Task, seed: int, workspace: Path | None) -> Any:
        policies = task.tool_policies()
        if workspace is not None:
            policies = policies.model_copy(update={"workspace": workspace})
        tools = [self._extra.get(name, name) for name in task.tools.enabled]
        # The backend is shared and closed by the eval; these agents are never aclose()d
        # (that would close it), and with store=None they hold nothing else to close.
        built = agent.Agent(
            self.backend,
            tools=tools,
            system=task.system,
            output_schema=task.output_schema,
            limits=task.limits,
            policies=policies,
            sampling=task.model.sampling.model_copy(update={"seed": seed}),
            approval=task.approval.rule(),
            store=None,
            constrained_tool_calls=task.model.constrained_tool_calls,
            constrained_repair=task.model.constrained_repair,
        )
        built.durability = "exit"
        return built

    def prompt_hashes(self) -> dict[str, str]:
        """sha256 of each configuration's first prompt around a placeholder input."""
        out = {}
        for key, task in self.tasks.items():
            text = self._build(task, 0, None).first_prompt("{input}")
            out[key] = hashlib.sha256(text.encode()).hexdigest()
        return out


def _as_tool(obj: Any) -> Any:
    from tools.base import as_tool

    return as_tool(obj)


async def start(suite: Suite, options: Any, stack: AsyncExitStack) -> Env:
    """Start the suite's services, the recording proxy and (simulated) the server."""
    env = Env(suite, options)
    recorded = {}
    for svc in suite.services:
        port = str(_free_port())
        spec = ServiceSpec(
            name=svc.name,
            command=[c.replace("{port}", port) for c in svc.command],
            cwd=svc.cwd,
            env={k: str(v).replace("{port}", port) for k, v in svc.env.items()},
            ready_url=svc.ready_url.replace("{port}", port) if svc.ready_url else None,
            ready_timeout_s=svc.ready_timeout_s,
        )
        from agent.services import run_services

        await stack.enter_async_context(run_services([spec], suite.base_dir))
        if svc.url:
            recorded[svc.name] = svc.url.replace("{port}", port)
    if recorded:
        from evals._recording import Recorder

        env.recorder = await stack.enter_async_context(Recorder(recorded))
    if options.simulated:
        from agent.sim import FunctionPolicy, SimConfig
        from agent.testing import arun_sim

        env.policy = SuitePolicy()
        config = SimConfig(profile=suite.sim.profile, speed=suite.sim.speed)
        env.sim = await stack.enter_async_context(arun_sim(FunctionPolicy(env.policy), config))
    return env


def plan(suite: Suite, cases: list[Case], trials: int, env: Env) -> list[Sample]:
    """Every sample, trial-major; each case's configuration resolved once."""
    resolved = {case.id: _resolve(suite, case, env) for case in cases}
    samples = []
    for trial in range(trials):
        for case in cases:
            samples.append(_sample(suite, case, trial, len(samples), env, *resolved[case.id]))
    return samples


def _resolve(suite: Suite, case: Case, env: Env) -> tuple[str, Task, list[str]]:
    """The case's configuration, its key (cases with equal ones share agents), setup SQL."""
    task, setup = suite.case_task(case)
    key = hashlib.sha256(canonical([task.model_dump(mode="json"), setup]).encode()).hexdigest()[:12]
    env.tasks.setdefault(key, task)
    env.workspaces.setdefault(key, task.workspace_dir())
    return key, env.tasks[key], setup


def _sample(
    suite: Suite,
    case: Case,
    trial: int,
    index: int,
    env: Env,
    key: str,
    task: Task,
    setup: list[str],
) -> Sample:
    database = str(task.tools.sql.database) if task.tools.sql.database else None
    if setup and database is None:
        raise ConfigError(
            f"case {case.id!r}: setup_sql needs tools.sql.database (the file it builds)"
        )
    token = f"{case.id}.t{trial}"
    values = {str(k): str(v) for k, v in {**suite.vars, **case.vars}.items()}
    if env.recorder is not None:
        values |= {f"{name}_url": env.recorder.url(name, token) for name in env.recorder.services}
    files = task.tools.files
    return Sample(
        case=case,
        trial=trial,
        index=index,
        key=f"{case.id}#{trial}",
        token=token,
        turns=[t.format_map(values) for t in case.turns],
        seed=suite.seed + trial,
        category=case.category or suite.title,
        agent_key=key,
        isolate=files.allow_write or not task.tools.sql.read_only or bool(setup),
        setup_sql=setup,
        database=database,
        values=values,
    )


def config(
    suite: Suite, options: Any, env: Env, samples: list[Sample], trials: int, eval_id: str
) -> dict[str, Any]:
    """What ``config.json`` records about an eval (a version is added by the folder)."""
    hashes = env.prompt_hashes()
    return {
        "eval_id": eval_id,
        "kind": "suite",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agent_version": agent.__version__,
        "suite": {"name": suite.title, "path": str(suite.path), "sha256": suite.digest},
        "model": {
            "urls": env.backend.urls,
            "name": env.server.get("model"),
            "mode": env.tasks[next(iter(env.tasks))].model.mode,
            "simulated": env.sim is not None,
            "sim_profile": suite.sim.profile if env.sim is not None else None,
        },
        "server_version": env.server.get("version"),
        "git": git_revision(suite.base_dir),
        "agent_git": git_revision(Path(agent.__file__).parent),
        "prompt_template_hash": hashlib.sha256(
            canonical(sorted(hashes.values())).encode()
        ).hexdigest(),
        "prompt_templates": hashes,
        "options": {
            "trials": trials,
            "concurrency": options.concurrency or suite.concurrency,
            "timeout_s": options.timeout_s or suite.timeout_s,
            "retries": options.retries,
            "seed": suite.seed,
            "limit": options.limit,
            "ids": list(options.ids),
            "tags": list(options.tags),
        },
        "cases": sorted({s.case.id for s in samples}),
        "samples_planned": len(samples),
    }


async def _server_info(url: str) -> dict[str, Any]:
    """The server's version and model, or BackendUnavailable naming the URL."""
    import httpx

    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        try:
            models = (await client.get(f"{url}/v1/models")).json()
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"cannot reach the model server at {url} ({type(exc).__name__}); start vLLM "
                "(vllm serve NousResearch/Hermes-3-Llama-3.1-8B) or run on the simulator (--sim)",
                url=url,
            ) from None
        except ValueError:
            models = {}
        try:
            version = (await client.get(f"{url}/version")).json().get("version")
        except (httpx.HTTPError, ValueError, AttributeError):
            version = None
    data = models.get("data") or [{}]
    return {"version": version, "model": data[0].get("id")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
