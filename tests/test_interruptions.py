"""Ctrl-C, kill -9 and a second terminal: the next `dvc repro` still gives the exact outputs."""

import os
import signal
import subprocess
import time

import pytest

from helpers import edit_cell, kernels_in, locked_md5, md5, run, workspace_env

OUTPUTS = ["data/processed/train.csv", "models/model.skops", "reports/metrics.json"]


@pytest.fixture
def slow_training(workspace):
    """Training that lasts 5 s, recorded in dvc.lock: an interruption or a
    second terminal lands during it however loaded the machine is."""
    edit_cell(workspace, "03_train_model.ipynb", "model = MODELS", "import time\ntime.sleep(5)\nmodel = MODELS")
    run("dvc repro", cwd=workspace)
    return workspace


def start(cmd, root):
    """A command in its own process group, as in a terminal; returns it once the fit has begun."""
    # No shell in between: the test reaps dvc itself, as a terminal would.
    process = subprocess.Popen(cmd.split(), cwd=root, env={**os.environ, **workspace_env(root)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    for line in process.stdout:
        if "train_model [3/" in line:  # the 5 s fit of slow_training
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
    workspace = slow_training
    good = {out: locked_md5(workspace, out) for out in OUTPUTS}
    process = start("dvc repro --single-item --force train_model", workspace)
    os.killpg(process.pid, sig)
    process.wait(timeout=60)
    assert process.returncode != 0
    # Ctrl-C: the runner stops its kernel before it exits; the preloaded process
    # (dataops_kit.runner.kernel) follows dvc within a moment. kill -9 gives the runner no
    # chance; the kernel notices its parent is gone within a second or so.
    assert kernels_in(workspace, wait=1 if sig == signal.SIGINT else 5) == []
    if sig == signal.SIGINT:  # the runner puts the last good outputs back itself
        assert {out: md5(workspace / out) for out in OUTPUTS} == good

    run("dvc repro", cwd=workspace)
    assert {out: md5(workspace / out) for out in OUTPUTS} == good
    assert "up to date" in run("dvc status", cwd=workspace).stdout


@pytest.mark.parametrize("second", ["dvc repro", "dvc exp run"])
def test_second_run_while_one_runs_fails_fast_and_harms_nothing(slow_training, second):
    workspace = slow_training
    good = {out: locked_md5(workspace, out) for out in OUTPUTS}
    first = start("dvc repro --single-item --force train_model", workspace)
    started = time.perf_counter()
    result = run(second, cwd=workspace, check=False)
    elapsed = time.perf_counter() - started
    first.stdout.read()
    assert first.wait(timeout=300) == 0
    assert result.returncode != 0
    assert "is busy" in result.stdout + result.stderr
    assert elapsed < 30, "the second run waited instead of failing fast"
    assert {out: md5(workspace / out) for out in OUTPUTS} == good
