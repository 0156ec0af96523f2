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
    _note_a_kernel_without_pins()


def _note_a_kernel_without_pins():
    """A kernel started from the bare interpreter (VS Code offers one) lacks the
    workspace kernel's pinned numerics: say so once, as its results may differ
    in their last bits from `dvc repro`'s."""
    from dataops.install import same_bytes_env

    missing = sorted(key for key, value in same_bytes_env().items() if os.environ.get(key) != value)
    if missing:
        print(f"Note: this is not the workspace's kernel 'Python (dataops)' ({', '.join(missing)} not set), so a "
              f"model it writes can differ in its last bits from dvc repro's. Pick that kernel.", file=sys.stderr)


_show_workspace_errors_briefly()
