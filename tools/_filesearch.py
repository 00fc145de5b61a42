"""The search half of the file tools: the regex guard, the scanner, and the helper process.

``search_files`` runs a regex the model wrote over files the model chose, so both the pattern
and the running time are bounded:

- :func:`compile_pattern` refuses long patterns and nested unbounded quantifiers (``(a+)+``),
  the classic catastrophic-backtracking shape, before anything runs: a quick, clear refusal;
- :func:`search` runs the scan in a helper process (an isolated Python, see
  `tools._codepaths`) and kills it at ``search_timeout_s``. That is the real bound: Python's
  ``re`` backtracks without limit on shapes no guard catches (``(a|a)*$``), cannot be
  interrupted from another thread, and a killed helper costs nothing else; the sandbox
  worker, its other calls and its DuckDB tables are untouched;
- :class:`Scan` (in the helper) stops at ``max_results`` hits or :data:`SEARCH_MAX_BYTES`
  scanned, and streams each hit as it finds it, so :class:`Found` (in the caller) keeps what
  was found when the deadline cuts the search.

Trade-offs: a search starts a process (about 0.1 s here), and keeps Python's regex syntax
(an RE2 engine would be linear-time but drops backreferences and lookaround, and is still
slow enough on a long line that the deadline needs a process to hold). Reading is not done
here: :class:`Scan` takes the checked reader of `tools._safeopen` (regular files, one hard
link, size cap), the same rule ``read_file`` follows.

>>> compile_pattern(r"TODO|FIXME").pattern
'TODO|FIXME'
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import re._constants as _sre  # the parse tree's opcodes: private, stable since 3.11
import re._parser as _sre_parser
import selectors
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ToolArgumentError, ToolError, ToolExecutionError
from tools import _safeopen
from tools._codepaths import import_path, isolated_python

__all__ = ["SEARCH_MAX_BYTES", "Found", "Scan", "clean", "compile_pattern", "search"]

SEARCH_MAX_BYTES = 50_000_000  # bytes scanned by one search at most
_PATTERN_MAX_CHARS = 256
_BIG_REPEAT = 64  # a {m,n} repeat with n above this counts as unbounded for the guard
_SHOWN_LINE_CHARS = 200  # a matching line is cut to this in search results

Reader = Callable[[int, str], bytes]
"""``read(fd, shown)``: the file's bytes, or a ToolError saying why it is not read."""
_HELPER = "from tools._filesearch import serve; serve()"


def search(
    fd: int,
    rel: str,
    *,
    is_dir: bool,
    pattern: str,
    glob: str | None,
    max_results: int,
    max_read_bytes: int,
    timeout: float,
) -> Found:
    """Scan ``fd`` (a folder or an open file at ``rel``) in a helper killed at ``timeout``.

    Returns the scan's result (hits, skips, notes); a ToolError the helper raised for the
    one file asked for is raised here. ``fd`` stays open; the helper gets its own copy.

    >>> search(fd, "docs", is_dir=True, pattern="TODO", glob=None, max_results=50,
    ...        max_read_bytes=10**6, timeout=5.0).render("TODO", "'docs'")  # doctest: +SKIP
    """  # fmt: skip
    request = {"fd": fd, "rel": rel, "is_dir": is_dir, "pattern": pattern, "glob": glob,
               "max_results": max_results, "max_read_bytes": max_read_bytes}  # fmt: skip
    result = Found()
    deadline = time.monotonic() + timeout
    try:
        helper = subprocess.Popen(
            isolated_python(_HELPER, import_path()), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(fd,), env={},
        )  # fmt: skip
    except OSError as exc:
        raise ToolExecutionError(f"the search could not start: {exc.strerror}") from None
    try:
        assert helper.stdin is not None and helper.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            helper.stdin.write(json.dumps(request).encode() + b"\n")
            helper.stdin.close()
        if not _collect(helper.stdout, deadline, result):
            result.notes.append(f"time limit of {timeout:g} s reached; incomplete")
    finally:
        helper.kill()
        status = helper.wait()
    if status not in (0, -9) and not result.done:
        result.notes.append(f"the search stopped early (exit status {status}); incomplete")
    return result


def _collect(stream: Any, deadline: float, result: Found) -> bool:
    """Read the helper's messages into ``result`` until it ends (True) or the deadline."""
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                continue
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                return True
            *lines, buffer = (buffer + chunk).split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line)
                except ValueError:
                    raise ToolExecutionError("the search helper sent a malformed message") from None
                result.take(message)
    return False


