"""Every example runs end to end with its one command, on the simulator, with real tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AGENT = str(Path(sys.executable).with_name("agent"))
EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir() if (p / "task.yaml").exists())

EXPECTED = {
    "sales_duckdb": lambda a: "North" in a and "61,997" in a,
    "weather_api": lambda a: "Lisbon" in a,
    "incident_report": lambda a: (
        a
        == {
            "report_path": "reports/october.md",
            "incidents": 2,
            "most_severe": "CDN certificate expiry (SEV1)",
        }
    ),
}


def test_every_example_is_checked() -> None:
    assert len(EXAMPLES) >= 3 and set(EXAMPLES) == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name: str, tmp_path: Path) -> None:
    folder = ROOT / "examples" / name
    done = subprocess.run(
        [AGENT, "run", str(folder / "task.yaml"), "--sim", str(folder / "script.yaml"), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and EXPECTED[name](result["answer"])
    assert result["tool_calls"] >= 1
    if name == "incident_report":
        report = folder / "workspace" / "reports" / "october.md"
        assert "CDN certificate expiry" in report.read_text()
