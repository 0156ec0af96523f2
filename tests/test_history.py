"""A history that never lies: whatever happens during or around a run, dvc.lock
describes exactly what produced the files on disk, a failure ends in one line
naming the file, key or cell, and the printed recovery gives back one
consistent version."""

import json
import re
import os
import shutil
import subprocess

import pytest
import yaml

from helpers import edit_cell, locked_md5, md5, run, set_param, workspace_env

OUTS = ["data/raw/dataset.csv", "data/processed/train.csv", "data/processed/test.csv", "models/model.skops",
        "reports/metrics.json", "reports/plots/confusion.csv", "reports/plots/roc.csv"]
RECOVERY = "git checkout HEAD -- dvc.lock && dvc checkout --force"


def one_line_failure(result, message):
    """The failure is one ✗ line with the message, then at most a few lines on what is on disk."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert message in result.stdout, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    failures = [i for i, line in enumerate(lines) if line.startswith("✗")]
    assert len(failures) == 1 and len(lines) - failures[0] <= 6, output
    return output


def outputs_match_lock(root, lock_text=None):
    return {out: md5(root / out) == locked_md5(root, out, lock_text) for out in OUTS if (root / out).exists()}


def rerun_process_data_saving_when(workspace, printed, save):
    """`dvc repro --force --single-item process_data`, calling save() once a line
    starting with PRINTED appears. Returns the exit status and everything printed."""
    process = subprocess.Popen("dvc repro --force --single-item process_data".split(), cwd=workspace,
                               env={**os.environ, **workspace_env(workspace)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(printed):
            save()
            break
    lines += process.stdout.readlines()
    return process.wait(), "".join(lines)


def save_during_process_data(workspace, save):
    """Rerun process_data and call save() while its cell [2] waits on a FIFO the test holds
    (the wait recorded in dvc.lock first): the save lands mid-run whatever the machine's speed."""
    hold = workspace.parent / "hold"
    edit_cell(workspace, "02_process_data.ipynb", "df.shape",
              f"import os\nif os.path.exists({str(hold)!r}):\n    open({str(hold)!r}).read()\ndf.shape")
    run("dvc repro", cwd=workspace)
    os.mkfifo(hold)

    def save_then_release():
        save()
        hold.write_text("go")
        hold.unlink()
    return rerun_process_data_saving_when(workspace, "  process_data [2/", save_then_release)


def test_a_notebook_saved_during_its_run_is_never_recorded_as_what_ran(workspace):
    status, output = save_during_process_data(workspace, lambda: edit_cell(
        workspace, "02_process_data.ipynb", 'test_size = params["test_size"]', "test_size = 0.5"))
    assert status != 0, output
    assert "✗ process_data: notebooks/02_process_data.ipynb changed while the stage ran" in output
    assert "Traceback" not in output
    # dvc.lock still names the notebook that ran, and the split it made.
    notebook = workspace / "notebooks/02_process_data.ipynb"
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    deps = {d["path"]: d["md5"] for d in lock["stages"]["process_data"]["deps"]}
    assert deps["notebooks/02_process_data.ipynb"] != md5(notebook)
    assert all(outputs_match_lock(workspace).values())
    assert "process_data" in run("dvc status", cwd=workspace).stdout
    run("dvc repro", cwd=workspace)
    assert len((workspace / "data/processed/test.csv").read_text().splitlines()) == 75 + 1


def test_a_parameter_saved_during_its_stage_is_never_recorded_as_what_ran(workspace):
    status, output = save_during_process_data(workspace, lambda: set_param(workspace, "process.test_size", 0.5))
    assert status != 0, output
    assert "✗ process_data: params.yaml: process changed while the stage ran" in output
    assert all(outputs_match_lock(workspace).values())
    assert "process_data" in run("dvc status", cwd=workspace).stdout


def _append(path, text):
    with open(path, "a") as file:
        file.write(text)


AFTER_TICK = {
    "the notebook": lambda ws: edit_cell(ws, "02_process_data.ipynb", 'test_size = params["test_size"]',
                                         "test_size = 0.5"),
    "params.yaml": lambda ws: set_param(ws, "process.test_size", 0.5),
    "a helper module": lambda ws: _append(ws / "src/dataops/params.py", "\n# edited\n"),
}


def pause_after_the_runner(workspace, stage, fifo):
    """STAGE's command waits, once the runner has exited and before DVC hashes anything, until the test
    writes a line to FIFO: the moment after ✓, held open for as long as the test needs it."""
    os.mkfifo(fifo)
    pipeline = workspace / "dvc.yaml"
    cmd = f"dataops-run notebooks/{stage}.ipynb"
    pipeline.write_text(pipeline.read_text().replace(cmd, f"{cmd} && read go < {fifo}"))


