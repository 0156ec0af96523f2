"""`make` on a real machine: interrupted at any point it finishes the next
time, and a copied or moved workspace runs its own code and repairs its venv."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import make_clone, new_machine_env


def make(root, *targets, env=None):
    return subprocess.run(["make", *targets], cwd=root, env=env or new_machine_env(), capture_output=True, text=True)


def interrupt_make_when(root, ready, timeout=120, python=None):
    """Start `make setup`, press Ctrl-C (to the whole process group, as a terminal does) once `ready()` holds."""
    process = subprocess.Popen(["make", "setup", *([f"PYTHON={python}"] if python else [])], cwd=root,
                               env=new_machine_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               # A terminal's job takes Ctrl-C even when this suite runs in the background
                               # (where a shell hands its children SIGINT ignored).
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "make finished before the interruption point"
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=60)


def python_held_inside_venv(folder: Path) -> tuple:
    """A python3 that, asked for `-m venv`, makes the venv's interpreter but no pip yet, then waits:
    `python -m venv` held at a point the test picks. Returns its path and the file it touches then."""
    held = folder / "held"
    wrapper = folder / "python3"
    wrapper.write_text(f"""#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then
  {shlex.quote(os.path.realpath(sys.executable))} -m venv --without-pip "$3" && touch {shlex.quote(str(held))} && exec sleep 600
fi
exec {shlex.quote(os.path.realpath(sys.executable))} "$@"
""")
    wrapper.chmod(0o755)
    return wrapper, held


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A clone whose first `make` was interrupted three times: inside `python -m venv`, then
    after the venv was complete, then during the package install; then `make` ran to the end."""
    base = tmp_path_factory.mktemp("setup")
    root = make_clone(base / "ws", share_venv=False)
    venv = root / ".venv"
    python, held = python_held_inside_venv(base)
    interrupt_make_when(root, held.exists, python=python)
    assert (venv / "bin" / "python").exists() and not (venv / "bin" / "pip").exists()
    interrupt_make_when(root, lambda: (venv / ".made-in").exists())
    interrupt_make_when(root, lambda: (venv / "bin" / "uv").exists())
    result = make(root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def test_make_interrupted_at_any_point_finishes_the_next_time(made):
    root, result = made
    assert "✓ evaluate" in result.stdout
    assert "pipeline's inputs" not in result.stdout
    assert subprocess.run([root / ".venv/bin/dvc", "version"], cwd=root, capture_output=True).returncode == 0


def test_the_dvc_command_is_pips_and_the_next_make_undoes_an_older_toolkits_rewrite(made):
    root, _ = made
    dvc = root / ".venv/bin/dvc"
    assert "from dvc.cli import main" in dvc.read_text() and "dataops" not in dvc.read_text()
    dvc.write_text(dvc.read_text().replace("import sys\n", "import sys\nimport dataops_kit.runner.dvclock\n", 1))
    (root / "kit/src/dataops_kit/install.py").touch()  # as after a pull of this toolkit
    result = make(root, "setup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from dvc.cli import main" in dvc.read_text() and "dataops" not in dvc.read_text()


def test_make_in_a_workspace_sharing_the_venv_leaves_it_working_after_that_workspace_goes(made, tmp_path):
    """`make` there sets up that clone only: the venv keeps its kernel, dvc command and import path."""
    root, _ = made
    other = make_clone(tmp_path / "other", share_venv=False)
    (other / ".venv").symlink_to(root / ".venv")
    (other / "kit/src/dataops_kit/install.py").touch()  # as after a pull that changed it: make installs again
    result = make(other, "setup")
    assert "left alone" in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(other)
    assert subprocess.run([root / ".venv/bin/dvc", "version"], cwd=root, capture_output=True).returncode == 0
    kernel = json.loads((root / ".venv/share/jupyter/kernels/dataops/kernel.json").read_text())
    assert Path(kernel["argv"][0]).exists()
    for script in (root / ".venv/bin").iterdir():  # the stages' dataops-run among them
        first = script.read_bytes()[:200].split(b"\n")[0] if script.is_file() else b""
        if first.startswith(b"#!/"):
            assert Path(first[2:].split()[0].decode()).exists(), f"{script.name}: {first}"


def test_a_copied_workspace_runs_its_own_code(made, tmp_path):
    root, _ = made
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    with open(copy / "src/dataops/__init__.py", "a") as module:
        module.write('\nprint("helpers of the copy")\n')
    # After `cp -a`, the copy's `source .venv/bin/activate` puts the original's venv on PATH.
    env = new_machine_env()
    env["PATH"] = f"{root / '.venv/bin'}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["dvc", "repro"], cwd=copy, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "helpers of the copy" in result.stdout
    assert "helpers of the copy" in (copy / "reports/01_get_data.ipynb").read_text()
    assert "helpers of the copy" not in (root / "reports/01_get_data.ipynb").read_text()


def test_a_moved_workspace_gets_a_venv_of_its_own(made, tmp_path):
    root, _ = made
    moved = tmp_path / "moved"
    shutil.move(root, moved)
    try:
        result = make(moved)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"Making .venv for {moved}" in result.stdout
        assert (moved / ".venv/.made-in").read_text().strip() == str(moved)
        assert str(moved) in (moved / ".venv/bin/dvc").read_text().splitlines()[0]
        assert "Data and pipelines are up to date." in make(moved).stdout
    finally:
        shutil.move(moved, root)


def test_make_in_a_copy_with_its_own_venv_first_on_path_gets_a_venv_of_its_own(made, tmp_path):
    """After `cp -a` and `source .venv/bin/activate` in the copy, `make` replaces that venv (it names
    the original), so it must not run the Python inside it."""
    root, _ = made
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    env = new_machine_env()
    env["PATH"] = f"{copy / '.venv/bin'}{os.pathsep}{env['PATH']}"
    result = make(copy, "setup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Making .venv for {copy}" in result.stdout
    assert (copy / ".venv/.made-in").read_text().strip() == str(copy)
    unactivated = new_machine_env()  # the venv's dvc, typed by its path, nothing activated
    for dvc in ([copy / ".venv/bin/dvc"], [copy / ".venv/bin/python", "-m", "dvc"]):
        result = subprocess.run([*dvc, "repro", "--force", "--single-item", "process_data"], cwd=copy,
                                env=unactivated, capture_output=True, text=True)
        assert result.returncode == 0 and "✓ process_data" in result.stdout, result.stdout + result.stderr
