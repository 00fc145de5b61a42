"""An eval's run folder: ``config.json``, ``samples.jsonl`` and ``summary.json``.

```
RUN/config.json     what ran: suite (path, sha256), model, server version, git revision,
                    prompt-template hash, options; "version"
RUN/samples.jsonl   one record per case × trial: result, checks with reasons and error
                    types, events (transcript: raw outputs, parsed calls, tool results),
                    timings, tokens; "v" on every line
RUN/summary.json    the metrics (evals.metrics); "version"
RUN/report.html     written by `agent eval report`
```

Samples are appended and flushed one line at a time, so a killed eval keeps every
finished sample; ``--resume`` re-runs the rest (a half-written last line is dropped).
A sample that ended in an infrastructure error is recorded too and re-run on resume; the
last record of a sample wins. Formats carry versions: a reader refuses a newer major.

>>> sample_key("top-region", 2)
'top-region#2'
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from agent.errors import ConfigError

__all__ = [
    "CONFIG_VERSION",
    "SAMPLE_VERSION",
    "SUMMARY_VERSION",
    "RunFolder",
    "default_root",
    "git_revision",
    "new_eval_id",
    "resolve_run",
    "sample_key",
]

CONFIG_VERSION = "1.0"
SAMPLE_VERSION = "1.0"
SUMMARY_VERSION = "1.0"
_MAJOR = "1"


def sample_key(case_id: str, trial: int) -> str:
    return f"{case_id}#{trial}"


def new_eval_id() -> str:
    """Sortable by start time: ``eval_20261130T071500_3f2a9c``."""
    return time.strftime("eval_%Y%m%dT%H%M%S_", time.gmtime()) + uuid.uuid4().hex[:6]


def default_root() -> Path:
    """Where eval runs go by default: ``$AGENT_STORE/evals`` or ``.agent/evals``."""
    store = os.environ.get("AGENT_STORE") or ".agent"
    return Path(store if "://" not in store else ".agent") / "evals"


def resolve_run(ref: str | Path) -> Path:
    """A run folder from a path, or an eval id (or a unique start of it) under the root.

    Raises ConfigError saying what was looked for.
    """
    path = Path(ref)
    if (path / "config.json").is_file():
        return path
    root = default_root()
    if root.is_dir():
        names = sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
        hits = [
            n for n in names if n.startswith(str(ref)) or n.rsplit("_", 1)[-1].startswith(str(ref))
        ]
        if len(hits) == 1:
            return root / hits[0]
        if len(hits) > 1:
            raise ConfigError(f"{ref!r} matches several eval runs: {', '.join(hits[:5])}")
    raise ConfigError(
        f"no eval run {str(ref)!r}: not a run folder (with config.json), nor an id under {root}"
    )


def git_revision(where: Path) -> dict[str, Any]:
    """``{"revision": sha, "dirty": bool}`` of the checkout holding ``where`` (or nulls)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}
    return {"revision": sha or None, "dirty": bool(status.strip()) if sha else None}


class RunFolder:
    """Reads and writes one eval run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._out: IO[str] | None = None

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.jsonl"

    def create(self, config: dict[str, Any]) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            raise ConfigError(
                f"{self.path} exists and is not empty: choose another --out, or continue "
                f"that eval with --resume {self.path}"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_json("config.json", {"version": CONFIG_VERSION, **config})
        self.samples_path.touch()

    def config(self) -> dict[str, Any]:
        return self._read_json("config.json")

    def summary(self) -> dict[str, Any]:
        return self._read_json("summary.json")

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        tmp.replace(self.path / name)

    def _read_json(self, name: str) -> dict[str, Any]:
        file = self.path / name
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{file}: missing (is {self.path} an eval run folder?)") from None
        except ValueError as exc:
            raise ConfigError(f"{file}: not valid JSON: {exc}") from None
        _check_version(file, str(data.get("version", "")))
        return data

    # -- samples --------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Add one sample record (one line, flushed: a crash keeps it)."""
        if self._out is None:
            self._out = self.samples_path.open("a", encoding="utf-8")
        self._out.write(
            json.dumps({"v": SAMPLE_VERSION, **record}, ensure_ascii=False, default=str) + "\n"
        )
        self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def records(self) -> Iterator[dict[str, Any]]:
        """Every sample record in file order (a half-written last line is skipped)."""
        with self.samples_path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    return  # the write a crash interrupted
                record = json.loads(line)
                if number == 1:
                    _check_version(self.samples_path, str(record.get("v", "")))
                yield record

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of each sample, by sample key."""
        return {r["sample"]: r for r in self.records()}

    def drop_partial_line(self) -> None:
        """Cut a half-written last line (a crash mid-write) before appending again."""
        data = self.samples_path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.samples_path.write_bytes(data[: data.rfind(b"\n") + 1])


def _check_version(file: Path, version: str) -> None:
    if version.split(".")[0] != _MAJOR:
        raise ConfigError(
            f"{file}: format version {version or '(none)'} is not readable by this version "
            f"(reads {_MAJOR}.x); use the agent version that wrote it"
        )
