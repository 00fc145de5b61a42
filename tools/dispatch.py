"""The dispatcher: validate tool calls, run them under limits, and shape their results.

``Dispatcher(tools, policies, run_id=..., artifacts_dir=...)`` takes the model's calls and
returns one `ToolResult` per call, in call order, never raising for a tool's failure:

1. every call is checked first (known tool, arguments valid against its JSON Schema with
   ``jsonschema``); a bad one becomes an error result naming the bad field, the expected
   schema and, for an unknown tool, the closest name;
2. valid calls run concurrently (``policies.max_concurrency``), each under the hard
   timeout ``policies.sandbox.call_timeout_s``:
   - in-process async tools are cancelled;
   - in-process sync tools run in a daemon thread, which Python cannot kill: on timeout
     the result is abandoned and the thread runs on. Use ``sandbox="process"`` for sync
     tools that may hang or run away (the worker is killed and restarted instead);
3. results longer than ``policies.max_result_chars`` are cut with an explicit note, the
   full text kept as an artifact file (``artifacts_dir/ID.txt``, `Dispatcher.read_artifact`);
4. exceptions become error results (type and message, never a traceback), with absolute
   paths outside the workspace and secret-looking environment values scrubbed;
5. lone surrogates (a JSON body's ``"\\ud800"``) become U+FFFD in results: they cannot be
   encoded as UTF-8, so they would break the trace, the checkpoint and the request to the
   model. In a call's arguments they make the call an argument error (nothing could pass
   them on intact: not the worker pipe, the CLI's output or a log).

>>> import asyncio, tempfile
>>> from agent.types import ToolCall
>>> from tools.base import tool
>>> from tools.policy import ToolPolicies
>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add.'''
...     return a + b
>>> async def demo():
...     async with Dispatcher([add], ToolPolicies(), run_id="r",
...                           artifacts_dir=Path(tempfile.mkdtemp())) as d:
...         return (await d.dispatch([ToolCall("add", {"a": 1, "b": 2})]))[0].content
>>> asyncio.run(demo())
'3'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from agent.errors import ToolArgumentError, ToolError, ToolExecutionError, ToolTimeout
from agent.types import ToolCall, ToolResult, ToolSpec
from tools._worker import unencodable, valid_text
from tools.base import Tool, ToolContext, render_result
from tools.policy import ToolPolicies
from tools.registry import ToolRegistry
from tools.sandbox import RunSandbox

__all__ = ["Dispatcher"]

_ARTIFACT_ID = re.compile(r"^art_[0-9a-f]{16}$")


@dataclass
class _Prepared:
    call: ToolCall
    tool: Tool


class Dispatcher:
    """Runs one run's tool calls; owns its sandbox worker. Use as ``async with``."""

    def __init__(
        self,
        tools: ToolRegistry | Iterable[Any],
        policies: ToolPolicies,
        *,
        run_id: str,
        artifacts_dir: Path,
    ) -> None:
        self.registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.policies = policies
        self.run_id = run_id
        self.artifacts_dir = Path(artifacts_dir)
        self.workspace = Path(policies.workspace).resolve()
        self._validators = {
            t.name: jsonschema.Draft202012Validator(t.parameters) for t in self.registry
        }
        self._sem = asyncio.Semaphore(policies.max_concurrency)
        self._ctx = ToolContext(run_id=run_id, workspace=self.workspace, policies=policies)
        self._scrub = _Scrubber(self.workspace)
        by_name = {t.name: t for t in self.registry}
        self.worker = RunSandbox(by_name, policies, run_id=run_id)

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def specs(self) -> list[ToolSpec]:
        """What the model sees of every tool."""
        return self.registry.specs()

    async def dispatch(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Validate all calls, then run the valid ones concurrently; results in call order."""
        prepared = [self._prepare(c) for c in calls]
        return list(await asyncio.gather(*(self._run(p) for p in prepared)))

    async def call(self, call: ToolCall) -> ToolResult:
        """Validate and run one call (early dispatch while the model is still generating)."""
        return await self._run(self._prepare(call))

    def read_artifact(self, artifact_id: str) -> str:
        """The full text of a truncated result; `KeyError` for an unknown id."""
        path = self.artifacts_dir / f"{artifact_id}.txt"
        if not _ARTIFACT_ID.fullmatch(artifact_id) or not path.is_file():
            raise KeyError(f"unknown artifact {artifact_id!r}")
        return path.read_text(encoding="utf-8")

    async def aclose(self) -> None:
        """Stop the sandbox worker. In-process threads still running cannot be stopped."""
        await self.worker.aclose()

    # -- internals ------------------------------------------------------------------------
    def _prepare(self, call: ToolCall) -> _Prepared | ToolResult:
        bad = unencodable(call.arguments)
        if bad is not None or valid_text(call.name) != call.name:
            where = "the tool name" if bad is None else valid_text(bad)
            return self._error(call, ToolArgumentError(
                f"{where} holds a lone surrogate (like \\ud800), which is not valid Unicode; "
                "send valid text (drop or replace that character)"
            ))  # fmt: skip
        if call.name not in self.registry:
            return self._error(call, ToolArgumentError(self._unknown_tool(call.name)))
        tool = self.registry.get(call.name)
        problems = _schema_problems(self._validators[tool.name], call.arguments)
        if problems:
            text = (
                f"Invalid arguments for tool {tool.name!r}:\n{problems}\n"
                f"Expected arguments schema: {json.dumps(tool.parameters)}"
            )
            return self._error(call, ToolArgumentError(text))
        return _Prepared(call, tool)

    def _unknown_tool(self, name: str) -> str:
        close = self.registry.closest(name)
        text = f"Unknown tool {name!r}."
        if close:
            schema = json.dumps(self.registry.get(close).parameters)
            text += f" Did you mean {close!r}? Its arguments schema: {schema}."
        return text + f" Available tools: {', '.join(self.registry.names()) or '(none)'}."

    async def _run(self, prep: _Prepared | ToolResult) -> ToolResult:
        if isinstance(prep, ToolResult):
            return prep
        call, tool = prep.call, prep.tool
        kind = self.worker.kind if tool.sandbox == "process" else "none"
        async with self._sem:
            start = time.perf_counter()
            error: ToolError | None = None
            try:
                text = await self._execute(tool, call)
            except ToolError as exc:
                error, text = exc, f"{type(exc).__name__}: {self._scrub(str(exc))}"
            except Exception as exc:
                error = ToolExecutionError(self._scrub(f"{type(exc).__name__}: {exc}"))
                text = f"ToolExecutionError: {error}"
            duration = time.perf_counter() - start
        content, artifact = await self._cap(valid_text(text))
        return ToolResult(
            call.id,
            call.name,
            "ok" if error is None else "error",
            content,
            error=None if error is None else error.tool_error,
            artifact_id=artifact,
            truncated=artifact is not None,
            duration_s=duration,
            sandbox=kind,
        )

    async def _execute(self, tool: Tool, call: ToolCall) -> str:
        if tool.sandbox == "process":
            return await self.worker.call(tool.name, call.arguments, call_id=call.id)
        ctx = ToolContext(
            run_id=self.run_id,
            call_id=call.id,
            workspace=self.workspace,
            policies=self.policies,
            state=self._ctx.state,
            lock=self._ctx.lock,
        )
        try:
            args, kwargs = tool.bind(call.arguments, ctx)
        except ValueError as exc:  # pydantic disagreed with a schema-valid value
            raise ToolArgumentError(f"Invalid arguments for tool {tool.name!r}: {exc}") from None
        timeout = self.policies.sandbox.call_timeout_s
        if tool.is_async:
            try:
                async with asyncio.timeout(timeout) as cm:
                    return render_result(await tool.fn(*args, **kwargs))
            except TimeoutError:
                if not cm.expired():
                    raise
                raise ToolTimeout(
                    f"{tool.name} did not finish within {timeout:g} s and was cancelled"
                ) from None
        return render_result(await _in_daemon_thread(tool, args, kwargs, timeout))

    async def _cap(self, text: str) -> tuple[str, str | None]:
        limit = self.policies.max_result_chars
        if len(text) <= limit:
            return text, None
        artifact = "art_" + secrets.token_hex(8)
        await asyncio.to_thread(self._save, artifact, text)
        note = (
            f"[truncated: showing {{n}} of {len(text)} characters; "
            f"full result saved as artifact {artifact}]"
        )
        shown = max(0, limit - len(note) - 8)
        return f"{text[:shown]}\n{note.format(n=shown)}", artifact

    def _save(self, artifact: str, text: str) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        (self.artifacts_dir / f"{artifact}.txt").write_text(text, encoding="utf-8")

    def _error(self, call: ToolCall, exc: ToolError) -> ToolResult:
        limit = self.policies.max_result_chars
        content = f"{type(exc).__name__}: {exc}"
        if len(content) > limit:  # a huge schema must not flood the context either
            content = content[: limit - 15] + " [truncated]"
        return ToolResult(call.id, call.name, "error", content, error=exc.tool_error)


async def _in_daemon_thread(
    tool: Tool, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float
) -> Any:
    """Run a sync tool in a daemon thread: a hung one is abandoned, and never blocks exit
    (a ThreadPoolExecutor would be joined at interpreter shutdown)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            (fut.set_result if ok else fut.set_exception)(value)

    def target() -> None:
        try:
            value, ok = tool.fn(*args, **kwargs), True
        except BaseException as exc:
            value, ok = exc, False
        # RuntimeError: the loop closed while we ran, so nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True).start()
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise ToolTimeout(
            f"{tool.name} did not finish within {timeout:g} s; its result is discarded"
        ) from None


def _schema_problems(validator: jsonschema.Draft202012Validator, args: Any) -> str:
    errors = sorted(validator.iter_errors(args), key=jsonschema.exceptions.relevance)
    lines = []
    for err in errors[:5]:
        where = "arguments" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path
        )
        msg = err.message if len(err.message) <= 300 else err.message[:300] + "…"
        lines.append(f"- at {where}: {msg}")
    return "\n".join(lines)


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|CRED|AUTH|COOKIE|SESSION|PRIVATE", re.I)
# An absolute path: after a non-path character, or after file:// (its slashes and colon
# would otherwise hide the path from the first lookbehind).
_ABS_PATH = re.compile(r"(?:(?<=file://)|(?<![\w./:~-]))/[^\s'\"`,;:()\[\]{}<>|]+")


class _Scrubber:
    """Removes secret-looking environment values and absolute host paths from error text.

    Paths inside the workspace are shown relative to it (the model can use them).
    """

    def __init__(self, workspace: Path) -> None:
        self.ws = str(workspace)
        self.secrets = sorted(
            {v for k, v in os.environ.items() if len(v) >= 6 and _SECRET_NAME.search(k)},
            key=len,
            reverse=True,
        )

    def __call__(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "[redacted]")
        return _ABS_PATH.sub(self._path, text)

    def _path(self, m: re.Match[str]) -> str:
        path = m.group(0)
        if path == self.ws or path.startswith(self.ws.rstrip("/") + "/"):
            return os.path.relpath(path, self.ws)
        return "<path>"
