"""DVC as `make` installs it: a stage notebook counts by its clean form.

Every editor but JupyterLab (VS Code, Jupyter Notebook, ``jupyter nbconvert
--execute --inplace``) saves a notebook with its outputs. git's clean filter
hides them from git, but DVC hashed the file as it is on disk, so the stage
looked changed, reran, and rewrote dvc.lock. ``.venv/bin/dvc`` (written by
``make``, see dataops_kit.install) calls ``install()`` before DVC starts: the md5
DVC computes for a notebook in notebooks/ is then the md5 of the notebook as
``dataops_kit.runner.notebook.strip`` writes it, which is the file git stores. For a
clean notebook that is its own md5, so dvc.lock is the same as stock DVC
writes, and a DVC run without this hook (``python -m dvc``) agrees with it as
long as the notebooks are clean.

Internals relied on, in dvc-data only: ``dvc_data.hashfile.hash.hash_file``
(path, fs, name, state, callback, info) -> (Meta, HashInfo), the one function
every file hash goes through, imported by name in several dvc_data modules.
Checked against the pinned version: any other version of dvc-data gets stock
behaviour and a one-line note, never a wrong hash.
"""

import sys
from pathlib import Path

from dataops_kit.runner.notebook import clean_md5

TESTED = "3.18.3"  # dvc-data, as pinned in requirements.txt


def is_stage_notebook(path: str) -> bool:
    """A notebook in a notebooks/ folder: a pipeline's source, never a DVC output."""
    path = Path(path)
    return path.suffix == ".ipynb" and path.parent.name == "notebooks"


def _dvc_data_version() -> str:
    """dvc-data's version from its dist-info folder's name: importlib.metadata
    would scan every installed package, 60 ms on every dvc command."""
    import dvc_data

    found = sorted(Path(dvc_data.__file__).parent.parent.glob("dvc_data-*.dist-info"))
    return found[0].name[len("dvc_data-"):-len(".dist-info")] if found else "unknown"


def install() -> bool:
    installed = _dvc_data_version()
    if installed != TESTED:
        print(f"Note: dvc-data {installed} is not the tested {TESTED}: a notebook saved with its "
              f"outputs counts as changed (make restores the pinned packages).", file=sys.stderr)
        return False
    import attrs
    from dvc_data.hashfile import hash as hashing

    original = hashing.hash_file

    def hash_file(path, fs, name, state=None, callback=None, info=None):
        if name == "md5" and fs.protocol == "local" and is_stage_notebook(path):
            clean = clean_md5(Path(path))
            if clean is not None:  # a few milliseconds: no need of DVC's hash cache (state)
                meta = hashing.Meta.from_info(info or fs.info(path), fs.protocol)
                return attrs.evolve(meta, size=clean[1]), hashing.HashInfo(name, clean[0])
        return original(path, fs, name, state=state, callback=callback, info=info)

    # Modules that imported the function by name before this ran (dvc_data's own
    # package imports one) get the new one too; every later import does anyway.
    for module in [hashing, *(m for n, m in list(sys.modules.items()) if n.startswith("dvc_data"))]:
        if getattr(module, "hash_file", None) is original:
            module.hash_file = hash_file
    return True
