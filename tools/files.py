"""The file tools: list, read, write and search inside one workspace folder, and nowhere else.

Every path the model gives is untrusted. :class:`FileSandbox` opens the workspace once and
reaches everything else relative to that fd through :mod:`tools._safeopen` (``openat2`` with
``RESOLVE_BENEATH``, or an ``O_NOFOLLOW`` walk), so no path string is ever resolved from
``/`` and a symlink swapped in mid-call cannot redirect it. On top of that:

- only regular files are read: the path is first opened ``O_PATH`` and ``fstat``-ed, so
  FIFOs, sockets and devices are refused without ever being opened; the real open adds
  ``O_NONBLOCK`` (a FIFO swapped in meanwhile cannot hang the call) and is checked again;
- a regular file with more than one hard link is refused for reading and overwriting: it
  may be a link to a file outside the workspace, and nothing on the inode says which;
- every symlink is refused, even one pointing inside (see :mod:`tools._safeopen`);
- writes go to a temporary file in the same directory fd, then ``renameat`` over the
  target: readers see the old or the new file, never half of one;
- messages name the workspace-relative path only, never the host path.

Trade-offs: the workspace-size cap walks the whole tree on every write (simple and exact;
slow for a huge workspace); missing parent folders are created before the caps are checked,
so a refused write may leave empty folders behind. ``search_files`` runs in a helper process
killed at ``FilesPolicy.search_timeout_s`` (:mod:`tools._filesearch`), so the time limit holds
for any pattern, in any thread.

>>> box = FileSandbox(FilesPolicy(), Path("."))  # doctest: +SKIP
>>> print(box.read_file("README.md", 1, 1))  # doctest: +SKIP
'README.md': lines 1-1 of 120
# hermes-agent
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agent.errors import (
    ConfigError,
    ToolArgumentError,
    ToolError,
    ToolExecutionError,
    ToolPolicyError,
)
from tools import _safeopen
from tools._filesearch import clean, compile_pattern, search
from tools.policy import FilesPolicy

__all__ = ["SEARCH_TIMEOUT_S", "FileSandbox"]

SEARCH_TIMEOUT_S: float = FilesPolicy.model_fields["search_timeout_s"].default
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY


class FileSandbox:
    """The four file tools, confined to ``workspace`` and limited by ``policy``.

    ``use_openat2``: None picks openat2 when the kernel allows it, False forces the
    ``O_NOFOLLOW`` walk (both resolvers refuse the same things). ``write_file`` always
    walks, because creating parent folders needs ``mkdirat`` one level at a time.
    ``search_timeout_s`` overrides ``policy.search_timeout_s`` when given.

    >>> box = FileSandbox(FilesPolicy(allow_write=True), tmp)  # doctest: +SKIP
    >>> box.write_file("a/b.txt", "hi")  # doctest: +SKIP
    "Wrote 2 bytes to 'a/b.txt' (new file)"
    """

    def __init__(
        self,
        policy: FilesPolicy,
        workspace: Path,
        *,
        use_openat2: bool | None = None,
        search_timeout_s: float | None = None,
    ) -> None:
        self.policy = policy
        self.use_openat2 = _safeopen.openat2_supported() if use_openat2 is None else use_openat2
        self.search_timeout_s = (
            policy.search_timeout_s if search_timeout_s is None else search_timeout_s
        )
        try:
            # The workspace path itself is trusted configuration: following links is fine here.
            self._root = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"workspace {workspace} cannot be opened: {exc.strerror}") from None

    def close(self) -> None:
        """Close the workspace fd; the sandbox is unusable afterwards."""
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def __enter__(self) -> FileSandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the tools -------------------------------------------------------------------------

    def list_files(self, path: str = ".") -> str:
        """List one directory: sorted names, dirs marked '/', sizes of files, links shown.

        >>> box.list_files("docs")  # doctest: +SKIP
        "'docs': 2 entries\\nguide.md  (120 bytes)\\nimg/"
        """
        parts = _safeopen.split_path(path)
        shown = _shown(parts)
        fd = self._open(parts, _DIR_FLAGS, shown)
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: e.name)
            lines = [_describe_entry(fd, e.name) for e in entries[: self.policy.max_results]]
        finally:
            os.close(fd)
        out = [f"{shown}: {len(entries)} entries", *lines]
        if len(entries) > self.policy.max_results:
            out.append(f"[{len(entries) - self.policy.max_results} more not shown]")
        return "\n".join(out)

    def read_file(
        self, path: str, start_line: int | None = None, end_line: int | None = None
    ) -> str:
        """Read a text file, optionally lines ``start_line..end_line`` (1-based, inclusive).

        >>> box.read_file("notes.txt", 2, 2)  # doctest: +SKIP
        "'notes.txt': lines 2-2 of 10\\nsecond line\\n"
        """
        parts = _safeopen.split_path(path)
        shown = _shown(parts)
        if not parts:
            raise ToolArgumentError("read_file needs a file path; use list_files for folders")
        fd = self._open_file(parts, shown)
        try:
            data = _safeopen.read_regular(fd, shown, self.policy.max_read_bytes)
        finally:
            os.close(fd)
        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        first, last = _line_range(start_line, end_line, len(lines))
        if not lines:
            return f"{shown}: empty file (0 lines)\n"
        header = f"{shown}: lines {first}-{last} of {len(lines)}\n"
        return header + "".join(lines[first - 1 : last])

    def write_file(self, path: str, content: str) -> str:
        """Create or replace a text file atomically, creating missing parent folders.

        >>> box.write_file("out/report.md", "# Report\\n")  # doctest: +SKIP
        "Wrote 9 bytes to 'out/report.md' (new file)"
        """
        if not self.policy.allow_write:
            raise ToolPolicyError(
                "write_file is disabled: this task's policy does not allow writes"
            )
        parts = _safeopen.split_path(path)
        shown = _shown(parts)
        if not parts:
            raise ToolArgumentError("write_file needs a file path, not the workspace itself")
        data = _encode_content(content, self.policy.max_write_bytes)
        try:
            dir_fd = _safeopen.open_dir(self._root, parts[:-1], create=True, use_openat2=False)
        except OSError as exc:
            raise self._error(exc, parts, shown) from None
        try:
            old_size = _check_target(dir_fd, parts[-1], shown)
            total = self._workspace_bytes() - (old_size or 0) + len(data)
            if total > self.policy.max_workspace_bytes:
                raise ToolPolicyError(
                    f"writing {shown} would grow the workspace to {total} bytes; "
                    f"the limit is {self.policy.max_workspace_bytes}"
                )
            _safeopen.replace_file(dir_fd, parts[-1], data)
        except OSError as exc:
            raise ToolExecutionError(
                f"writing {shown} failed: {os.strerror(exc.errno or 0)}"
            ) from None
        finally:
            os.close(dir_fd)
        kind = "new file" if old_size is None else "replaced"
        return f"Wrote {len(data)} bytes to {shown} ({kind})"

    def search_files(self, pattern: str, path: str = ".", glob: str | None = None) -> str:
        """Grep: ``relpath:lineno: text`` for each line matching the regex ``pattern``.

        >>> box.search_files(r"TODO", ".", glob="*.py")  # doctest: +SKIP
        "src/a.py:12: # TODO: handle errors"
        """
        compile_pattern(pattern)  # refuse a bad or obviously catastrophic one up front
        if glob is not None and (not isinstance(glob, str) or "\x00" in glob or len(glob) > 256):
            raise ToolArgumentError("glob must be a string without NUL bytes, at most 256 chars")
        parts = _safeopen.split_path(path)
        shown = _shown(parts)
        is_dir = stat.S_ISDIR(self._probe(parts, shown).st_mode)
        fd = self._open(parts, _DIR_FLAGS, shown) if is_dir else self._open_file(parts, shown)
        try:
            found = search(
                fd, "/".join(parts), is_dir=is_dir, pattern=pattern, glob=glob,
                max_results=self.policy.max_results, max_read_bytes=self.policy.max_read_bytes,
                timeout=self.search_timeout_s,
            )  # fmt: skip
        finally:
            os.close(fd)
        return found.render(pattern, shown)

    # -- helpers ---------------------------------------------------------------------------

    def _open(self, parts: tuple[str, ...], flags: int, shown: str) -> int:
        try:
            return _safeopen.open_beneath(self._root, parts, flags, use_openat2=self.use_openat2)
        except OSError as exc:
            raise self._error(exc, parts, shown) from None

    def _probe(self, parts: tuple[str, ...], shown: str) -> os.stat_result:
        """fstat through an O_PATH fd: classifies FIFOs and devices without opening them."""
        fd = self._open(parts, _safeopen.O_PATH, shown)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _open_file(self, parts: tuple[str, ...], shown: str) -> int:
        """Open a regular file for reading; anything else is refused before a real open."""
        _safeopen.check_regular(self._probe(parts, shown), shown, self.policy.max_read_bytes)
        return self._open(parts, _safeopen.READ_FLAGS, shown)  # a FIFO swapped in can't hang

    def _error(self, exc: OSError, parts: tuple[str, ...], shown: str) -> ToolError:
        """Turn an OSError into a message naming the relative path only (never the host's)."""
        why = _safeopen.describe_failure(self._root, parts)
        code = exc.errno
        if (why and "symbolic link" in why) or code == errno.ELOOP:
            detail = why or f"{shown} goes through a symbolic link"
            return ToolPolicyError(f"{clean(detail)}; symbolic links are not followed")
        if code == errno.EXDEV:
            return ToolPolicyError(f"{shown} resolves outside the workspace")
        if code == errno.ENOENT:
            return ToolExecutionError(f"{shown} does not exist")
        if code == errno.ENOTDIR:
            return ToolExecutionError(clean(why) if why else f"{shown}: not a directory")
        if code == errno.EISDIR:
            return ToolArgumentError(f"{shown} is a directory")
        if code in (errno.EACCES, errno.EPERM):
            return ToolPolicyError(f"permission denied for {shown}")
        if code == errno.ENAMETOOLONG:
            return ToolArgumentError(f"{shown}: name too long")
        return ToolExecutionError(f"{shown}: {os.strerror(code or 0)}")

    def _workspace_bytes(self) -> int:
        tree = _safeopen.walk_tree(os.dup(self._root))  # the walk closes its fd
        return sum(st.st_size for _, st, _ in tree if stat.S_ISREG(st.st_mode))


def _check_target(dir_fd: int, name: str, shown: str) -> int | None:
    """Size of the file ``write_file`` would replace, None if new; refuse unsafe targets."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise ToolArgumentError(f"{shown} is a directory")
    if not stat.S_ISREG(st.st_mode):
        kind = _safeopen.kind_of(st.st_mode)
        raise ToolPolicyError(f"{shown} is a {kind}; only regular files are replaced")
    if st.st_nlink > 1:
        raise ToolPolicyError(f"{shown} has {st.st_nlink} hard links; it will not be overwritten")
    if not st.st_mode & 0o222:
        # Checked by hand: root (the usual sandbox user) bypasses permission bits.
        raise ToolPolicyError(f"{shown} is read-only; it will not be overwritten")
    return st.st_size


def _encode_content(content: object, limit: int) -> bytes:
    if not isinstance(content, str):
        raise ToolArgumentError(f"content must be a string, not {type(content).__name__}")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolArgumentError("content is not valid Unicode (lone surrogate)") from None
    if len(data) > limit:
        raise ToolPolicyError(f"content is {len(data)} bytes; write_file writes at most {limit}")
    return data


def _line_range(start: int | None, end: int | None, total: int) -> tuple[int, int]:
    """1-based inclusive range, clamped at the end; refuses nonsense with the line count."""
    for name, value in (("start_line", start), ("end_line", end)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ToolArgumentError(f"{name} must be an integer")
        if value is not None and value < 1:
            raise ToolArgumentError(f"{name} must be 1 or more (lines are numbered from 1)")
    first = start or 1
    last = min(end if end is not None else total, total)
    if end is not None and end < first:
        raise ToolArgumentError(f"end_line {end} is before start_line {first}")
    if total and first > total:
        raise ToolArgumentError(f"start_line {first} is past the end: the file has {total} lines")
    return first, last


def _describe_entry(dir_fd: int, name: str) -> str:
    shown = clean(name)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return f"{shown}  (vanished)"
    if stat.S_ISDIR(st.st_mode):
        return f"{shown}/"
    if stat.S_ISREG(st.st_mode):
        return f"{shown}  ({st.st_size} bytes)"
    if stat.S_ISLNK(st.st_mode):
        return f"{shown}  (symlink, not followed)"
    return f"{shown}  ({_safeopen.kind_of(st.st_mode)})"


def _shown(parts: tuple[str, ...]) -> str:
    """The path as messages show it: relative, quoted, control characters escaped."""
    return repr("/".join(parts) or ".")
