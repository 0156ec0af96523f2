"""The line `make` prints about dvc.lock against the commit (dataops_kit.lockcheck)."""

import yaml

from dataops_kit.lockcheck import verdict
from helpers import REPO


LOCK = yaml.safe_load((REPO / "dvc.lock").read_text())


def _with(lock, path, md5_value=None, param=None):
    changed = yaml.safe_load(yaml.safe_dump(lock))
    for stage in changed["stages"].values():
        for entry in stage.get("outs", []) + stage.get("deps", []):
            if entry["path"] == path and md5_value:
                entry["md5"] = md5_value
        if param and "params" in stage:
            stage["params"]["params.yaml"][param] = "changed"
    return changed


def test_make_says_when_the_lock_matches_the_commit():
    assert verdict(LOCK, LOCK).startswith("✓")


def test_make_says_what_to_commit_when_this_machine_rounds_differently():
    elsewhere = _with(LOCK, "models/model.skops", "0" * 32)
    line = verdict(LOCK, elsewhere)
    assert "other bytes than the commit for models/model.skops" in line
    assert "git commit -m 'Reproduce on my machine' dvc.lock" in line
    assert "\n" not in line


def test_make_says_the_lock_records_a_students_own_change():
    mine = _with(_with(LOCK, "models/model.skops", "0" * 32), None, param="process.test_size")
    assert "records your changes" in verdict(LOCK, mine)
