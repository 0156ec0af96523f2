"""Helpers shared by the stage notebooks: where files live, the knobs in
params.yaml, and the model file format. The ML itself stays in the notebooks."""

import os
import sys
from pathlib import Path


class WorkspaceError(Exception):
    """A problem a student can fix: the message says which file, key or column
    and what is allowed. Shown without a traceback."""

    def _render_traceback_(self):
        """IPython's protocol: an exception with this method is shown as the
        lines it returns, here one, in place of a traceback (the cell still fails)."""
        return [f"WorkspaceError: {self}"]


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
    """Every file the pipeline reads or writes, defined once, under ``base``
    (the workspace root unless given). dvc.yaml names the same files;
    tests/test_pipeline.py checks that the two agree."""

    def __init__(self, root: Path, base: Path = None):
        self.root = root
        base = base or root
        self.params = root / "params.yaml"
        self.raw = base / "data" / "raw" / "dataset.csv"
        self.train = base / "data" / "processed" / "train.csv"
        self.test = base / "data" / "processed" / "test.csv"
        self.model = base / "models" / "model.skops"
        self.reports = base / "reports"
        self.metrics = base / "reports" / "metrics.json"
        self.confusion = base / "reports" / "plots" / "confusion.csv"
        self.roc = base / "reports" / "plots" / "roc.csv"


# Set by the stage runner (`dvc repro`) in its kernel's environment, to the stage's name.
STAGE = "DATAOPS_STAGE"


def paths() -> Paths:
    """The pipeline's files: what a notebook reads."""
    return Paths(find_root())


def output_paths() -> Paths:
    """Where this run writes. Under `dvc repro`, the pipeline's files, which
    DVC then records in dvc.lock. Run by hand (JupyterLab, VS Code, nbval),
    the same names under scratch/, which neither git nor DVC tracks: whatever
    was typed into a parameters cell, the files dvc.lock describes stay
    exactly those, and `dvc status` stays true."""
    root = find_root()
    return Paths(root) if os.environ.get(STAGE) else Paths(root, root / "scratch")


# Set by the workspace kernel's kernelspec (`make` writes it), beside the numerics pins.
KERNEL_MARK = "DATAOPS_KERNEL"


def _note_a_kernel_without_pins():
    """A kernel started from the bare interpreter (VS Code offers one) lacks the
    workspace kernel's pinned numerics: say so once, as its results may differ
    in their last bits from `dvc repro`'s."""
    ipython = sys.modules.get("IPython")  # only inside a running IPython, never imported here
    if ipython is None or ipython.get_ipython() is None:
        return
    if os.environ.get(KERNEL_MARK) != "1":
        print("Note: this is not the workspace's kernel 'Python (dataops)', so a model it writes can differ "
              "in its last bits from dvc repro's. Pick that kernel.", file=sys.stderr)


_note_a_kernel_without_pins()
