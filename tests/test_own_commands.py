"""The workspace's own commands that git runs in a work tree (the notebook filter and diff driver, the
pre-commit hook) run the installed toolkit, never code the tree holds: a classmate's experiment or a
submission may commit a dataops_kit/ or a sitecustomize.py of its own."""

import json
import subprocess
import sys
from pathlib import Path

from dataops_kit.install import install_git_filter, install_pre_commit_hook
from helpers import REPO

PLANTED = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


def test_a_committed_dataops_kit_or_sitecustomize_is_never_run_by_git(tmp_path):
    repo, marker = tmp_path / "repo", tmp_path / "marker"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitattributes").write_text((REPO / ".gitattributes").read_text())
    notebook = json.loads((REPO / "notebooks" / "01_get_data.ipynb").read_text())
    (repo / "nb.ipynb").write_text(json.dumps(notebook))
    for planted in ("dataops_kit/__init__.py", "dataops_kit/notebook.py", "dataops_kit/lockcheck.py",
                    "sitecustomize.py", "src/sitecustomize.py", "usercustomize.py"):
        (repo / planted).parent.mkdir(parents=True, exist_ok=True)
        (repo / planted).write_text(PLANTED.format(marker=str(marker)))
    # Installed as `make` installs them, with this venv's Python.
    install_git_filter(repo)
    install_pre_commit_hook(repo)
    git = ["git", "-c", "user.name=s", "-c", "user.email=s@x"]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(repo / "src")}
    notebook["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["noise\n"]}]
    (repo / "nb.ipynb").write_text(json.dumps(notebook))
    for command in (["status", "--porcelain"], ["diff"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
        subprocess.run([*git, *command], cwd=repo, env=env, check=True, capture_output=True)
    assert not marker.exists()
    committed = json.loads(subprocess.run(["git", "show", "HEAD:nb.ipynb"], cwd=repo, capture_output=True).stdout)
    assert committed["cells"][1]["outputs"] == []  # the filter ran: the installed one
