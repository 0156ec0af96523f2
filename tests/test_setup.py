"""The README's first command works on a fresh clone, with nothing installed by hand."""

import os
import subprocess

from helpers import REPO, make_clone


def test_fresh_clone_make_reproduces_the_committed_lock_and_stays_clean(tmp_path):
    root = make_clone(tmp_path / "ws", share_venv=False)
    # Only what a new machine has: no venv on PATH, no PYTHONPATH.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DATAOPS_ROOT")}
    env["PATH"] = path

    def sh(cmd):
        return subprocess.run(cmd, cwd=root, shell=True, env=env, capture_output=True, text=True)

    made = sh("make")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "✓ train_model" in made.stdout
    assert (root / "models/model.skops").is_file()
    assert (root / "dvc.lock").read_bytes() == (REPO / "dvc.lock").read_bytes()
    assert sh("git status --porcelain").stdout == ""
    assert "up to date" in sh(".venv/bin/dvc status").stdout
    assert "Data and pipelines are up to date." in sh("make").stdout
