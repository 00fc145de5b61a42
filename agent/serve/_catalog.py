"""The tasks a server offers, by name, and the narrowing of one for a run.

Tasks come from the files given on the command line and from a tasks folder
(``DIR/*.yaml`` and ``DIR/*/task.yaml``). A task is addressed by its ``name`` (the file's
stem, or its folder's name for ``task.yaml``, when it has none), matched against a dict
of what was loaded at start: a name is never turned into a path, so ``../x`` can only be
"no such task". Every task shares the server's store, so every run is visible to every
route and replica.

A client may narrow a task for one run (:func:`narrow`): lower limits, fewer tools,
fewer hosts or methods, no writes, more stop strings, no tools (``tool_choice: none``) or
a call required where the model would choose, its own system prompt, input or output
schema. It can never widen one: a higher limit, a tool the task does not enable, a host
or method it does not allow, writes it does not permit, or a tool choice where the task
fixed one are a 403 that names the field. The workspace is not a client's to choose.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

from agent.errors import ConfigError
from agent.serve._errors import HTTPError
from agent.serve._models import InlineTask, RunOptions
from agent.task import Task, load_task

__all__ = ["TaskCatalog", "narrow"]

_log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TaskCatalog:
    """Tasks by name, each with one open :class:`agent.Agent` shared by its runs."""

    def __init__(
        self,
        files: list[Path],
        folder: Path | None,
        *,
        store: str,
        model_url: str | None,
    ) -> None:
        self.store, self.model_url = store, model_url
        self.tasks: dict[str, Task] = {}
        for path in [*files, *_task_files(folder)]:
            self._add(path, explicit=path in files)
        self._agents: dict[str, Any] = {}
        self._opening = asyncio.Lock()  # one Agent per task, opened once
        self.tracer: Any = None

    def _add(self, path: Path, *, explicit: bool) -> None:
        try:
            task = load_task(path)
        except ConfigError:
            if explicit:
                raise
            _log.warning("skipping %s: not a valid task file", path)
            return
        name = task.name or (path.parent.name if path.stem == "task" else path.stem)
        if not _NAME.match(name):
            raise ConfigError(
                f"{path}: task name {name!r} cannot be served: use letters, digits, '.', '_' "
                "and '-' (at most 64), starting with a letter or digit"
            )
        if name in self.tasks:
            raise ConfigError(f"{path}: a task named {name!r} is already served")
        self.tasks[name] = task.model_copy(update={"name": name, "store": self.store})
        # model_copy drops private attributes that say where the file was: keep them.
        self.tasks[name]._base_dir, self.tasks[name]._path = task.base_dir, task.path

    def get(self, name: str) -> Task:
        task = self.tasks.get(name) if isinstance(name, str) else None
        if task is None:
            raise HTTPError(404, "task_not_found", f"no task named {name!r} (see GET /v1/tasks)")
        return task

    async def agent(self, name: str) -> Any:
        """The task's agent, opened on first use."""
        if name in self._agents:
            return self._agents[name]
        async with self._opening:
            if name not in self._agents:
                from agent.api import Agent

                agent = Agent.from_task(self.get(name), model_url=self.model_url)
                agent.tracer = self.tracer
                await agent.open()
                self._agents[name] = agent
        return self._agents[name]

    async def aclose(self) -> None:
        for agent in self._agents.values():
            await agent.aclose()
        self._agents.clear()


def _task_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise ConfigError(f"--tasks {folder}: not a folder")
    found = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*/task.yaml")])
    return [p for p in found if p.is_file()]


