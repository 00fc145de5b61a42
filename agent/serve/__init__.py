"""``agent serve``: the HTTP service — runs API, server-sent events, OpenAI-compatible facade.

>>> from agent.serve import ServeConfig, create_app
>>> app = create_app(ServeConfig(tasks=[Path("examples/sales_duckdb/task.yaml")]))  # doctest: +SKIP

See :mod:`agent.serve.app` (the application), ``_routes`` (runs API), ``_openai`` (the
facade), ``_runner`` (runs across replicas), ``_hub`` (stored, numbered events),
``_security`` (tokens, limits) and README's "HTTP service" section for every route.
"""

from __future__ import annotations

from agent.serve._security import SecurityConfig
from agent.serve.app import ServeConfig, Service, create_app

__all__ = ["SecurityConfig", "ServeConfig", "Service", "create_app"]
