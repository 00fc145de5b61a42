"""The web UI (``agent ui``): a Gradio page driving the real agent loop.

Needs the ``ui`` extra (``pip install 'hermes-vllm-agent[ui]'``). The page is a thin room
on the async API: :mod:`agent.ui.engine` runs turns with ``Agent.stream`` and folds the
typed events into :class:`~agent.ui.view.ChatView`; :mod:`agent.ui.page` lays the page
out and :mod:`agent.ui.handlers` wires it. Importing ``agent.ui`` loads nothing heavy;
:func:`build_app` imports Gradio.

>>> from agent.ui import build_app  # doctest: +SKIP
>>> build_app(task, "http://127.0.0.1:8000").launch(port=7861)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["App", "base_task", "build_app", "is_loopback"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agent.ui import app

        return getattr(app, name)
    raise AttributeError(f"module 'agent.ui' has no attribute {name!r}")
