"""Open paths beneath a directory fd without ever leaving it: the file tools' only door.

Two resolvers with the same behaviour, chosen per sandbox:

- ``openat2`` (Linux ≥ 5.6, syscall 437 through ctypes; Python has no wrapper) with
  ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``: the kernel refuses
  ``..`` escapes, absolute jumps and every symlink in one atomic resolution.
- the walk, where openat2 is missing (``ENOSYS``) or blocked by seccomp (``EPERM``): one
  ``openat(O_DIRECTORY | O_NOFOLLOW)`` per component, each relative to the fd of the one
  before, then the last component with ``O_NOFOLLOW``. A component swapped for a symlink
  mid-call makes the open fail (``ENOTDIR``/``ELOOP``) instead of escaping, because no step
  ever re-resolves a path string from the top.

Trade-off: *every* symlink is refused, also one pointing inside the workspace. Following
in-workspace links would make the walk re-implement symlink resolution (and its races);
refusing them keeps both resolvers identical and small. ``..`` and absolute paths are
refused lexically by :func:`split_path` before any syscall, so both resolvers only ever see
plain names.

>>> split_path("./docs//a.txt")
('docs', 'a.txt')
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import stat
from collections.abc import Iterator, Sequence

from agent.errors import ToolArgumentError, ToolExecutionError, ToolPolicyError

__all__ = [
    "MAX_PATH_BYTES",
    "O_PATH",
    "READ_FLAGS",
    "RESOLVE_BENEATH",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "check_regular",
    "describe_failure",
    "kind_of",
    "open_beneath",
    "open_dir",
    "openat2",
    "openat2_supported",
    "read_regular",
    "replace_file",
    "split_path",
    "walk_tree",
]

MAX_PATH_BYTES = 4096  # PATH_MAX: anything longer is not a path the kernel would take
_MAX_NAME_BYTES = 255  # NAME_MAX of ext4, xfs, tmpfs
_SYS_OPENAT2 = 437  # the same number on every Linux architecture (unified syscall table)
_AT_FDCWD = -100

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS

O_PATH = getattr(os, "O_PATH", os.O_RDONLY)
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
"""Flags of every read open: a FIFO swapped in cannot hang it, a tty cannot become ours."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_DEPTH = 64  # directory levels walk_tree descends at most


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, resolve: int = _RESOLVE) -> int:
    """Call ``openat2(2)``; return the new fd or raise ``OSError`` with the kernel's errno.

    >>> fd = openat2(-100, ".", os.O_RDONLY | os.O_DIRECTORY)  # doctest: +SKIP
    """
    # The kernel rejects a non-zero mode without O_CREAT/O_TMPFILE (EINVAL). O_TMPFILE
    # contains the O_DIRECTORY bit, hence the full-mask test.
    tmpfile = getattr(os, "O_TMPFILE", 0)
    if not (flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)):
        mode = 0
    how = _OpenHow(flags, mode, resolve)
    fd = _libc.syscall(
        _SYS_OPENAT2,
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


@functools.cache
def openat2_supported() -> bool:
    """True when openat2 with our resolve flags works here (probed once per process).

    >>> isinstance(openat2_supported(), bool)
    True
    """
    try:
        os.close(openat2(_AT_FDCWD, ".", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as exc:
        # ENOSYS: kernel < 5.6; EPERM: a seccomp filter; EINVAL/E2BIG: unknown flags.
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
            return False
        raise
    return True


def split_path(path: object) -> tuple[str, ...]:
    """Check a model-supplied workspace path and split it into plain names.

    Raises ToolArgumentError for malformed input (not a string, NUL bytes, too long) and
    ToolPolicyError for escapes (absolute paths, ``..``). ``""`` and ``"."`` give ``()``.

    >>> split_path("a/./b/")
    ('a', 'b')
    """
    if not isinstance(path, str):
        raise ToolArgumentError(f"path must be a string, not {type(path).__name__}")
    if "\x00" in path:
        raise ToolArgumentError("path contains a NUL byte")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise ToolArgumentError("path is not valid Unicode (lone surrogate)") from None
    if size > MAX_PATH_BYTES:
        raise ToolArgumentError(f"path is {size} bytes long; at most {MAX_PATH_BYTES} allowed")
    if path.startswith("/"):
        raise ToolPolicyError(
            "absolute paths are not allowed; give a path relative to the workspace"
        )
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ToolPolicyError("'..' is not allowed in paths; stay inside the workspace")
    for part in parts:
        if len(part.encode("utf-8")) > _MAX_NAME_BYTES:
            raise ToolArgumentError(f"a path component is longer than {_MAX_NAME_BYTES} bytes")
    return parts


def open_beneath(
    root_fd: int, parts: Sequence[str], flags: int, mode: int = 0o644, *, use_openat2: bool
) -> int:
    """Open ``parts`` beneath ``root_fd``, never following a symlink; return the fd.

    ``O_NOFOLLOW`` and ``O_CLOEXEC`` are always added. Raises ``OSError`` (``ELOOP``,
    ``ENOTDIR``, ``EXDEV``, ``ENOENT``…); the caller turns it into a message.

    >>> fd = open_beneath(root, ("a.txt",), os.O_RDONLY, use_openat2=True)  # doctest: +SKIP
    """
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    _require_plain(parts)
    if not parts:
        return os.open(".", flags & ~os.O_NOFOLLOW, dir_fd=root_fd)
    if use_openat2:
        for _ in range(8):
            try:
                return openat2(root_fd, "/".join(parts), flags, mode)
            except BlockingIOError:
                continue  # EAGAIN: a concurrent rename/mount; the kernel asks us to retry
        raise OSError(errno.EAGAIN, "path kept changing during resolution")
    dir_fd = _walk(root_fd, parts[:-1], create=False)
    try:
        return os.open(parts[-1], flags, mode, dir_fd=dir_fd)
    finally:
        if dir_fd != root_fd:
            os.close(dir_fd)


def open_dir(root_fd: int, parts: Sequence[str], *, create: bool, use_openat2: bool) -> int:
    """Open the directory ``parts`` beneath ``root_fd``, creating missing ones if asked.

    Creation always walks (``mkdirat`` has no openat2 twin): ``mkdirat`` never follows a
    final symlink, and the ``O_NOFOLLOW`` open after it refuses one planted in between.

    >>> fd = open_dir(root, ("new", "sub"), create=True, use_openat2=False)  # doctest: +SKIP
    """
    if create:
        fd = _walk(root_fd, parts, create=True)
        return os.dup(fd) if fd == root_fd else fd
    return open_beneath(root_fd, parts, _DIR_FLAGS, use_openat2=use_openat2)


def _walk(root_fd: int, parts: Sequence[str], *, create: bool) -> int:
    """Descend one directory at a time with O_NOFOLLOW; return the last fd (may be root_fd)."""
    _require_plain(parts)
    cur = root_fd
    try:
        for name in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=cur)
            nxt = os.open(name, _DIR_FLAGS, dir_fd=cur)
            if cur != root_fd:
                os.close(cur)
            cur = nxt
            # Belt and braces: O_DIRECTORY already guarantees this on Linux.
            if not stat.S_ISDIR(os.fstat(cur).st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory")
    except BaseException:
        if cur != root_fd:
            os.close(cur)
        raise
    return cur


def _require_plain(parts: Sequence[str]) -> None:
    """Defence in depth: the walk itself refuses '..', '.', '' and names with '/'."""
    for name in parts:
        if name in ("", ".", "..") or "/" in name or "\x00" in name:
            raise OSError(errno.EXDEV, "path component is not a plain name")


def describe_failure(root_fd: int, parts: Sequence[str]) -> str | None:
    """Explain why resolving ``parts`` failed, by lstat-ing each prefix; for messages only.

    Returns e.g. ``"'a/link' is a symbolic link"`` or None when nothing looks wrong.
    Racy by nature, which is fine: security never depends on it, only the wording does.

    >>> describe_failure(root, ("link", "x"))  # doctest: +SKIP
    "'link' is a symbolic link"
    """
    cur = root_fd
    try:
        for i, name in enumerate(parts):
            shown = "/".join(parts[: i + 1])
            try:
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                return f"'{shown}' is a symbolic link"
            if i == len(parts) - 1:
                return None
            if not stat.S_ISDIR(st.st_mode):
                return f"'{shown}' is not a directory"
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=cur)
            except OSError:
                return None
            if cur != root_fd:
                os.close(cur)
            cur = nxt
        return None
    finally:
        if cur != root_fd:
            os.close(cur)


def kind_of(mode: int) -> str:
    """What a non-regular file is, for messages.

    >>> kind_of(stat.S_IFIFO)
    'FIFO'
    """
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
    ):
        if test(mode):
            return name
    return "special file"


def check_regular(st: os.stat_result, shown: str, limit: int) -> None:
    """Refuse anything but a regular, singly-linked file of at most ``limit`` bytes.

    The file tools' rule on what may be read (``shown`` is the path as messages show it).
    """
    if stat.S_ISDIR(st.st_mode):
        raise ToolArgumentError(f"{shown} is a directory; use list_files")
    if not stat.S_ISREG(st.st_mode):
        kind = kind_of(st.st_mode)
        raise ToolPolicyError(f"{shown} is a {kind}; only regular files are read")
    if st.st_nlink > 1:
        raise ToolPolicyError(
            f"{shown} has {st.st_nlink} hard links; multiply-linked files are refused "
            "(a hard link may point at a file outside the workspace)"
        )
    if st.st_size > limit:
        raise ToolPolicyError(f"{shown} is {st.st_size} bytes; files over {limit} are not read")


def read_regular(fd: int, shown: str, limit: int) -> bytes:
    """Check the open file once more (it may have been swapped), then read it, capped."""
    check_regular(os.fstat(fd), shown, limit)
    chunks, size = [], 0
    while size <= limit:  # the file may grow after fstat: never trust st_size alone
        chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise ToolPolicyError(f"{shown} grew past {limit} bytes while being read")
    data = b"".join(chunks)
    if b"\x00" in data:
        raise ToolExecutionError(f"{shown} looks binary (contains NUL bytes); only text is read")
    return data


def walk_tree(
    top_fd: int, prefix: str = "", depth: int = 0
) -> Iterator[tuple[int, os.stat_result, str]]:
    """Yield ``(dir_fd, lstat, relpath)`` depth-first in name order; never follows links.

    Takes ownership of ``top_fd`` (closes it). Subdirectories are opened ``O_NOFOLLOW``
    relative to their parent's fd, so a directory swapped for a link mid-walk is skipped.
    Open a file of the tree with ``os.open(name, flags | O_NOFOLLOW, dir_fd=dir_fd)``.

    >>> [rel for _, _, rel in walk_tree(os.dup(root))]  # doctest: +SKIP
    ['a.txt', 'docs', 'docs/b.md']
    """
    try:
        with os.scandir(top_fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            rel = f"{prefix}/{name}" if prefix else name
            try:
                st = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            except OSError:
                continue  # vanished meanwhile
            yield top_fd, st, rel
            if stat.S_ISDIR(st.st_mode) and depth < _MAX_DEPTH:
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=top_fd)
                except OSError:
                    continue  # swapped for a link or a file since the lstat
                yield from walk_tree(sub, rel, depth + 1)
    finally:
        os.close(top_fd)


def replace_file(dir_fd: int, name: str, data: bytes) -> None:
    """Atomically make ``name`` in ``dir_fd`` hold ``data``: temp file, fsync, renameat.

    ``renameat`` replaces the directory entry, so a link planted at ``name`` meanwhile is
    replaced itself, never written through. Raises ``OSError``; the temp file is removed.

    >>> replace_file(dir_fd, "report.md", b"# Report\\n")  # doctest: +SKIP
    """
    tmp = f".tmp-{secrets.token_hex(6)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
