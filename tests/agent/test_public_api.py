"""The public face: ``from agent import ...`` gives every documented name, and README's
Python API examples run as printed (against the simulator instead of a GPU host)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import agent
from agent.sim import ScriptPolicy
from agent.testing import run_sim

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(agent._EXPORTS))
def test_every_public_name_imports_from_its_module(name: str) -> None:
    assert name in agent.__all__
    value = getattr(agent, name)
    module = importlib.import_module(agent._EXPORTS[name])
    assert value is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        agent.no_such_name  # noqa: B018


def _python_api_blocks() -> list[str]:
    section = README.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readmes_python_api_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _python_api_blocks()[:2]
    example = ROOT / "examples" / "sales_duckdb"
    monkeypatch.chdir(tmp_path)  # the run store (.agent) goes here
    with run_sim(ScriptPolicy.from_file(example / "script.yaml")) as sim:
        code = first.replace("examples/sales_duckdb/task.yaml", str(example / "task.yaml"))
        exec(compile(code.replace("http://127.0.0.1:8000", sim.url), "README", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("done North had the highest total revenue")
    assert out[1].startswith("run_started ") and out[-1].startswith("final ")

    (tmp_path / "data").mkdir()
    scope: dict[str, object] = {}
    with run_sim(ScriptPolicy(["It is 3."])) as sim:
        exec(compile(second.replace("http://127.0.0.1:8000", sim.url), "README", "exec"), scope)
        built = scope["agent"]
        import asyncio

        async def go() -> object:
            try:
                return await built.run("1 + 2?")  # type: ignore[attr-defined]
            finally:
                await built.aclose()  # type: ignore[attr-defined]

        result = asyncio.run(go())
    assert (result.status, result.answer) == ("done", "It is 3.")  # type: ignore[attr-defined]
    assert scope["add"](a=1, b=2) == 3  # type: ignore[operator]


def test_tune_gc_collects_less_often_and_freezes_what_is_loaded() -> None:
    """Run in a child: it changes the whole process's collector."""
    code = (
        "import gc, agent; before = gc.get_threshold(); agent.tune_gc(); "
        "print(before, gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["(700,", "10,", "10)", "(50000,", "20,", "100)", "True"]


def test_run_ids_made_in_one_second_do_not_collide() -> None:
    """500 runs submitted at once used to share an id now and then (24 random bits)."""
    from agent.api import _new_run_id

    ids = [_new_run_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert len(ids[0].rsplit("_", 1)[-1]) == 12
