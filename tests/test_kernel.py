"""The workspace kernel (dataops_kit.runner.kernel): ipykernel as it ships, with the pins, and
WorkspaceError as one line through IPython's own protocol."""

import json
import os
import sys
from pathlib import Path


def kernel_says(root, code, env=None):
    """Run code in a real 'dataops' kernel started the way the runner starts it; what it printed."""
    from dataops_kit.runner import kernel

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


def test_the_stage_kernel_is_ipykernels_own_launcher_and_default_provisioner(clone):
    """One kernel for JupyterLab, nbval and dvc repro, on every system: no provisioner of ours, no other launcher."""
    spec = json.loads((Path(sys.prefix) / "share/jupyter/kernels/dataops/kernel.json").read_text())
    assert spec["argv"][1:3] == ["-m", "ipykernel_launcher"]
    assert "kernel_provisioner" not in spec.get("metadata", {})
    said = kernel_says(clone, "import os, sys; print(os.environ['OPENBLAS_NUM_THREADS'], sys.executable)")[1].split()
    assert said == ["1", sys.executable]


def test_a_workspace_error_shows_as_one_line_through_render_traceback(clone):
    content, printed = kernel_says(clone, "from dataops import WorkspaceError\nraise WorkspaceError('params.yaml: x')")
    assert content["status"] == "error" and content["ename"] == "WorkspaceError"
    assert printed == "WorkspaceError: params.yaml: x"


def test_the_kernel_imports_its_own_projects_helpers_and_no_other_python_imports_a_working_tree(clone):
    """The clone shares this workspace's venv: its kernel still runs the clone's src/dataops, and no
    Python of the venv (git's filter, DVC, the toolkit's commands) has a working tree's folder on its path."""
    said = kernel_says(clone, "import dataops; print(dataops.__file__)")[1].strip()
    assert said == str(clone / "src" / "dataops" / "__init__.py")
    import subprocess

    for folder in (clone, clone / "src"):
        path = subprocess.run([sys.executable, "-c", "import sys; print('\\n'.join(sys.path))"], cwd=folder,
                              capture_output=True, text=True, check=True).stdout.split("\n")
        assert not [entry for entry in path if entry and Path(entry).resolve().is_relative_to(clone)
                    or entry.endswith("/src")], path
