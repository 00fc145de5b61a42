"""Where the BFCL data is: ``AGENT_BFCL_DATA``, else ``shared/data/bfcl`` beside an ancestor.

The project's checkout has ``../shared`` beside it; a git worktree deeper down finds it
further up. Tests that need the data skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def find_bfcl_data() -> Path | None:
    """The BFCL data folder, or None: the env var, then each ancestor's ``shared/data/bfcl``."""
    env = os.environ.get("AGENT_BFCL_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in REPO.parents:
        candidate = parent / "shared" / "data" / "bfcl"
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def bfcl_data() -> Path:
    """The BFCL_v4 data folder; skips the test when it is not present."""
    found = find_bfcl_data()
    if found is None:
        pytest.skip("BFCL data not found (set AGENT_BFCL_DATA or put it in ../shared/data/bfcl)")
    return found
