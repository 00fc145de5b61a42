"""Which workspace files DuckDB may open: the file tools' rule, applied to SQL.

The file tools open only regular files with one hard link (`tools.files`). DuckDB opens files
by path, from any table function, replacement scan (``FROM 'x.csv'``), glob or view, so the
rule cannot be checked per path before a query runs. Instead the whole workspace is checked:
:func:`unsafe_files` lists every regular file with more than one hard link (it may be a link
to a file outside the workspace; nothing on the inode says which) and every special file
(a FIFO or device would hang a reader), and the SQL tool refuses to run while any is there.
It checks again after the query and discards the result if one appeared meanwhile, so a link
made during a query cannot carry data out either.

Trade-offs:

- One such file anywhere in the workspace (hidden folders too: DuckDB reads those) stops
  every query, not just the ones that would read it; finding out which files a query opens
  would mean parsing SQL, which views, macros and globs defeat. The message names the files.
- Each call walks the workspace twice (one ``lstat`` per file: about 6 ms per 1,000 files
  here), which is cheap next to a query for the workspaces the tool is meant for.
- Symbolic links are not descended or refused: DuckDB resolves a link before its
  ``allowed_directories`` check, so a link can only lead to a file inside the workspace,
  which this walk checks at its real path. A link swapped between DuckDB's check and its open
  is a race that bubblewrap closes (see `tools.sql`).

>>> file_problem(os.stat_result((0o100644, 0, 0, 2, 0, 0, 10, 0, 0, 0)))
'2 hard links'
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tools._filesearch import clean
from tools._safeopen import kind_of

__all__ = ["FILE_SUFFIXES", "data_files", "file_problem", "shown", "unsafe_files"]

FILE_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".parquet", ".json", ".jsonl", ".ndjson", ".json.gz")
"""Workspace files ``sql_tables`` lists as queryable by relative path."""


def file_problem(st: os.stat_result) -> str | None:
    """Why DuckDB must not open a file with this ``lstat``, or None for a safe one.

    Directories and symbolic links are fine here (see the module docstring).
    """
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return f"{st.st_nlink} hard links" if st.st_nlink > 1 else None
    if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return None
    return f"a {kind_of(mode)}"


def unsafe_files(root: Path, limit: int = 5) -> list[str]:
    """Up to ``limit`` entries under ``root`` DuckDB must not open, as ``'a/b.csv' (why)``.

    Walks every folder (hidden ones too) by path, as DuckDB reaches them; never descends
    a symbolic link. Entries that vanish or cannot be listed meanwhile are skipped: the
    check after the query sees what was left.

    >>> unsafe_files(Path(tmp))  # doctest: +SKIP
    ["'data/hard.csv' (2 hard links)"]
    """
    found: list[str] = []
    folders = [""]
    while folders:
        rel = folders.pop()
        try:
            entries = list(os.scandir(root / rel if rel else root))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(child)
                    continue
                why = file_problem(entry.stat(follow_symlinks=False))
            except OSError:
                continue
            if why:
                found.append(f"{shown(child)} ({why})")
                if len(found) >= limit:
                    return found
    return found


def data_files(root: Path, limit: int) -> list[str]:
    """Relative paths of data files under ``root``: no hidden folders, no symlinks."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if name.lower().endswith(FILE_SUFFIXES) and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
                if len(found) >= limit:
                    return found
    return found


def shown(rel: str) -> str:
    """A workspace path as messages show it: quoted, control characters escaped."""
    return "'" + clean(rel) + "'"