@pytest.mark.parametrize("what", AFTER_TICK)
def test_a_save_the_moment_a_stage_ends_is_caught_before_it_reaches_a_commit(workspace, tmp_path, what):
    """DVC hashes the sources after the stage's command exits, and nothing of ours runs then: a save in that
    moment is recorded as what ran. The next runner, make's closing line and git's pre-commit hook name it."""
    fifo = tmp_path / "go"
    pause_after_the_runner(workspace, "02_process_data", fifo)

    def save_then_release():
        AFTER_TICK[what](workspace)
        fifo.write_text("go\n")
    status, output = rerun_process_data_saving_when(workspace, "✓ process_data", save_then_release)
    assert status == 0, output  # DVC recorded the saved version as what ran
    lie = "other than its kernel ran (saved in the moment after the stage ended?). Run it again: " \
          "dvc repro --force --single-item process_data"
    check = run("python -m dataops_kit.lockcheck", cwd=workspace, check=False)
    assert check.returncode == 1 and "✗ dvc.lock records " in check.stdout and lie in check.stdout, check.stdout
    commit = run("git commit -qam 'the saved version'", cwd=workspace, check=False)
    assert commit.returncode != 0 and lie in commit.stdout + commit.stderr
    assert run("git log -1 --format=%s", cwd=workspace).stdout.strip() != "the saved version"
    nxt = run("dvc repro --force --single-item train_model", cwd=workspace, check=False)
    assert nxt.returncode != 0 and "✗ train_model: dvc.lock records " in nxt.stdout and lie in nxt.stdout, nxt.stdout
    assert all(outputs_match_lock(workspace).values()), nxt.stdout

    run("git checkout -- dvc.yaml", cwd=workspace)
    run("dvc repro --force --single-item process_data && dvc repro", cwd=workspace)
    assert run("python -m dataops_kit.lockcheck", cwd=workspace, check=False).returncode == 0
    run("git commit -qam 'the saved version, reproduced'", cwd=workspace)


@pytest.mark.parametrize("typo", ["notebooks/02_proces_data.ipynb", "dataops-rn notebooks/02_process_data.ipynb"],
                         ids=["the notebook, in cmd and deps", "the command"])