def serve() -> None:
    """The helper's side: one request on stdin, one JSON message per line on stdout."""
    request = json.loads(sys.stdin.readline())
    limit = request["max_read_bytes"]

    def emit(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    scan = Scan(
        re.compile(request["pattern"]), request["glob"], request["max_results"],
        lambda fd, shown: _safeopen.read_regular(fd, shown, limit),
        lambda hit: emit({"hit": hit}),
    )  # fmt: skip
    fd, rel = request["fd"], request["rel"]
    try:
        if request["is_dir"]:
            scan.tree(os.dup(fd), rel)  # the walk closes its fd
        else:
            scan.file(fd, rel, must=True)
    except ToolError as exc:
        emit({"error": type(exc).__name__, "message": str(exc)})
        return
    emit({"skipped": scan.skipped, "notes": scan.notes})


@dataclass
class Found:
    """What a search found, as the caller collects it: hits in order, skips and notes.

    >>> Found(["a.txt:2: b"]).render("b", "'.'")
    'a.txt:2: b'
    """

    hits: list[str] = field(default_factory=list)
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    done: bool = False
    """Whether the helper finished (rather than being stopped)."""

    def take(self, message: dict[str, Any]) -> None:
        """Add one message of the helper: a hit, the final counts, or the error it raised."""
        if "hit" in message:
            self.hits.append(str(message["hit"]))
        elif "error" in message:
            import agent.errors as errors

            error = getattr(errors, str(message["error"]), None)
            if not (isinstance(error, type) and issubclass(error, ToolError)):
                error = ToolExecutionError
            raise error(str(message.get("message", "")))
        else:
            self.skipped, self.done = int(message["skipped"]), True
            self.notes.extend(str(note) for note in message["notes"])

    def render(self, pattern: str, shown: str) -> str:
        """The tool's answer: hits (or "No matches"), then skips and notes in brackets."""
        out = list(self.hits) or [f"No matches for {pattern!r} in {shown}"]
        if self.skipped:
            out.append(f"[skipped {self.skipped} binary, oversize, hard-linked or special files]")
        out.extend(f"[{note}]" for note in self.notes)
        return "\n".join(out)


class Scan:
    """One search in the helper: walks and reads files, sends each hit to ``emit``.

    >>> scan = Scan(re.compile("b"), None, 10, read, print)  # doctest: +SKIP
    >>> scan.file(fd, "a.txt", must=True)  # doctest: +SKIP
    a.txt:2: b
    """

    def __init__(
        self,
        regex: re.Pattern[str],
        glob: str | None,
        max_results: int,
        read: Reader,
        emit: Callable[[str], None],
    ) -> None:
        self.regex, self.glob, self.max_results = regex, glob, max_results
        self.read, self.emit = read, emit
        self.hits = 0
        self.skipped = 0
        self.scanned = 0
        self.notes: list[str] = []
        self.full = False

    def tree(self, top_fd: int, prefix: str) -> None:
        """Scan every wanted regular file below ``top_fd`` (closed by the walk)."""
        for dir_fd, st, rel in _safeopen.walk_tree(top_fd, prefix):
            if self.full:
                return
            if not stat.S_ISREG(st.st_mode) or not self._wanted(rel):
                continue
            name = rel.rsplit("/", 1)[-1]
            try:
                flags = _safeopen.READ_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(name, flags, dir_fd=dir_fd)
            except OSError:
                self.skipped += 1
                continue
            try:
                self.file(fd, rel, must=False)
            finally:
                os.close(fd)

    def file(self, fd: int, rel: str, *, must: bool) -> None:
        """Scan one open file; ``must``: a file that cannot be read is an error, not a skip."""
        try:
            data = self.read(fd, repr(rel))
        except ToolError:
            if must:
                raise
            self.skipped += 1
            return
        self.scanned += len(data)
        if self.scanned > SEARCH_MAX_BYTES:
            self.notes.append(f"stopped after scanning {SEARCH_MAX_BYTES} bytes")
            self.full = True
            return
        text = data.decode("utf-8", errors="replace")
        for lineno, line in enumerate(text.splitlines(), 1):
            if self.regex.search(line):
                self.emit(f"{clean(rel)}:{lineno}: {_clip(line)}")
                self.hits += 1
                if self.hits >= self.max_results:
                    self.notes.append(f"results capped at {self.max_results}")
                    self.full = True
                    return

    def _wanted(self, rel: str) -> bool:
        if self.glob is None:
            return True
        target = rel if "/" in self.glob else rel.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(target, self.glob)


def clean(text: str) -> str:
    """Escape control, format (zero-width, BiDi) and undecodable characters for display.

    >>> clean("a\\u202eb")
    'a\\\\u202eb'
    """
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _clip(line: str) -> str:
    line = clean(line)
    return line if len(line) <= _SHOWN_LINE_CHARS else line[:_SHOWN_LINE_CHARS] + "…"


def compile_pattern(pattern: object) -> re.Pattern[str]:
    """Compile the model's regex, refusing long ones and nested unbounded repeats.

    >>> compile_pattern(r"(a+)+$")  # doctest: +SKIP
    Traceback (most recent call last):
    agent.errors.ToolArgumentError: pattern nests a repeat inside another repeat ...
    """
    if not isinstance(pattern, str) or not pattern:
        raise ToolArgumentError("pattern must be a non-empty string")
    if len(pattern) > _PATTERN_MAX_CHARS:
        raise ToolArgumentError(f"pattern is longer than {_PATTERN_MAX_CHARS} characters")
    try:
        regex = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ToolArgumentError(f"invalid regular expression: {exc}") from None
    if _nested_repeat(_sre_parser.parse(pattern), inside=False):
        raise ToolArgumentError(
            "pattern nests a repeat inside another repeat (like (a+)+), which can take "
            "exponential time; rewrite it without the nesting"
        )
    return regex


def _nested_repeat(items: Iterable[tuple[object, object]], *, inside: bool) -> bool:
    """True if an unbounded repeat sits inside another: the classic catastrophic shape."""
    for op, av in items:
        if op in (_sre.ATOMIC_GROUP, _sre.POSSESSIVE_REPEAT):
            continue  # no backtracking into these: they cannot blow up
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
            _, high, body = av  # type: ignore[misc]
            big = high == _sre.MAXREPEAT or high > _BIG_REPEAT
            if (big and inside) or _nested_repeat(body, inside=inside or big):
                return True
            continue
        if any(_nested_repeat(sub, inside=inside) for sub in _subpatterns(av)):
            return True
    return False


def _subpatterns(av: object) -> Iterator[_sre_parser.SubPattern]:
    if isinstance(av, _sre_parser.SubPattern):
        yield av
    elif isinstance(av, tuple | list):
        for item in av:
            yield from _subpatterns(item)
