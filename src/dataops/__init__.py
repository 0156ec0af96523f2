"""Helpers shared by the stage notebooks: where files live, the knobs in
params.yaml, and the model file format. The ML itself stays in the notebooks."""

import os
import sys
from pathlib import Path


class WorkspaceError(Exception):
    """A problem a student can fix: the message says which file, key or column
    and what is allowed. Shown without a traceback."""


def find_root() -> Path:
    """The workspace root: $DATAOPS_ROOT if set (the test sandbox uses it),
    else the nearest folder above the current one that holds dvc.yaml.
    Kernels run in notebooks/ (JupyterLab, nbval and papermill alike), so
    every mode finds the same root."""
    if os.environ.get("DATAOPS_ROOT"):
        return Path(os.environ["DATAOPS_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise WorkspaceError(f"no dvc.yaml in {here} or any folder above it: run this inside the workspace")


class Paths:
    """Every file the pipeline reads or writes, defined once. dvc.yaml names
    the same files; tests/test_layout.py checks that the two agree."""

    def __init__(self, root: Path):
        self.root = root
        self.params = root / "params.yaml"
        self.raw = root / "data" / "raw" / "dataset.csv"
        self.train = root / "data" / "processed" / "train.csv"
        self.test = root / "data" / "processed" / "test.csv"
        self.model = root / "models" / "model.skops"
        self.reports = root / "reports"
        self.metrics = root / "reports" / "metrics.json"
        self.confusion = root / "reports" / "plots" / "confusion.csv"
        self.roc = root / "reports" / "plots" / "roc.csv"


def paths() -> Paths:
    return Paths(find_root())


def _show_workspace_errors_briefly():
    """In a Jupyter kernel, a WorkspaceError shows as one readable line instead
    of a traceback; the cell is still marked as failed."""
    ipython = sys.modules.get("IPython")  # only inside a running IPython, never imported here
    shell = ipython.get_ipython() if ipython else None
    if shell is None or not hasattr(shell, "_showtraceback"):
        return

    def brief(shell, etype, value, tb, tb_offset=None):
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])

    shell.set_custom_exc((WorkspaceError,), brief)


_show_workspace_errors_briefly()
