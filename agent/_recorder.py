"""What one run leaves behind: its JSONL trace and its row in the run store.

The runner (``agent.api``) hands every event to :meth:`RunRecorder.event` and ends every
run through :meth:`RunRecorder.final`, so the trace and the row can never disagree on how
a run ended. With no store folder (``store=None``) nothing is written. An ``observer``
(:class:`agent.tracing.RunSpans`: OpenTelemetry spans) sees every event too, text deltas
included, and its trace id is recorded in the run's row.

Writes happen on the I/O thread (:mod:`agent._io`), in order, never on the event loop:
trace lines are queued as events pass (their JSON is made there too), and the row's
first and last writes are awaited, so when :meth:`RunRecorder.final` returns, the trace
holds every line and the row its outcome.

>>> RunRecorder.trace_path_for(Path(".agent"), "run_1")
PosixPath('.agent/traces/run_1.jsonl')
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

from agent._io import io, io_soon
from agent.errors import error_kind
from agent.events import Event, Final, StepFinished, to_dict
from agent.types import RunResult, RunStatus, Usage

__all__ = ["RunRecorder"]


class RunRecorder:
    """The trace writer and run-store row of one run. Use as a context manager."""

    API_TASK = "(python api)"
    """The task name of runs started from code without a task."""

    def __init__(
        self,
        run_id: str,
        folder: Path | None,
        runs: Any,
        *,
        task: str | None,
        task_path: Path | None,
        model_url: str | None,
        thread_id: str | None = None,
        observer: Any = None,
    ) -> None:
        self.run_id, self.runs, self.thread_id = run_id, runs, thread_id or run_id
        self.observer = observer
        self.trace_path = self.trace_path_for(folder, run_id)
        self._row = {
            "task": task or self.API_TASK,
            "task_path": task_path,
            "model_url": model_url,
            "thread_id": self.thread_id,
        }
        self._writer: Any = None
        self._previous_prompt = ""

    @staticmethod
    def trace_path_for(folder: Path | None, run_id: str) -> Path | None:
        return None if folder is None else folder / "traces" / f"{run_id}.jsonl"

    async def __aenter__(self) -> RunRecorder:
        if self.trace_path is not None:
            from agent.runs import TraceWriter

            self._writer = await io(TraceWriter, self.trace_path, run_id=self.run_id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            await io(self._writer.close)
        if self.observer is not None:
            self.observer.close()

    async def start(self, resumed: bool) -> None:
        """The run's row: created, or set back to ``running`` when it resumes (or when its
        process died before the first checkpoint, so it starts again under its id)."""
        if self.runs is not None:
            await io(self._start_row, resumed, getattr(self.observer, "trace_id", None))

    def _start_row(self, resumed: bool, trace_id: str | None) -> None:
        if resumed:
            try:
                self.runs.resume(self.run_id)
            except KeyError:  # resumed from a checkpoint whose row is gone: record it anew
                resumed = False
        if not resumed:
            try:
                self.runs.create(self.run_id, trace_path=str(self.trace_path), **self._row)
            except ValueError:  # its row exists: the process died before a first checkpoint
                self.runs.resume(self.run_id)
        if trace_id is not None:
            self.runs.update(self.run_id, trace_id=trace_id)

    def event(self, event: Event) -> None:
        """Queue one event for the trace (text deltas are in the step's output, whole)."""
        if self.observer is not None:
            self.observer.on_event(event)
        if self._writer is not None and event.kind != "text":
            io_soon(self._write, event)

    def _write(self, event: Event) -> None:
        """On the I/O thread: one event as trace lines (events are immutable values)."""
        if isinstance(event, StepFinished):  # a prompt delta, then the output without it
            output = dataclasses.asdict(event.generation)
            self._prompt(event.step, output.pop("prompt") or "")
            self._writer.write("model_output", step=event.step, **output)
            return
        record = to_dict(event)
        self._writer.write(record.pop("kind"), **record)

    def _prompt(self, step: int, prompt: str) -> None:
        # Prompts are append-only: keep only what each adds, so a long run's trace grows
        # linearly (agent.runs.prompt_texts rebuilds them whole).
        previous = self._previous_prompt
        prefix = len(previous) if previous and prompt.startswith(previous) else 0
        self._writer.write(
            "prompt", step=step, prefix_chars=prefix, text=prompt[prefix:], chars=len(prompt)
        )
        self._previous_prompt = prompt

    async def final(
        self,
        status: RunStatus,
        answer: Any,
        state: dict[str, Any],
        exc: BaseException | None = None,
    ) -> Final:
        """The run's ``Final`` event, traced and recorded in its row (``exc``: what ended
        a failed run); both written when this returns."""
        result = RunResult(
            run_id=self.run_id,
            thread_id=self.thread_id,
            status=status,
            answer=answer,
            steps=state.get("steps", 0),
            tool_calls=state.get("tool_calls", 0),
            usage=Usage(**state.get("usage", {})),
            limit=state.get("limit"),
            error=state.get("error"),
            error_kind=None if exc is None else error_kind(exc),
            error_type=None if exc is None else type(exc).__name__,
            trace_path=None if self.trace_path is None else str(self.trace_path),
        )
        final = Final(result)
        self.event(final)
        # After the queued trace lines (one thread, in order): awaiting it awaits them too.
        await io(self._finish_row, result)
        return final

    def _finish_row(self, result: RunResult) -> None:
        if self.runs is not None:
            self.runs.finish(
                self.run_id,
                status=result.status,
                answer=_answer_text(result.answer),
                steps=result.steps,
                tool_calls=result.tool_calls,
                usage=result.usage,
                error=result.error,
            )

    def interrupted(self) -> None:
        """The consumer stopped iterating, or the task was cancelled: not running any more."""
        if self.observer is not None:
            self.observer.interrupted()
        if self.runs is not None:  # from a `finally` that may be cancelled: queued, not awaited
            io_soon(self._interrupted_row)

    def _interrupted_row(self) -> None:
        with contextlib.suppress(Exception):
            self.runs.update(self.run_id, status="interrupted")


def _answer_text(answer: Any) -> str | None:
    if answer is None or isinstance(answer, str):
        return answer
    return json.dumps(answer, ensure_ascii=False)
