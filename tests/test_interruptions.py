"""Ctrl-C, kill -9 and a second terminal: the next `dvc repro` still gives the exact outputs."""

import os
import signal
import subprocess

import pytest

from helpers import edit_cell, kernels_in, locked_md5, md5, run, workspace_env

OUTPUTS = ["data/processed/train.csv", "models/model.skops", "reports/metrics.json"]


@pytest.fixture
def slow_training(workspace, tmp_path):
    """Training that, while the FIFO `hold` exists, waits in its cell [3] until the test writes to it
    (recorded in dvc.lock first): an interruption or a second terminal lands inside that cell
    however fast or loaded the machine is. Returns the workspace and the FIFO's path."""
    hold = tmp_path / "hold"
    edit_cell(workspace, "03_train_model.ipynb", "model = MODELS",
              f"import os\nif os.path.exists({str(hold)!r}):\n    open({str(hold)!r}).read()\nmodel = MODELS")
    run("dvc repro", cwd=workspace)
    os.mkfifo(hold)
    return workspace, hold


def release(hold):
    """Let the held cell go on (it reads to the end of what is written), and hold nothing more."""
    with open(hold, "w") as fifo:
        fifo.write("go")
    hold.unlink()


def start(cmd, root):
    """A command in its own process group, as in a terminal; returns it once the fit has begun."""
    # No shell in between: the test reaps dvc itself, as a terminal would.
    process = subprocess.Popen(cmd.split(), cwd=root, env={**os.environ, **workspace_env(root)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    for line in process.stdout:
        if "train_model [3/" in line:  # the held cell of slow_training
            return process
    raise AssertionError(f"training never started: {process.wait()}")


def test_a_stage_leaves_no_kernel_behind(workspace, tmp_path):
    # Output to a file, not a pipe: waiting for a pipe to close would also
    # wait for a kernel that inherited it.
    with open(tmp_path / "log", "w") as log:
        stage = subprocess.Popen("dataops-run notebooks/02_process_data.ipynb".split(), cwd=workspace,
                                 env={**os.environ, **workspace_env(workspace)}, stdout=log, stderr=log)
        seen = []
        while stage.poll() is None and not seen:  # the check below can see a kernel: here is one
            seen = kernels_in(workspace)
        assert stage.wait(timeout=120) == 0, (tmp_path / "log").read_text()
    assert seen, "no kernel seen while the stage ran"
    assert kernels_in(workspace) == []


def test_a_notebook_naming_a_missing_kernel_fails_with_one_line(workspace):
    notebook = workspace / "notebooks/02_process_data.ipynb"
    notebook.write_text(notebook.read_text().replace('"name": "dataops"', '"name": "no-such-kernel"'))
    result = run("dataops-run notebooks/02_process_data.ipynb", cwd=workspace, check=False)
    assert result.returncode == 1
    assert "✗ process_data: notebooks/02_process_data.ipynb asks for the kernel 'no-such-kernel', which is not installed: run `make`" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_training_then_repro_gives_the_uninterrupted_outputs(slow_training, sig):
    workspace, hold = slow_training
    good = {out: locked_md5(workspace, out) for out in OUTPUTS}
    process = start("dvc repro --single-item --force train_model", workspace)
    os.killpg(process.pid, sig)
    output = process.stdout.read()
    process.wait(timeout=60)
    assert process.returncode != 0, output
    hold.unlink()
    # Ctrl-C: the runner stops its kernel before it exits. kill -9 gives the runner no
    # chance; the kernel (ipykernel's parent poller) notices its parent is gone within a second or so.
    assert kernels_in(workspace, wait=1 if sig == signal.SIGINT else 5) == []
    if sig == signal.SIGINT:  # the runner puts the last good outputs back itself
        assert {out: md5(workspace / out) for out in OUTPUTS} == good

    run("dvc repro", cwd=workspace)
    assert {out: md5(workspace / out) for out in OUTPUTS} == good
    assert "up to date" in run("dvc status", cwd=workspace).stdout


@pytest.mark.parametrize("second", ["dvc repro", "dvc exp run"])
def test_second_run_while_one_runs_fails_fast_and_harms_nothing(slow_training, second):
    workspace, hold = slow_training
    good = {out: locked_md5(workspace, out) for out in OUTPUTS}
    first = start("dvc repro --single-item --force train_model", workspace)
    # The first is held in its cell until release(): a second run that waited for it would never return.
    result = run(second, cwd=workspace, check=False, timeout=300)
    assert first.poll() is None, "the first run should still be held"
    release(hold)
    first.stdout.read()
    assert first.wait(timeout=300) == 0
    assert result.returncode != 0
    assert "is busy" in result.stdout + result.stderr
    assert {out: md5(workspace / out) for out in OUTPUTS} == good
