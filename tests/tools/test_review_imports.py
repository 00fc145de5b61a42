"""Second review, finding 1: code planted by the tools never runs outside the sandbox.

With writes allowed and a workspace holding the Python environment or the project, a
``.pth`` file written into site-packages ran in the next (restarted) worker, unsandboxed,
and a module written into the project ran in the worker and would run in the agent itself.
Two walls: a workspace overlapping any place Python imports code from is refused at start,
and the worker imports only from an explicit, read-only path (no ``site``: no ``.pth``).

Worker tools must be importable by reference, so they live at module level here.
"""

from __future__ import annotations

import importlib
import json
import secrets
import site
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.api import Agent
from agent.cli import main
from agent.errors import ConfigError
from agent.types import ToolCall
from tests.tools.test_sandbox import MODES, bwrap
from tools._codepaths import PROJECT, check_workspace
from tools.base import tool
from tools.dispatch import Dispatcher
from tools.policy import ToolPolicies
from tools.registry import ToolRegistry
from tools.sandbox import bwrap_argv

SITE = Path(site.getsitepackages()[0])
CODE_WORKSPACES = [
    pytest.param(PROJECT, id="project"),
    pytest.param(PROJECT / "tools", id="project-package"),
    pytest.param(PROJECT.parent, id="holds-project"),
    pytest.param(Path(sys.prefix), id="venv"),
    pytest.param(SITE, id="site-packages"),
    pytest.param(Path(sys.executable).parent, id="interpreter-dir"),
]


@tool(sandbox="process")
def interpreter() -> dict:
    """How the worker's Python was started and where it imports from."""
    return {"no_site": sys.flags.no_site, "isolated": sys.flags.isolated, "path": sys.path}


def _dispatcher(ws: Path, use_bwrap: bool, tools: list | None = None) -> Dispatcher:
    policies = ToolPolicies(
        workspace=ws, sandbox={"use_bwrap": use_bwrap}, files={"allow_write": True},
        sql={"read_only": False},
    )  # fmt: skip
    registry = ToolRegistry.default(plugins=False)
    for extra in tools or [interpreter]:
        registry.register(extra)
    art = Path(f"/tmp/agent-test-art-{secrets.token_hex(4)}")
    return Dispatcher(registry, policies, run_id="r", artifacts_dir=art)


@pytest.mark.parametrize("use_bwrap", MODES)
@pytest.mark.parametrize("workspace", CODE_WORKSPACES)
async def test_a_workspace_overlapping_code_is_refused(workspace: Path, use_bwrap: bool) -> None:
    async with _dispatcher(workspace, use_bwrap) as d:
        result = await d.call(ToolCall("list_files", {}))
        started = d.worker.pid
    assert result.error == "policy", result.content
    assert "could run as code outside the sandbox" in result.content
    assert started is None, "no worker may start on such a workspace"


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_data_folder_inside_the_project_is_accepted(use_bwrap: bool) -> None:
    ws = PROJECT / "examples" / "sales_duckdb" / "data"
    async with _dispatcher(ws, use_bwrap) as d:
        result = await d.call(ToolCall("list_files", {}))
    assert result.ok, result.content


@pytest.mark.parametrize("workspace", CODE_WORKSPACES)
async def test_the_agent_refuses_such_a_workspace_at_start(tmp_path: Path, workspace: Path) -> None:
    policies = ToolPolicies(workspace=workspace)
    # No store: a checkout under /tmp puts pytest's tmp_path inside the "holds-project"
    # workspace, and the run-store check would speak first.
    agent = Agent("http://127.0.0.1:9", tools=["read_file"], policies=policies, store=None)
    try:
        with pytest.raises(ConfigError, match="could run as code outside the sandbox"):
            await agent.run("go")
    finally:
        await agent.aclose()


