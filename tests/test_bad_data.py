"""A damaged CSV fails the stage that reads it with one line naming the file,
the column and the problem; `dvc checkout --force` brings the good files back."""

from helpers import locked_md5, md5, run
from unit.dataops.test_data import CASES, damage

RAW = "data/raw/dataset.csv"


def test_damaged_raw_data_fails_the_stage_clearly_and_loses_nothing(workspace):
    """End to end, once: the stage that reads the file fails in one line and keeps every good file."""
    good = {out: locked_md5(workspace, out) for out in (RAW, "data/processed/train.csv", "models/model.skops")}
    raw = workspace / RAW
    raw.write_text(damage(raw.read_text(), "cut mid-line"))
    # --single-item: run only the stage that reads the file, as a student does
    # in JupyterLab; a full `dvc repro` would first rebuild the raw file.
    result = run("dvc repro --single-item --force process_data", cwd=workspace, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "✗ process_data: failed in cell [2]: " + CASES[3][1] in output
    assert "Traceback" not in output
    assert md5(workspace / "models/model.skops") == good["models/model.skops"]

    run("dvc checkout --force", cwd=workspace)
    assert {out: md5(workspace / out) for out in good} == good
