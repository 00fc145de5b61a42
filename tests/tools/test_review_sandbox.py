"""Security review: the sandbox worker against a workspace and results the model controls.

Worker tools must be importable by reference, so they live at module level here; the
worker imports this module as ``tests.tools.test_review_sandbox``.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

import tools._worker as worker_module
from agent.types import ToolCall
from tests.tools.test_sandbox import MODES
from tools._pool import read_frame as _read_frame
from tools.base import tool
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies

# What a model with write access (write_file, or COPY … TO) can leave in the workspace: the
# worker's cwd. Run as code, it records itself and kills the import.
PLANTED = "open('PWNED', 'w').write(__name__)\nraise SystemExit(7)\n"


@tool(sandbox="process")
def ping() -> str:
    """Answer pong."""
    return "pong"


@tool(sandbox="process")
def surrogate() -> str:
    """Return text holding a lone surrogate, as json.loads('"\\ud800"') gives."""
    return "a\ud800b"


@tool
def surrogate_here() -> str:
    """The same, in the dispatcher's process."""
    return json.loads('"x\\udfffy"')


def _dispatcher(tmp_path: Path, use_bwrap: bool, **sandbox: Any) -> Dispatcher:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    policies = ToolPolicies(
        workspace=ws, sandbox={"use_bwrap": use_bwrap, **sandbox}, files={"allow_write": True}
    )
    return Dispatcher(
        [ping, surrogate, surrogate_here], policies, run_id="r", artifacts_dir=tmp_path / "art"
    )


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param({"tools/__init__.py": PLANTED, "tools/_worker.py": PLANTED}, id="tools-pkg"),
        pytest.param({"json.py": PLANTED, "struct.py": PLANTED}, id="stdlib-shadow"),
        pytest.param({"tests/__init__.py": PLANTED}, id="tool-module-pkg"),
    ],
)
@pytest.mark.parametrize("use_bwrap", MODES)
async def test_code_planted_in_the_workspace_is_never_imported(
    tmp_path: Path, use_bwrap: bool, planted: dict[str, str]
) -> None:
    ws = tmp_path / "ws"
    for rel, text in planted.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(text)
    async with _dispatcher(tmp_path, use_bwrap) as d:
        result = await d.call(ToolCall("ping", {}))
    assert not (ws / "PWNED").exists(), "the worker imported code from the workspace"
    assert result.ok and result.content == "pong", result.content


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_lone_surrogate_from_the_worker_is_replaced_not_hung(
    tmp_path: Path, use_bwrap: bool
) -> None:
    # Before: the worker thread died encoding the reply, the call hung to the hard timeout
    # and the worker was killed with every other call in flight.
    async with _dispatcher(tmp_path, use_bwrap, call_timeout_s=5) as d:
        result = await d.call(ToolCall("surrogate", {}))
        again = await d.call(ToolCall("ping", {}))
        starts = d.worker.starts
    assert result.ok and result.content == "a\ufffdb", result.content
    assert again.ok and starts == 1


async def test_lone_surrogate_from_an_in_process_tool_is_replaced(tmp_path: Path) -> None:
    async with _dispatcher(tmp_path, False) as d:
        result = await d.call(ToolCall("surrogate_here", {}))
    result.content.encode("utf-8")  # the trace, the checkpoint and the prompt need UTF-8
    assert result.content == "x\ufffdy"


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_parent_refuses_an_oversized_frame_without_reading_it() -> None:
    header = struct.pack(">I", worker_module.MAX_FRAME_BYTES + 1)
    with pytest.raises(ValueError, match="exceeds"):
        await _read_frame(_reader(header + b"{}"))


@pytest.mark.parametrize("body", [b"[1]", b'"text"', b"null"])
async def test_parent_refuses_a_frame_that_is_not_an_object(body: bytes) -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        await _read_frame(_reader(struct.pack(">I", len(body)) + body))


async def test_parent_refuses_a_deeply_nested_frame() -> None:
    body = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(ValueError):
        await _read_frame(_reader(struct.pack(">I", len(body)) + body))


def test_worker_turns_an_oversized_result_into_an_error_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "MAX_FRAME_BYTES", 1000)
    out = io.BytesIO()
    writer = worker_module._Writer(out)
    server = object.__new__(worker_module._Server)
    server.writer, server.memory_mb = writer, 64
    server.lock, server.active = threading.Lock(), {}
    server._invoke = lambda msg: "x" * 5000  # type: ignore[method-assign]
    server._run({"id": 1})
    data = out.getvalue()
    (size,) = struct.unpack(">I", data[:4])
    reply = json.loads(data[4 : 4 + size])
    assert size <= 1000 and reply["ok"] is False and "per result" in reply["message"]


async def test_read_artifact_takes_exact_ids_only(tmp_path: Path) -> None:
    # "$" also matches before a final newline: an id must match the whole pattern.
    async with _dispatcher(tmp_path, False) as d:
        d.artifacts_dir.mkdir(parents=True)
        (d.artifacts_dir / "art_0123456789abcdef\n.txt").write_text("not an artifact")
        with pytest.raises(KeyError):
            d.read_artifact("art_0123456789abcdef\n")
