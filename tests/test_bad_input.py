"""A wrong value in params.yaml fails with one readable line and loses nothing."""

import pytest
from helpers import locked_md5, md5, run, set_param

@pytest.mark.parametrize("key, value", [("process.test_size", "1.5"), ("process.random_state", '"$(touch INJECTED)"')],
                         ids=["a bad value", "a shell command as a value"])
def test_bad_parameter_fails_with_one_clear_line_and_loses_nothing(workspace, key, value):
    """End to end, once per kind: the stage fails before a kernel starts, runs no value, keeps the model."""
    good = locked_md5(workspace, "models/model.skops")
    set_param(workspace, key, value)
    result = run("dvc repro", cwd=workspace, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{key} = " in output
    assert "Traceback" not in output
    assert len(output.splitlines()) < 15, output
    assert not (workspace / "INJECTED").exists()
    run("dvc checkout --force", cwd=workspace)
    assert md5(workspace / "models/model.skops") == good


def test_misspelt_key_fails_naming_the_key_and_keeps_the_model(workspace):
    good = locked_md5(workspace, "models/model.skops")
    params = workspace / "params.yaml"
    params.write_text(params.read_text().replace("max_iter:", "max_itr:"))
    result = run("dvc repro", cwd=workspace, check=False)
    assert result.returncode != 0
    assert ("✗ train_model: params.yaml: train.logistic_regression.max_itr: unknown key (did you mean max_iter?)"
            in result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    assert md5(workspace / "models/model.skops") == good


def test_last_good_model_comes_back_with_one_command(workspace):
    good = locked_md5(workspace, "models/model.skops")
    set_param(workspace, "train.logistic_regression.max_iter", 0)
    run("touch notebooks/03_train_model.ipynb", cwd=workspace)
    result = run("dvc repro --force train_model", cwd=workspace, check=False)
    assert result.returncode != 0
    run("dvc checkout --force", cwd=workspace)
    assert md5(workspace / "models/model.skops") == good


def test_failing_cell_keeps_its_notebook_and_the_good_model_comes_back(workspace):
    good = locked_md5(workspace, "models/model.skops")
    notebook = workspace / "notebooks/03_train_model.ipynb"
    notebook.write_text(notebook.read_text().replace('drop(columns=\\"target\\")', 'drop(columns=\\"label\\")'))
    result = run("dvc repro", cwd=workspace, check=False)
    assert result.returncode != 0
    assert "✗ train_model: failed in cell [2]: KeyError" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    failed = workspace / "reports/failed/03_train_model.ipynb"
    assert '"ename": "KeyError"' in failed.read_text()
    # Already back in place; and the documented command leaves the failed notebook alone.
    assert md5(workspace / "models/model.skops") == good
    run("dvc checkout --force", cwd=workspace)
    assert md5(workspace / "models/model.skops") == good
    assert failed.exists()


PAYLOAD = "import pathlib; pathlib.Path({marker!r}).write_text('pwned')"


@pytest.mark.parametrize("kind", ["pickle", "skops with an untrusted type"])
def test_untrusted_model_file_is_refused_and_runs_nothing(workspace, kind):
    """A model from someone else's remote: the evaluate stage refuses it before any of its code runs."""
    marker = workspace / "PAYLOAD_RAN"
    model = workspace / "models/model.skops"
    code = PAYLOAD.format(marker=str(marker))
    maker = {
        "pickle": "import pickle, builtins\n"
                  "class P:\n    def __reduce__(self): return (builtins.exec, (CODE,))\n"
                  "open(PATH, 'wb').write(pickle.dumps(P()))",
        "skops with an untrusted type": "import skops.io, collections\n"
                                        "skops.io.dump(collections.Counter(a=1), PATH)",
    }[kind]
    model.unlink()
    run(["python", "-c", maker.replace("CODE", repr(code)).replace("PATH", repr(str(model)))], cwd=workspace)
    result = run("dvc repro --single-item --force evaluate", cwd=workspace, check=False)
    assert result.returncode != 0
    assert "models/model.skops" in result.stdout and "refused to load it" in result.stdout
    assert not marker.exists()
