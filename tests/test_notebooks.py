"""The committed notebooks are clean, and each way of running them agrees."""

import json

import nbformat

from helpers import REPO, edit_cell, locked_md5, md5, run, save_through_jupyter, set_param

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_git_filter_keeps_outputs_out_of_commits(workspace):
    executed = (workspace / "reports/02_process_data.ipynb").read_text()
    (workspace / "notebooks/02_process_data.ipynb").write_text(executed)
    assert run("git diff", cwd=workspace).stdout == ""
    # git status trusts a changed file size without filtering; staging shows nothing to commit.
    run("git add notebooks", cwd=workspace)
    assert run("git status --porcelain", cwd=workspace).stdout == ""


def test_touching_notebooks_leaves_git_status_clean(workspace):
    for path in (workspace / "notebooks").glob("*.ipynb"):
        path.touch()
    assert run("git status --porcelain", cwd=workspace).stdout == ""


def test_a_notebook_saved_with_outputs_by_another_editor_reruns_once_and_comes_back_clean(workspace):
    """As VS Code or Notebook 7 save: every output in the file. DVC hashes the file as it is, so its
    stage reruns once; the runner writes the clean form back, and dvc.lock is what a fresh clone makes."""
    lock = (workspace / "dvc.lock").read_text()
    committed = run("git show HEAD:notebooks/02_process_data.ipynb", cwd=workspace).stdout
    run("jupyter nbconvert --execute --inplace notebooks/02_process_data.ipynb", cwd=workspace)
    saved = json.loads((workspace / "notebooks/02_process_data.ipynb").read_text())
    assert sum(bool(cell.get("outputs")) for cell in saved["cells"]) > 2, "saved with its outputs"
    assert "notebooks/02_process_data.ipynb" in run("dvc status", cwd=workspace).stdout
    # Other cell ids and editor metadata too: the stage runs the clean form, so the report is a fresh clone's.
    for cell in saved["cells"]:
        cell["id"] = f"editor-{cell['id']}"
    (workspace / "notebooks/02_process_data.ipynb").write_text(json.dumps(saved))
    ran = run("dvc repro", cwd=workspace).stdout
    assert "Running stage 'process_data'" in ran and "Running stage 'train_model'" not in ran, ran
    assert (workspace / "notebooks/02_process_data.ipynb").read_text() == committed
    assert (workspace / "dvc.lock").read_text() == lock
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    assert run("git status --porcelain", cwd=workspace).stdout == ""

    edit_cell(workspace, "02_process_data.ipynb", "train_test_split(df,", "train_test_split(df.copy(),")
    assert "notebooks/02_process_data.ipynb" in run("dvc status", cwd=workspace).stdout, "code edits still count"


def test_nbval_uses_params_yaml_and_never_touches_the_workspace(workspace):
    outputs = [p for d in ("data", "models", "reports") for p in (workspace / d).rglob("*") if p.is_file()]
    before = {p: md5(p) for p in outputs}
    run("pytest --nbval-lax -q -p no:cacheprovider notebooks", cwd=workspace)
    assert before == {p: md5(p) for p in outputs}

    set_param(workspace, "process.test_size", 1.5)
    result = run("pytest --nbval-lax -q -p no:cacheprovider notebooks/02_process_data.ipynb", cwd=workspace, check=False)
    assert result.returncode == 1
    assert "process.test_size = 1.5: must be a number between 0 and 1 (exclusive)" in result.stdout


def test_nbval_writes_the_bytes_dvc_repro_locked_even_on_another_cpu(workspace, tmp_path):
    sandbox = tmp_path / "sandbox"
    run("pytest --nbval-lax -q -p no:cacheprovider notebooks", cwd=workspace,
        env={"DATAOPS_NBVAL_SANDBOX": str(sandbox), "OPENBLAS_CORETYPE": "Prescott"})
    for out in ("data/raw/dataset.csv", "data/processed/train.csv", "models/model.skops", "reports/metrics.json",
                "reports/plots/roc.csv"):
        assert md5(sandbox / "scratch" / out) == locked_md5(workspace, out), out


def test_nbval_fails_on_a_wrong_stored_output(clone):
    path = clone / "notebooks/01_get_data.ipynb"
    path.write_text(path.read_text().replace("missing values: 0", "missing values: 7"))
    result = run("pytest --nbval-lax -q -p no:cacheprovider notebooks/01_get_data.ipynb", cwd=clone, check=False)
    assert result.returncode == 1
    assert "Cell outputs differ" in result.stdout and "values: 7" in result.stdout


def test_executed_notebooks_are_never_collected(reproduced):
    result = run("pytest --nbval-lax --collect-only -q -p no:cacheprovider", cwd=reproduced)
    assert "reports/" not in result.stdout
    assert "notebooks/01_get_data.ipynb" in result.stdout


def test_saving_a_run_notebook_from_jupyter_leaves_git_and_dvc_clean(lab):
    """Through the server's contents API, so it runs even where no browser is installed."""
    workspace, url, token = lab
    for path in NOTEBOOKS:
        # What JupyterLab sends after Run All: every output, counts, kernel metadata.
        content = nbformat.read(workspace / "reports" / path.name, as_version=4)
        content.metadata["language_info"] = {"name": "python", "version": "3.11"}
        save_through_jupyter(url, token, f"notebooks/{path.name}", content)
    assert run("git status --porcelain", cwd=workspace).stdout == ""
    assert "up to date" in run("dvc status", cwd=workspace).stdout


def test_a_kernel_without_the_pins_says_so_and_the_workspace_kernel_does_not(workspace):
    from jupyter_client.manager import start_new_kernel

    printed = {}
    for name in ("dataops", "python3"):  # python3: the bare interpreter's kernel, as VS Code offers it
        kernel, client = start_new_kernel(kernel_name=name, cwd=str(workspace / "notebooks"))
        streams = []
        try:
            reply = client.execute_interactive("import dataops", timeout=60, output_hook=lambda msg: streams.append(
                msg["content"]["text"]) if msg["msg_type"] == "stream" else None)
            assert reply["content"]["status"] == "ok"
        finally:
            client.stop_channels()
            kernel.shutdown_kernel(now=True)
        printed[name] = "".join(streams)
    assert printed["dataops"] == ""
    assert "not the workspace's kernel 'Python (dataops)'" in printed["python3"]
