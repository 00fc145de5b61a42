"""Build and serve the web UI: ``agent ui`` and embedding in Python.

>>> from agent.task import Task
>>> app = build_app(Task(input="-"), "http://127.0.0.1:8000")  # doctest: +SKIP
>>> app.launch(prevent_thread_lock=True)  # doctest: +SKIP
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.llm.base import Backend
    from agent.task import Task
    from agent.ui.engine import Engine

__all__ = ["App", "base_task", "build_app", "is_loopback"]

UI_TASK_NAME = "web ui"
"""The task name of page runs when the server started without a task file."""


def base_task(path: Path | None, *, workspace: Path | None, store: str | None) -> Task:
    """The task every page run derives from: the file's, or a bare one (no tools ticked).

    ``workspace`` and ``store`` override the file's (they are the server's to choose).
    """
    from agent.task import Task, load_task

    task = load_task(path) if path is not None else Task(name=UI_TASK_NAME, input="-")
    update: dict[str, Any] = {}
    if workspace is not None:
        update["workspace"] = workspace.resolve()
    if store is not None:
        update["store"] = store
    return task.model_copy(update=update) if update else task


@dataclass
class App:
    """The page and its engine; :meth:`launch` serves it, :meth:`close` stops both."""

    blocks: Any
    engine: Engine

    def launch(
        self,
        host: str = "127.0.0.1",
        port: int = 7861,
        *,
        auth: tuple[str, str] | None = None,
        prevent_thread_lock: bool = True,
        quiet: bool = False,
    ) -> str:
        """Serve on ``host:port``; returns the local URL."""
        from agent.ui.page import CSS, THEME

        self.blocks.queue(default_concurrency_limit=None)
        self.blocks.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            prevent_thread_lock=prevent_thread_lock,
            quiet=quiet,
            show_error=True,
            ssr_mode=False,
            mcp_server=False,
            run_history=False,
            footer_links=["api", "settings"],
            max_file_size="4mb",
            theme=THEME,
            css=CSS,
        )
        return str(self.blocks.local_url)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop running turns (they end ``interrupted``), close agents, stop serving."""
        self.engine.close_from_thread(timeout_s)
        self.blocks.close(verbose=False)


def build_app(
    task: Task,
    model_url: str,
    *,
    simulated: str | None = None,
    backend: Callable[[str], Backend] | None = None,
) -> App:
    """The page for ``task`` (policies, limits, store) talking to ``model_url``.

    ``simulated`` says what the simulator replays (the page shows a banner); ``backend``
    makes the model backend for a URL instead of ``VLLMBackend`` (the backend seam).
    """
    from agent.ui.engine import Engine
    from agent.ui.page import PageConfig, build_page

    engine = Engine(task, model_url=model_url, backend=backend)
    blocks = build_page(engine, PageConfig(model_url=model_url, simulated=simulated))
    return App(blocks, engine)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``is_loopback("127.0.0.1") is True``."""
    if host.strip("[]").lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
