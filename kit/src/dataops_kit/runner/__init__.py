"""Run a stage notebook under DVC: papermill, a fast kernel, a notebook filter.

Only two processes import a project's own code (``src/``): the stage runner
and the kernel. Each puts that project's ``src/`` first on its import path
itself (``put_src_first``: the runner at its start, the kernel through
IPython's ``exec_lines``, which ``make`` writes into the venv). No ``.pth``
names a working tree's folder, so git's notebook filter, DVC and the
toolkit's commands never import from one, whatever tree is checked out.
"""

import os
import sys
from pathlib import Path


def project_root(start: Path = None):
    """$DATAOPS_ROOT if set, else the nearest folder at or above START (the working folder) that holds
    dvc.yaml, as dataops.find_root finds it; None if there is none."""
    if os.environ.get("DATAOPS_ROOT"):
        return Path(os.environ["DATAOPS_ROOT"]).resolve()
    return _nearest_project(start or Path.cwd())


def _nearest_project(start: Path):
    here = start.resolve()
    return next((folder for folder in (here, *here.parents) if (folder / "dvc.yaml").is_file()), None)


def put_src_first() -> None:
    """This project's src/ first on the import path, so that `import dataops` is the clone's own.
    The code is the one of the project the process started in, even when $DATAOPS_ROOT points its
    data elsewhere (nbval's throw-away copy holds no src/)."""
    root = _nearest_project(Path.cwd())
    if root is not None and str(root / "src") not in sys.path[:1]:
        sys.path.insert(0, str(root / "src"))


def cli():
    """`dataops-run`: the stage runner, with this project's helpers."""
    put_src_first()
    from dataops_kit.runner import stage

    stage.cli()