def test_agent_tool_call_refuses_the_project_as_workspace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(PROJECT)  # the default --workspace is "."
    for extra in ([], ["--workspace", str(SITE)]):
        args = ["tool", "call", "write_file", "--allow-write", *extra,
                "--args", json.dumps({"path": "zz.pth", "content": "import os"})]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "could run as code outside the sandbox" in result.output
        assert "Traceback" not in result.output
    assert not (PROJECT / "zz.pth").exists() and not (SITE / "zz.pth").exists()


def test_the_check_names_what_the_workspace_holds() -> None:
    with pytest.raises(ConfigError, match=r"contains (the project's code|the Python env)"):
        check_workspace(PROJECT, [])
    with pytest.raises(ConfigError, match="lies inside the project's code"):
        check_workspace(PROJECT / "agent" / "cli", [])
    with pytest.raises(ConfigError, match=r"installed packages|Python environment"):
        check_workspace(SITE / "duckdb", [])
    check_workspace(PROJECT / "examples" / "incident_report" / "workspace", [])


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_the_worker_imports_from_an_explicit_path_without_site(
    tmp_path: Path, use_bwrap: bool
) -> None:
    async with _dispatcher(tmp_path, use_bwrap) as d:
        result = await d.call(ToolCall("interpreter", {}))
    assert result.ok, result.content
    info = json.loads(result.content)
    assert info["no_site"] == 1 and info["isolated"] == 1
    assert not any(p == "" or Path(p).resolve().is_relative_to(tmp_path) for p in info["path"])


@pytest.mark.parametrize("use_bwrap", MODES)
async def test_a_pth_file_in_site_packages_never_runs_in_the_worker(
    tmp_path: Path, use_bwrap: bool
) -> None:
    """As if planted by an earlier write: the worker must not process .pth files at all."""
    token = secrets.token_hex(6)
    pth = SITE / f"zz-agent-review-{token}.pth"
    try:
        # Inert in every other process: it acts only where the cwd holds the ARM file.
        pth.write_text(f"import os; os.path.exists('ARM-{token}') and open('PWNED', 'w').close()\n")
    except OSError:
        pytest.skip("site-packages is not writable here")
    (tmp_path / f"ARM-{token}").touch()
    try:
        async with _dispatcher(tmp_path, use_bwrap) as d:
            result = await d.call(ToolCall("list_files", {}))
    finally:
        pth.unlink()
    assert result.ok, result.content
    assert not (tmp_path / "PWNED").exists(), "the worker ran a .pth file"


async def test_a_tool_whose_code_lives_in_the_workspace_is_refused(tmp_path: Path) -> None:
    name = f"planted_tools_{secrets.token_hex(4)}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(
        "from tools.base import tool\n\n"
        "@tool(sandbox='process')\n"
        "def echo(text: str) -> str:\n"
        "    '''Echo.'''\n"
        "    return text\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
        async with _dispatcher(tmp_path, False, [module.echo]) as d:
            result = await d.call(ToolCall("echo", {"text": "hi"}))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    assert result.error == "policy", result.content
    assert "the code of a sandboxed tool" in result.content


def test_read_only_code_binds_win_over_a_writable_workspace(tmp_path: Path) -> None:
    code = tmp_path / "venv"
    code.mkdir()
    argv = bwrap_argv(tmp_path, writable=True, ro_paths=[code, tmp_path])
    binds = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1) if argv[i].endswith("bind")]
    assert binds[-1] == ("--ro-bind", str(code))
    assert [kind for kind, path in binds if path == str(tmp_path)] == ["--ro-bind"]


@pytest.mark.bwrap
@bwrap
def test_under_bwrap_code_inside_a_writable_workspace_is_read_only(tmp_path: Path) -> None:
    (tmp_path / "venv").mkdir()
    argv = bwrap_argv(tmp_path, writable=True, ro_paths=[tmp_path / "venv"])
    script = "touch data.txt && (touch venv/zz.pth 2>/dev/null && echo planted || echo refused)"
    out = subprocess.run([*argv, "--", "/bin/sh", "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "refused", out
    assert (tmp_path / "data.txt").exists() and not (tmp_path / "venv" / "zz.pth").exists()