def narrow(agent: Any, task: Task, options: RunOptions, inline: InlineTask | None) -> Any:
    """``agent`` for one run with the client's narrowing applied (or itself when none);
    HTTPError 403 for anything that would widen the task."""
    changes: dict[str, Any] = {}
    if options.limits is not None:
        changes["limits"] = _lower(
            task.limits, options.limits.model_dump(exclude_none=True), "limits"
        )
    if options.sampling is not None:
        given = options.sampling.model_dump(exclude_none=True)
        _lower(
            task.model.sampling, {k: v for k, v in given.items() if k == "max_tokens"}, "sampling"
        )
        if "stop" in given:  # added to the task's: a client cannot lift one of them
            given["stop"] = [*(task.model.sampling.stop or ()), *given["stop"]]
        changes["sampling"] = task.model.sampling.model_copy(update=given)
    if options.tools is not None:
        extra = [t for t in options.tools if t not in task.tools.enabled]
        if extra:
            raise _widen(f"options.tools: {extra} not enabled by task {task.name!r}")
        changes["tools"] = agent.tools.select(options.tools)
    tools = options.tools if options.tools is not None else task.tools.enabled
    choice = _tool_choice(task, options.tool_choice or "auto", tools)
    if choice != task.model.tool_choice:
        changes["tool_choice"] = choice
    if options.policies is not None:
        changes["policies"] = _policies(
            agent.policies, options.policies.model_dump(exclude_none=True)
        )
    if inline is not None:
        changes |= _inline(inline)
    return agent.derive(**changes) if changes else agent


def _lower(current: Any, given: dict[str, Any], where: str) -> Any:
    for key, value in given.items():
        limit = getattr(current, key)
        if limit is not None and value > limit:
            raise _widen(f"options.{where}.{key}: {value} is above the task's {limit}")
    return current.model_copy(update=given)


def _tool_choice(task: Task, choice: str, tools: list[str]) -> str:
    """``choice`` for a run of ``task`` with ``tools``: ``auto`` keeps the task's own;
    ``none`` always narrows; requiring a call (any, or a named one) only where the task
    leaves it to the model. A named tool the run does not have is refused."""
    own = task.model.tool_choice
    if choice == "auto":
        choice = own
    elif choice != "none" and choice != own and own != "auto":
        raise _widen(
            f"options.tool_choice: {choice!r} where task {task.name!r} sets {own!r} (a run "
            "may only choose none)"
        )
    if choice == "required" and not tools:
        raise HTTPError(422, "invalid_request", "options.tool_choice: required, with no tools")
    if choice not in ("auto", "required", "none") and choice not in tools:
        if choice == own:
            raise HTTPError(
                422, "invalid_request",
                f"options.tools: leaves out {choice!r}, which task {task.name!r} requires a "
                "call of (its model.tool_choice)",
            )  # fmt: skip
        raise _widen(
            f"options.tool_choice: {choice!r} is not one of this run's tools {sorted(tools)}"
        )
    return choice


def _policies(policies: Any, given: dict[str, Any]) -> Any:
    http, files, sql = policies.http, policies.files, policies.sql
    if "allowed_hosts" in given:
        extra = [h for h in given["allowed_hosts"] if h not in http.allowed_hosts]
        if extra:
            raise _widen(f"options.policies.allowed_hosts: {extra} not allowed by the task")
        http = http.model_copy(update={"allowed_hosts": given["allowed_hosts"]})
    if "allowed_methods" in given:
        methods = [m.upper() for m in given["allowed_methods"]]
        extra = [m for m in methods if m not in http.allowed_methods]
        if extra:
            raise _widen(f"options.policies.allowed_methods: {extra} not allowed by the task")
        http = http.model_copy(update={"allowed_methods": methods})
    if "allow_write" in given:
        files = files.model_copy(update={"allow_write": False})
    if "sql_read_only" in given:
        sql = sql.model_copy(update={"read_only": True})
    return policies.model_copy(update={"http": http, "files": files, "sql": sql})


def _inline(inline: InlineTask) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if inline.system is not None:
        changes["system"] = inline.system
    if inline.output_schema is not None:
        try:
            Task(input="x", output_schema=inline.output_schema)
        except Exception:
            raise HTTPError(
                422, "invalid_request", "task.output_schema: not a valid JSON Schema"
            ) from None
        changes["output_schema"] = inline.output_schema
    return changes


def _widen(message: str) -> HTTPError:
    return HTTPError(403, "policy_widening", message + ": a run can only narrow its task")
