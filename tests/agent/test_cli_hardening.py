"""Common mistakes get exit 2 and a message that says what to fix; stopped runs say so.

Each test here failed before the hardening issue: a traceback, a lost answer, a run left
``running`` forever, an id that could not be copied.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.runs import RunStore
from agent.testing import run_sim
from tests.agent.test_cli_run import _run, _script, _task

AGENT = [sys.executable, "-m", "agent.cli"]


def _agent(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# ---- bad input: exit 2, file:line, no traceback -----------------------------------------


def test_a_misspelt_tool_is_refused_at_load_with_its_line(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: x\ntools:\n  enabled:\n    - read_file\n    - sql_querry\n")
    code, _, err = _run(tmp_path, str(task), "--sim", str(_script(tmp_path, ["hi"])))
    assert code == 2
    assert "task.yaml:5: tools.enabled[1]: unknown tool 'sql_querry'" in err
    assert "did you mean 'sql_query'?" in err
    assert "SIMULATED" not in err, "checked before the simulator starts"


def test_a_task_file_that_is_not_utf8(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_bytes(b"name: x\ninput: caf\xe9\n")
    code, _, err = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9")
    assert code == 2 and "task.yaml:2: the file is not UTF-8 text (byte 0xe9" in err


def test_a_sim_script_that_is_not_utf8(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: x\n")
    script = tmp_path / "script.yaml"
    script.write_bytes(b"- ok\n- caf\xe9\n")
    code, _, err = _run(tmp_path, str(task), "--sim", str(script))
    assert code == 2 and "script.yaml:2: the script is not UTF-8 text" in err
    result = _agent("sim", "--port", "0", "--script", str(script), cwd=tmp_path)
    assert result.returncode == 2 and "not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8000", "http://", "not a url"])
def test_a_bad_model_url_option(tmp_path: Path, url: str) -> None:
    task = _task(tmp_path, "input: x\n")
    code, _, err = _run(tmp_path, str(task), "--model-url", url)
    assert code == 2 and "is not an http:// or https:// URL" in err


def test_trace_into_a_missing_folder_is_refused_before_the_run(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: x\n")
    script = _script(tmp_path, ["the answer"])
    code, out, err = _run(
        tmp_path, str(task), "--sim", str(script), "--trace", str(tmp_path / "nope" / "t.jsonl")
    )
    assert code == 2 and "nope does not exist" in err and out == ""
    assert not (tmp_path / ".agent" / "runs.db").exists(), "no run was started"


def test_a_failed_trace_copy_keeps_the_answer(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: x\n")
    script = _script(tmp_path, ["the answer"])
    # /proc exists but takes no new files (not even from root): the copy fails after the run
    code, out, err = _run(tmp_path, str(task), "--sim", str(script), "--trace", "/proc/t.jsonl")
    assert out.strip() == "the answer", "the computed answer is printed first"
    assert code == 2 and "--trace" in err and "the trace is kept at" in err


def test_an_alias_bomb_is_refused_quickly_within_a_memory_limit(tmp_path: Path) -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    task = tmp_path / "bomb.yaml"
    task.write_text("\n".join([*levels, "input: hi"]) + "\n")

    def limit() -> None:  # 1 GiB: the unbounded walk needed more than 3 GB
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    result = subprocess.run(
        [*AGENT, "run", str(task), "--model-url", "http://127.0.0.1:9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert result.returncode == 2, result.stderr
    assert "expands to more than 200,000 values through its aliases" in result.stderr


def test_a_huge_task_file_is_refused(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("input: x\n# " + "x" * (5 * 2**20) + "\n")
    code, _, err = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9")
    assert code == 2 and "larger than 4 MiB" in err


@pytest.mark.parametrize(
    "option",
    [
        ["--error-rate", "2"],
        ["--stall", "-1"],
        ["--disconnect-after", "-3"],
        ["--speed", "0"],
        ["--max-model-len", "0"],
        ["--error-status", "200"],
    ],
)
def test_sim_options_are_validated(tmp_path: Path, option: list[str]) -> None:
    result = _agent("sim", "--port", "0", *option, cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and "Invalid value" in result.stderr


def test_runs_list_with_a_missing_store_is_an_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    result = CliRunner().invoke(main, ["runs", "list", "--store", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no run store at" in result.stderr


# ---- stores, ids and resume --------------------------------------------------------------


def test_agent_run_honours_agent_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_STORE", str(tmp_path / "elsewhere"))
    task = _task(tmp_path, "input: x\n")
    code, _, err = _run(tmp_path, str(task), "--sim", str(_script(tmp_path, ["ok"])))
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "runs.db").is_file()
    assert not (tmp_path / ".agent").exists()


def _one_run(tmp_path: Path) -> str:
    task = _task(tmp_path, "name: first\ninput: x\n")
    code, out, err = _run(tmp_path, str(task), "--sim", str(_script(tmp_path, ["ok"])), "--json")
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])["run_id"]


def test_ids_fit_80_columns_and_short_prefixes_work(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from agent.cli import main

    run_id = _one_run(tmp_path)
    short = run_id.rsplit("_", 1)[-1]
    store = str(tmp_path / ".agent")
    listing = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["runs", "list", "--store", store])
    assert listing.exit_code == 0
    assert max(len(line) for line in listing.stdout.splitlines()) <= 80
    assert short in listing.stdout, "the whole short id is shown"
    shown = CliRunner().invoke(main, ["runs", "show", short[:4], "--store", store])
    assert shown.exit_code == 0 and run_id in shown.stdout


def test_resume_takes_a_short_id_and_refuses_another_task(tmp_path: Path) -> None:
    run_id = _one_run(tmp_path)
    short = run_id.rsplit("_", 1)[-1]
    other = tmp_path / "other.yaml"
    other.write_text("name: second\ninput: y\n")
    script = str(_script(tmp_path, ["ok", "again"]))
    code, out, err = _run(tmp_path, str(other), "--sim", script, "--resume", short[:5])
    assert code == 2 and "belongs to task 'first'" in err and out == ""
    code, out, err = _run(
        tmp_path, str(tmp_path / "task.yaml"), "--sim", script, "--resume", short, "--json"
    )
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["run_id"] == run_id
    code, _, err = _run(tmp_path, str(tmp_path / "task.yaml"), "--sim", script, "--resume", "zzzz")
    assert code == 2 and "no run 'zzzz'" in err


def test_resume_refuses_another_file_of_the_same_name_and_accepts_any_spelling_of_its_own(
    tmp_path: Path,
) -> None:
    run_id = _one_run(tmp_path)  # task.yaml, name: first
    script = str(_script(tmp_path, ["ok", "again"]))
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "task.yaml").write_text("name: first\ninput: something else\n")
    code, out, err = _run(tmp_path, str(twin / "task.yaml"), "--sim", script, "--resume", run_id)
    assert code == 2 and "resume it with the task file that started it" in err and out == ""
    # The same file by another path (relative here, absolute above) is the same task.
    code, out, err = _run(tmp_path, "task.yaml", "--sim", script, "--resume", run_id, "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["run_id"] == run_id
    # An unnamed task is known by its file, however that file is spelt.
    (tmp_path / "anon.yaml").write_text("input: x\n")
    code, out, err = _run(tmp_path, "anon.yaml", "--sim", script, "--json")
    anon = json.loads(out.strip().splitlines()[-1])["run_id"]
    code, out, err = _run(
        tmp_path, str(tmp_path / "anon.yaml"), "--sim", script, "--resume", anon, "--json"
    )
    assert code == 0, err


# ---- stopped runs -------------------------------------------------------------------------


def _start_stalled_run(tmp_path: Path, sim_url: str) -> subprocess.Popen[str]:
    task = _task(tmp_path, "name: slow\ninput: x\n")
    proc = subprocess.Popen(
        [*AGENT, "run", str(task), "--model-url", sim_url],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / ".agent" / "runs.db"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if db.is_file() and RunStore(db).list():
            return proc
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the run never started")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_marks_the_run_interrupted_and_says_how_to_continue(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """SIGTERM (docker stop, systemd) and Ctrl-C (SIGINT) alike."""
    from agent.sim import Faults, ScriptPolicy

    with run_sim(ScriptPolicy(["too late"]), faults=Faults(stall_s=60)) as sim:
        proc = _start_stalled_run(tmp_path, sim.url)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    [record] = RunStore(tmp_path / ".agent" / "runs.db").list()
    assert record.status == "interrupted"
    assert f"--resume {record.short_id}" in err and "Traceback" not in err


def test_a_killed_run_shows_as_interrupted(tmp_path: Path) -> None:
    from agent.sim import Faults, ScriptPolicy

    with run_sim(ScriptPolicy(["too late"]), faults=Faults(stall_s=60)) as sim:
        proc = _start_stalled_run(tmp_path, sim.url)
        store = RunStore(tmp_path / ".agent" / "runs.db")
        assert store.list()[0].status == "running", "alive: still running"
        proc.kill()
        proc.wait(timeout=30)
    assert store.list()[0].status == "interrupted"
    assert store.list(status="interrupted")[0].status == "interrupted"


# ---- a plain install ----------------------------------------------------------------------


def test_agent_run_sim_works_without_pytest(tmp_path: Path) -> None:
    task = _task(tmp_path, "input: x\n")
    script = _script(tmp_path, ["no pytest needed"])
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # `import pytest` now fails
        "from agent.cli import main\n"
        f"main(['run', {str(task)!r}, '--sim', {str(script)!r}])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no pytest needed"


def test_a_control_character_in_a_task_file(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("name: x\ninput: 'a\x01b'\n")  # found by the CLI fuzz test
    code, _, err = _run(tmp_path, str(task), "--model-url", "http://127.0.0.1:9")
    assert code == 2 and "task.yaml:2: the file holds the control character U+0001" in err
