"""`pytest --nbval-lax` runs the stage notebooks in a sandbox, not in your workspace.

nbval starts each kernel here in notebooks/, with the notebook's own code; the
notebooks find the workspace through dataops.find_root(), which honours
$DATAOPS_ROOT. Pointing that at a throw-away copy of params.yaml, data/ and
models/ means the notebooks compute with your params.yaml and your data but
never touch your workspace, not even its scratch/ (run outside `dvc repro`,
notebooks write there, see dataops.output_paths). Set DATAOPS_NBVAL_SANDBOX
to a folder to keep what they wrote: its scratch/ has it.
"""

import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    if not (config.getoption("nbval", False) or config.getoption("nbval_lax", False)):
        return
    kept = os.environ.get("DATAOPS_NBVAL_SANDBOX")  # a folder to keep, to look at what the notebooks wrote
    if kept:
        sandbox = Path(kept)
        sandbox.mkdir(parents=True, exist_ok=True)
    else:
        sandbox = Path(tempfile.mkdtemp(prefix="nbval-sandbox-"))
        config.add_cleanup(lambda: shutil.rmtree(sandbox, ignore_errors=True))
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / name, sandbox / name)
    for name in ("data", "models"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, sandbox / name)
    os.environ["DATAOPS_ROOT"] = str(sandbox)