def test_a_typo_in_a_stage_fails_in_dvcs_words_and_the_recovery_brings_every_output_back(workspace, typo):
    """No code of ours runs, so DVC's own message stands (troubleshooting has its row). Whatever DVC
    deleted before the command ran (stock DVC does), the printed recovery brings back."""
    pipeline = workspace / "dvc.yaml"
    old = typo.replace("proces_", "process_").replace("dataops-rn", "dataops-run")
    pipeline.write_text(pipeline.read_text().replace(old, typo))
    result = run("dvc repro", cwd=workspace, check=False)
    assert result.returncode != 0 and "ERROR: " in result.stderr, result.stdout + result.stderr
    run("git checkout -- dvc.yaml", cwd=workspace)
    run(RECOVERY, cwd=workspace)
    assert all((workspace / out).exists() for out in OUTS)
    assert all(outputs_match_lock(workspace).values())
    assert "up to date" in run("dvc status", cwd=workspace).stdout


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MB filesystem of its own (tmpfs), so a test can fill it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("needs to mount a tmpfs (root, as in CI)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_after_a_stage_ends_leaves_dvc_lock_as_it_was_and_the_recovery_works(reproduced, small_disk):
    """The disk fills the moment process_data's runner ends: DVC cannot store the new outputs. That is
    DVC's own save, so its message stands; dvc.lock still records the last good run, `dvc status`
    says the outputs differ from it, and once there is room the printed recovery brings them back."""
    workspace = small_disk / "ws"
    shutil.copytree(reproduced, workspace, symlinks=True)
    lock = (workspace / "dvc.lock").read_bytes()
    set_param(workspace, "process.test_size", 0.3)
    pipeline = workspace / "dvc.yaml"
    cmd = "dataops-run notebooks/02_process_data.ipynb"
    pipeline.write_text(pipeline.read_text().replace(cmd, f"{cmd} && (head -c 64M /dev/zero > ../filler || true)"))
    result = run("dvc repro process_data", cwd=workspace, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "✓ process_data" in output and "ERROR: " in result.stderr, output
    assert (workspace / "dvc.lock").read_bytes() == lock
    assert "process_data" in run("dvc status", cwd=workspace).stdout
    (small_disk / "filler").unlink()
    run("git checkout -- dvc.yaml params.yaml", cwd=workspace)
    run(RECOVERY, cwd=workspace)
    assert all(outputs_match_lock(workspace).values())
    assert "up to date" in run("dvc status", cwd=workspace).stdout


def test_a_failure_in_the_last_stage_recovers_one_consistent_version(workspace):
    committed = run("git show HEAD:dvc.lock", cwd=workspace).stdout
    set_param(workspace, "process.test_size", 0.3)
    edit_cell(workspace, "04_evaluate.ipynb", "predicted = model.predict(X)", "predicted = model.predict(X_typo)")
    result = run("dvc repro", cwd=workspace, check=False)
    output = one_line_failure(result, "✗ evaluate: failed in cell [2]: NameError: name 'X_typo' is not defined")
    assert "Running stage 'train_model'" in output and RECOVERY in output
    # The earlier stages' new results and the evaluate stage's last good ones: each as dvc.lock says.
    assert all(outputs_match_lock(workspace).values())
    assert (workspace / "reports/failed/04_evaluate.ipynb").exists()

    run(RECOVERY, cwd=workspace)
    assert outputs_match_lock(workspace, committed) == {out: True for out in OUTS}
    assert (workspace / "reports/failed/04_evaluate.ipynb").exists()


def test_a_split_too_small_to_use_fails_before_writing_and_keeps_the_last_good_split(workspace):
    set_param(workspace, "process.test_size", "0.0000000001")
    result = run("dvc repro", cwd=workspace, check=False)
    one_line_failure(result, "process.test_size = 1e-10 splits 150 rows into 149 train and 1 test rows; each part "
                             "needs at least 10: use a test_size between 0.07 and 0.93")
    assert "Running stage 'train_model'" not in result.stdout
    assert all(outputs_match_lock(workspace).values()) and (workspace / "data/processed/test.csv").exists()


def test_a_bad_value_found_before_the_kernel_keeps_the_last_good_outputs(workspace):
    set_param(workspace, "process.test_size", 1.5)
    result = run("dvc repro", cwd=workspace, check=False)
    one_line_failure(result, "✗ process_data: params.yaml: process.test_size = 1.5")
    assert "Put back this stage's last good outputs" in result.stdout
    assert outputs_match_lock(workspace) == {out: True for out in OUTS}


def test_a_crafted_tree_is_refused_before_compiled_code_reads_it(workspace):
    run(["python", "-c", """
import numpy as np, pandas as pd
from sklearn.ensemble import RandomForestClassifier
from dataops.model import save_model
train = pd.read_csv("data/processed/train.csv")
model = RandomForestClassifier(n_estimators=3, random_state=0).fit(train.drop(columns="target"), train["target"])
model.estimators_[1].tree_.children_left[0] = 50_000_000
save_model(model, __import__("pathlib").Path("models/model.skops"))
"""], cwd=workspace, env={"PYTHONPATH": str(workspace / "src")})  # the helpers, as a kernel imports them
    result = run("dvc repro --force --single-item evaluate", cwd=workspace, check=False)
    one_line_failure(result, "models/model.skops is damaged or crafted (a child index points outside the tree): "
                             "refused to use it")


def test_a_dead_kernel_ends_in_one_line(workspace):
    edit_cell(workspace, "04_evaluate.ipynb", "predicted = model.predict(X)",
              "predicted = model.predict(X)\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    result = run("dvc repro", cwd=workspace, check=False)
    one_line_failure(result, "✗ evaluate: the kernel died in cell [2] (Load the model and predict the test rows): it crashed or ran out")
    assert all(outputs_match_lock(workspace).values())


def test_a_runaway_cell_is_stopped_at_the_time_limit(workspace):
    set_param(workspace, "runner.cell_timeout", 3)
    edit_cell(workspace, "02_process_data.ipynb", "df.shape", "while True:\n    pass")
    result = run("dvc repro", cwd=workspace, check=False)
    one_line_failure(result, "✗ process_data: cell [2] (Read the raw data) ran "
                             "longer than runner.cell_timeout = 3 s (params.yaml) and was stopped")


def test_a_broken_or_missing_notebook_ends_in_one_line(workspace):
    (workspace / "notebooks/02_process_data.ipynb").write_text('{"cells": [')
    one_line_failure(run("dvc repro", cwd=workspace, check=False),
                     "✗ process_data: notebooks/02_process_data.ipynb is not a notebook (invalid JSON")
    one_line_failure(run("dataops-run notebooks/02_proces_data.ipynb", cwd=workspace, check=False),
                     "notebooks/02_proces_data.ipynb does not exist: check the stage's cmd in dvc.yaml")


def test_a_notebook_without_kernel_metadata_runs_on_the_workspace_kernel(workspace):
    path = workspace / "notebooks/02_process_data.ipynb"
    nb = json.loads(path.read_text())
    del nb["metadata"]["kernelspec"]
    path.write_text(json.dumps(nb))
    assert "✓ process_data" in run("dvc repro", cwd=workspace).stdout


def test_bless_misuse_ends_in_one_line(workspace):
    result = run("python -m dataops_kit.notebook bless notebooks/nope.ipynb", cwd=workspace, check=False)
    assert result.returncode == 1 and result.stderr.startswith("✗ bless: notebooks/nope.ipynb does not exist")
    edit_cell(workspace, "01_get_data.ipynb", "missing values:", "gaps:")
    result = run("python -m dataops_kit.notebook bless notebooks/01_get_data.ipynb", cwd=workspace, check=False)
    assert "ran another version of notebooks/01_get_data.ipynb" in result.stderr
    assert "Traceback" not in result.stderr


def test_editor_debris_in_the_helper_modules_reruns_nothing(workspace):
    checkpoints = workspace / "src/dataops/.ipynb_checkpoints"
    checkpoints.mkdir()
    (checkpoints / "params-checkpoint.py").write_text("# JupyterLab's autosave\n")
    assert "Data and pipelines are up to date." in run("dvc status", cwd=workspace).stdout


def test_params_yaml_means_the_same_to_dvc_and_the_notebooks(workspace):
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0 ", "C: 1e-2 ", 1))
    result = run("dvc repro", cwd=workspace)
    assert "✓ train_model" in result.stdout
    assert "train.logistic_regression.C" in run("dvc params diff", cwd=workspace).stdout
    assert json.loads((workspace / "reports/metrics.json").read_text())["accuracy"] == 0.9333


def test_a_full_disk_leaves_no_half_written_output_unsaid(workspace):
    # A file size limit makes every write past 2 KB fail, as a full disk does.
    result = run("ulimit -f 2 && dataops-run notebooks/02_process_data.ipynb", cwd=workspace,
                 check=False)
    one_line_failure(result, "✗ process_data: could not read or write")
    assert "File too large" in result.stdout
    for out in ("data/processed/train.csv", "data/processed/test.csv", "reports/02_process_data.ipynb"):
        path = workspace / out
        assert not path.exists() or md5(path) == locked_md5(workspace, out), f"{out} is half-written"
    run(RECOVERY, cwd=workspace)
    assert all(outputs_match_lock(workspace).values())


def test_an_old_commit_from_another_platform_is_left_as_it_was_found(workspace):
    """Lesson 6's note: at an old commit whose model another platform computed,
    `dvc repro` stages a new dvc.lock, so `git checkout main` refuses until the
    old commit's lock is put back; then the present comes back whole."""
    env = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.invalid",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.invalid"}
    branch = run("git branch --show-current", cwd=workspace).stdout.strip()
    lock = workspace / "dvc.lock"
    ours = lock.read_text()
    lock.write_text(ours.replace(locked_md5(workspace, "models/model.skops"), "a1" * 16))
    # Another machine's commit, made here by hand: here its dvc.lock names a model this kernel never
    # wrote, which the pre-commit hook rightly refuses.
    run("git commit --no-verify -qam 'Pipeline, reproduced on an arm64 Mac'", cwd=workspace, env=env)
    lock.write_text(ours)
    set_param(workspace, "train.logistic_regression.C", "0.01")
    run("dvc repro && git commit -qam 'Regularise harder'", cwd=workspace, env=env)

    run("git checkout -q HEAD~1", cwd=workspace)
    run("dvc checkout", cwd=workspace, check=False)  # that model was never in this cache
    run("dvc repro", cwd=workspace)
    assert "dvc.lock" in run("git status --porcelain", cwd=workspace).stdout
    refused = run(f"git checkout -q {branch}", cwd=workspace, check=False)
    assert "would be overwritten" in refused.stderr
    run(f"git checkout -q HEAD -- dvc.lock && git checkout -q {branch} && dvc checkout", cwd=workspace)
    assert run("git status --porcelain", cwd=workspace).stdout == ""
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    for out in OUTS:
        assert md5(workspace / out) == locked_md5(workspace, out), out


def test_a_failure_before_any_kernel_names_no_earlier_runs_notebook(workspace):
    edit_cell(workspace, "02_process_data.ipynb", "train, test = ", "1 / 0\ntrain, test = ")
    first = run("dvc repro", cwd=workspace, check=False)
    assert "The executed notebook, as far as it ran: reports/failed/02_process_data.ipynb" in first.stdout
    set_param(workspace, "process.test_size", 1.5)
    second = run("dvc repro", cwd=workspace, check=False)
    assert "✗ process_data: params.yaml: process.test_size" in second.stdout, second.stdout
    assert "The executed notebook" not in second.stdout


def test_a_long_silent_cell_says_it_still_runs_and_how_to_stop_it(workspace):
    edit_cell(workspace, "02_process_data.ipynb", "train, test = ", "import time; time.sleep(3)\ntrain, test = ")
    result = run("dataops-run notebooks/02_process_data.ipynb", cwd=workspace, env={"DATAOPS_QUIET_SECONDS": "1"})
    assert re.search(r"process_data \[\d/\d\] still running after [123] s: .*Ctrl-C stops it", result.stdout), \
        result.stdout
