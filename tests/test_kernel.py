"""The workspace kernel (dataops.kernel): the runner's speed-ups and their stock fallback, debugpy
only where a debugger can attach, and WorkspaceError as one line through IPython's own protocol."""

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import kernels_in, run, set_param


def kernel_says(root, code, env=None):
    """Run code in a real 'dataops' kernel started the way the runner starts it; what it printed."""
    from dataops import kernel

    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        manager = kernel.start("dataops", cwd=root / "notebooks")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    client = manager.blocking_client()
    client.start_channels()
    printed = []
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(code, timeout=60, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "") if msg["msg_type"] == "stream" else
            "\n".join(msg["content"].get("traceback", [])) if msg["msg_type"] == "error" else ""))
    finally:
        client.stop_channels()
        kernel.stop(manager)
    return reply["content"], "".join(printed)


def test_a_headless_stage_kernel_skips_debugpy_and_jupyterlabs_keeps_it(clone):
    code = "import sys; print('debugpy' in sys.modules and sys.modules['debugpy'] is not None)"
    assert kernel_says(clone, code, {"DATAOPS_STAGE": "train_model"})[1].strip() == "False"
    assert kernel_says(clone, code)[1].strip() == "True"


def test_a_workspace_error_shows_as_one_line_through_render_traceback(clone):
    content, printed = kernel_says(clone, "from dataops import WorkspaceError\nraise WorkspaceError('params.yaml: x')")
    assert content["status"] == "error" and content["ename"] == "WorkspaceError"
    assert printed == "WorkspaceError: params.yaml: x"


def kernels_that_imported(output, package):
    """How many processes imported `package` themselves, in the output of a run with PYTHONPROFILEIMPORTTIME=1."""
    return len(re.findall(rf"^import time:.*\|\s+{package}$", output, re.MULTILINE))


@pytest.fixture
def sockets():
    """A folder of the test's own for the preloaded process's socket (pytest's
    tmp_path is too long for a Unix socket's path)."""
    folder = Path(tempfile.mkdtemp(prefix="dataops-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("case", ["tested jupyter_client", "stock fallback", "no room for a preloaded process"])
def test_stages_run_with_the_speed_ups_and_with_stock_jupyter_client(workspace, case, sockets):
    set_param(workspace, "process.test_size", 0.25)
    env = {"PYTHONPROFILEIMPORTTIME": "1", "XDG_RUNTIME_DIR": str(sockets)}
    if case == "stock fallback":
        env["DATAOPS_STOCK_KERNEL"] = "1"
    if case == "no room for a preloaded process":  # its socket folder cannot be made: a file is in the way
        (sockets / f"dataops-{os.getuid()}").write_text("")
    result = run("dvc repro", cwd=workspace, env=env)
    assert all(f"✓ {name}" in result.stdout for name in ("process_data", "train_model", "evaluate"))
    # With the speed-ups, the first stage's kernel imports pandas; the two
    # after it are forks of the preloaded process, which has it already.
    # Without: every kernel imports it. Nothing is left running either way.
    assert kernels_that_imported(result.stderr, "pandas") == (1 if case == "tested jupyter_client" else 3)
    assert kernels_in(workspace, wait=1) == [], "no kernel nor preloaded process left running"
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    if case == "tested jupyter_client":  # a run that starts no preloaded process leaves no file behind either
        run("dvc repro --force --single-item evaluate", cwd=workspace, env=env)
        assert list((sockets / f"dataops-{os.getuid()}").iterdir()) == []
