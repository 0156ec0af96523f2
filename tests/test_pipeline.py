"""`dvc repro` on the notebook pipeline does what the README promises."""

from pathlib import Path

import yaml

from helpers import REPO, locked_md5, md5, run, set_param

OUTPUTS = ["data/raw/dataset.csv", "data/processed/train.csv", "data/processed/test.csv",
           "models/model.skops", "reports/metrics.json", "reports/plots/confusion.csv",
           "reports/plots/roc.csv", "reports/01_get_data.ipynb", "reports/02_process_data.ipynb",
           "reports/03_train_model.ipynb", "reports/04_evaluate.ipynb"]


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_repro_builds_every_output_and_leaves_git_and_dvc_clean(reproduced):
    for out in OUTPUTS:
        assert md5(reproduced / out) == locked_md5(reproduced, out), out
    assert "up to date" in run("dvc status", cwd=reproduced).stdout
    assert run("git status --porcelain", cwd=reproduced).stdout == ""


def test_forced_rerun_gives_a_byte_identical_lock(workspace):
    before = (workspace / "dvc.lock").read_bytes()
    run("dvc repro --force", cwd=workspace)
    assert (workspace / "dvc.lock").read_bytes() == before


def test_second_repro_is_a_no_op(workspace):
    mtimes = {out: (workspace / out).stat().st_mtime_ns for out in OUTPUTS}
    result = run("dvc repro", cwd=workspace)
    assert "Data and pipelines are up to date." in result.stdout
    assert ran_stages(result.stdout) == []
    assert mtimes == {out: (workspace / out).stat().st_mtime_ns for out in OUTPUTS}


def test_changing_test_size_reruns_exactly_the_stages_downstream(workspace):
    model_before = md5(workspace / "models/model.skops")
    set_param(workspace, "process.test_size", 0.3)
    result = run("dvc repro", cwd=workspace)
    assert ran_stages(result.stdout) == ["process_data", "train_model", "evaluate"]
    assert len((workspace / "data/processed/test.csv").read_text().splitlines()) == 45 + 1
    assert md5(workspace / "models/model.skops") != model_before

    set_param(workspace, "process.test_size", 0.2)
    result = run("dvc repro", cwd=workspace)
    assert "Stage 'process_data' is cached - skipping run" in result.stdout
    assert "Stage 'train_model' is cached - skipping run" in result.stdout
    assert "▶" not in result.stdout, "a notebook ran although the run cache had the result"
    assert md5(workspace / "models/model.skops") == model_before


def test_time_travel_restores_each_commits_exact_model(workspace):
    git = "git -c user.name=t -c user.email=t@example.invalid "
    old_lock = (workspace / "dvc.lock").read_text()
    set_param(workspace, "train.logistic_regression.max_iter", 5)
    run("dvc repro", cwd=workspace)
    run(git + "commit -qam 'train: max_iter 5'", cwd=workspace)
    new_lock = (workspace / "dvc.lock").read_text()
    old_md5, new_md5 = (locked_md5(workspace, "models/model.skops", lock) for lock in (old_lock, new_lock))
    assert old_md5 != new_md5

    run("git checkout -q HEAD~1 && dvc checkout", cwd=workspace)
    assert md5(workspace / "models/model.skops") == old_md5
    assert md5(workspace / "data/processed/train.csv") == locked_md5(workspace, "data/processed/train.csv", old_lock)
    run("git checkout -q main && dvc checkout", cwd=workspace)
    assert md5(workspace / "models/model.skops") == new_md5


def test_paths_in_dvc_yaml_are_the_ones_the_notebooks_use(reproduced):
    from dataops import Paths

    where = Paths(Path("."))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = {out for stage in stages.values() for out in stage["outs"]}
    for path in (where.raw, where.train, where.test, where.model):
        assert str(path) in outs
    for name, stage in stages.items():
        notebook = stage["cmd"].split()[-1]
        assert notebook in stage["deps"] and notebook.endswith(f"_{name}.ipynb")
        assert f"reports/{Path(notebook).name}" in stage["outs"]


def test_each_stage_depends_on_its_notebook_its_data_the_helpers_and_nothing_of_the_toolkit():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    written = {out for stage in stages.values() for out in stage["outs"]}
    for name, stage in stages.items():
        notebook = stage["cmd"].split()[-1]
        assert stage["cmd"] == f"dataops-run {notebook}", name
        assert stage["deps"][0] == notebook and "src/dataops" in stage["deps"], name
        assert all(dep in written for dep in stage["deps"] if dep not in (notebook, "src/dataops")), name
        assert not any("kit" in dep for dep in stage["deps"]), name


def test_editing_the_toolkit_reruns_nothing_and_a_helper_reruns_every_stage(workspace):
    lock = (workspace / "dvc.lock").read_text()
    for module in workspace.glob("kit/src/dataops_kit/**/*.py"):
        with open(module, "a") as file:
            file.write("# a comment\n")
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    assert "Running stage" not in run("dvc repro", cwd=workspace).stdout
    assert (workspace / "dvc.lock").read_text() == lock
    with open(workspace / "src/dataops/model.py", "a") as file:
        file.write("# a comment\n")
    status = run("dvc status", cwd=workspace).stdout
    assert all(name in status for name in ("get_data", "process_data", "train_model", "evaluate")), status


def test_dvc_sends_no_analytics_and_checks_for_no_updates(clone):
    # Left on, every dvc command starts a second dvc process that posts a
    # report to analytics.dvc.org: network traffic from a class, and CPU taken
    # from the next command on a 2-core laptop. `dvc version` checks PyPI for a
    # newer DVC unless told not to. CI="" because DVC skips that check in CI.
    env = {"CI": "", "DVC_NO_ANALYTICS": ""}
    assert "Analytics is disabled." in run("dvc status -v", cwd=clone, env=env).stdout
    assert "Check for update is disabled." in run("dvc version -v", cwd=clone, env=env).stdout


def test_dvc_add_move_and_remove_work_as_dvcs_own_get_started_shows(workspace):
    """The dvc a student runs is the one pip installs: DVC's first steps beyond the lessons work here too."""
    (workspace / "data" / "extra.csv").write_text("a,b\n1,2\n")
    run("dvc add data/extra.csv", cwd=workspace)
    assert (workspace / "data/extra.csv.dvc").exists()
    run("dvc move data/extra.csv data/more.csv", cwd=workspace)
    assert (workspace / "data/more.csv.dvc").exists() and not (workspace / "data/extra.csv.dvc").exists()
    run("dvc remove data/more.csv.dvc", cwd=workspace)
    assert not (workspace / "data/more.csv.dvc").exists()
    assert "up to date" in run("dvc status", cwd=workspace).stdout
