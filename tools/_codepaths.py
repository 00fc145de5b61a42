"""Where sandboxed code is imported from, and the rule that keeps the workspace clear of it.

The sandbox worker imports the project, the sandboxed tools' modules and their dependencies.
A model that can write to the workspace (``write_file``, ``COPY … TO``) must never be able to
write code that a Python process imports later: the next worker (restarted after a timeout,
outside the tools' own checks in plain-process mode) or the agent itself on its next start.
A ``.pth`` file in site-packages runs at every start of the interpreter; a module in the
project or in a tool's package replaces the real one. Two walls:

1. **Explicit imports.** The worker (and the search helper) start as
   ``python -I -S -B -c BOOT PATH…``: isolated (no ``PYTHON*`` variables, no user site, no
   current directory on ``sys.path``) and without ``site`` (no ``.pth`` file is processed,
   anywhere), then ``sys.path`` is exactly :func:`import_path`: the project, the tools'
   import roots and this interpreter's own ``sys.path``. Under bubblewrap each of these is
   bound read-only after (so over) any writable bind.
2. **No overlap.** :func:`check_workspace` refuses a workspace that contains, or lies
   inside, the interpreter's environment (prefixes, site-packages) or a folder of the import
   path. Inside the project or a tool's root, only a folder that is not part of a package
   is accepted (``examples/sales/data``: yes; ``tools/``: no). The agent checks at start,
   ``agent tool call`` before it runs a tool, and the worker before it starts.

Trade-off: without ``site``, packages that need a ``.pth`` file to be importable (old-style
namespace packages, editable installs done with import hooks) are found only through the
folders listed here; this project's own editable install is covered by adding its folder.

>>> isolated_python("print(1)", ["/p"])[1:5]
['-I', '-S', '-B', '-c']
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

__all__ = ["PROJECT", "check_workspace", "import_path", "import_roots", "isolated_python"]

PROJECT = Path(__file__).resolve().parents[1]
"""The folder holding the ``agent``, ``tools`` and ``graphs`` packages."""
_BOOT = "import sys; sys.path[:] = sys.argv[1:]; "


def import_roots(tools: Iterable[Any]) -> list[Path]:
    """The ``sys.path`` roots the worker needs to import the sandboxed tools by reference."""
    roots: list[Path] = []
    for t in tools:
        module = sys.modules.get((t.ref or "").partition(":")[0])
        file = getattr(module, "__file__", None)
        if not file:
            continue
        root = Path(file).resolve().parent
        while (root / "__init__.py").exists():
            root = root.parent
        if root not in roots and root != PROJECT:
            roots.append(root)
    return roots


def import_path(roots: Iterable[Path] = ()) -> list[str]:
    """The worker's whole ``sys.path``: the project, the tools' roots, then this process's.

    Relative and missing entries of this process's ``sys.path`` (``''``, an absent zip) are
    left out.
    """
    entries = [str(PROJECT), *map(str, roots)]
    entries += [p for p in sys.path if p and os.path.isabs(p) and os.path.exists(p)]
    return list(dict.fromkeys(entries))


def isolated_python(code: str, path: list[str]) -> list[str]:
    """argv running ``code`` in a Python that imports from ``path`` and nothing else."""
    return [sys.executable, "-I", "-S", "-B", "-c", _BOOT + code, *path]


def check_workspace(workspace: Path, tools: Iterable[Any]) -> None:
    """Refuse (ConfigError) a workspace overlapping a place Python imports code from.

    >>> check_workspace(PROJECT, [])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    agent.errors.ConfigError: workspace ... contains the project's code ...
    """
    ws = Path(workspace).resolve()
    for place, what, packages_only in _code_places(import_roots(tools)):
        if place == ws or place.is_relative_to(ws):
            where = "" if place == ws else f" ({place})"
            raise ConfigError(_refusal(ws, f"contains {what}{where}"))
        if ws.is_relative_to(place) and (not packages_only or _in_package(place, ws)):
            raise ConfigError(_refusal(ws, f"lies inside {what} ({place})"))


def _code_places(roots: list[Path]) -> list[tuple[Path, str, bool]]:
    """``(folder, what it is, only its packages are code)`` for every place code comes from."""
    env = "the Python environment"
    places = [(Path(p), env, False) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    places.append((Path(sys.executable).parent, "the Python interpreter", False))
    sites = site.getsitepackages()
    if site.ENABLE_USER_SITE:
        sites.append(site.getusersitepackages())
    places += [(Path(p), "installed packages (site-packages)", False) for p in sites]
    places.append((PROJECT, "the project's code", True))
    places += [(r, "the code of a sandboxed tool", True) for r in roots]
    places += [(Path(p), "a folder Python imports from", True) for p in import_path(roots)]
    return [(p.resolve(), what, packages_only) for p, what, packages_only in places]


def _in_package(root: Path, inner: Path) -> bool:
    """Whether ``inner`` (below ``root``) is in a package Python could import from ``root``."""
    top = root / inner.relative_to(root).parts[0]
    return (top / "__init__.py").exists() or top.suffix == ".py"


def _refusal(ws: Path, why: str) -> str:
    return (
        f"workspace {ws} {why}: files the tools write there could run as code outside the "
        "sandbox (a .pth file or a module is imported by the next sandbox worker or by the "
        "agent itself). Use a folder that holds only data, outside the Python environment "
        "and the project's code (e.g. a data/ folder beside the task file)"
    )
