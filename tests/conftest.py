"""Shared fixtures. Real parts on loopback; no network beyond 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["agent.testing"]

SHARED = Path(__file__).resolve().parents[2] / "shared"
BFCL = SHARED / "data" / "bfcl"


@pytest.fixture
def bfcl_dir() -> Path:
    """The BFCL data folder beside the project; tests that need it skip when it is absent."""
    if not BFCL.is_dir():
        pytest.skip("../shared/data/bfcl is not present")
    return BFCL


def postgres_url() -> str:
    """The test database's URL (``AGENT_TEST_POSTGRES_URL``, which ``.ci/run`` sets after
    starting a local PostgreSQL). Skips without one; fails instead when
    ``AGENT_REQUIRE_POSTGRES=1``, as CI sets it: there a skip would hide a broken setup."""
    url = os.environ.get("AGENT_TEST_POSTGRES_URL")
    if not url:
        message = "AGENT_TEST_POSTGRES_URL is not set (.ci/run starts a local PostgreSQL)"
        if os.environ.get("AGENT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url
