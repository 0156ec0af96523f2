"""After `make`'s `dvc repro`: did this machine reproduce the committed dvc.lock?

``python -m dataops_kit.lockcheck`` prints one line, because DVC's autostage
(``core.autostage`` in .dvc/config) stages a changed dvc.lock without a word:

* the same bytes as the commit: say so;
* other bytes from the same code, data and parameters: this machine rounds
  differently (another CPU architecture or operating system), so say what to
  commit before any time travel;
* the student changed an input: say that dvc.lock now records it, staged.
"""

import subprocess
import sys

from dataops import find_root
from dataops.params import parse


def _inputs(lock: dict) -> dict:
    """What a run starts from: each stage's command, parameters, and the deps
    no stage writes (an output's md5 is a result, not an input)."""
    stages = lock.get("stages", {})
    written = {out["path"] for stage in stages.values() for out in stage.get("outs", [])}
    return {name: (stage.get("cmd"), stage.get("params"),
                   [dep for dep in stage.get("deps", []) if dep["path"] not in written])
            for name, stage in stages.items()}


def _outputs(lock: dict) -> dict:
    return {out["path"]: out.get("md5") for stage in lock.get("stages", {}).values()
            for out in stage.get("outs", [])}


def verdict(committed: dict, current: dict) -> str:
    if _outputs(committed) == _outputs(current) and _inputs(committed) == _inputs(current):
        return "✓ dvc.lock: this machine reproduced the committed data and model byte for byte."
    if _inputs(committed) != _inputs(current):
        return ("dvc.lock now records your changes to the pipeline's inputs; DVC staged it (core.autostage): "
                "commit it with them.")
    old, new = _outputs(committed), _outputs(current)
    differ = ", ".join(path for path in new if old.get(path) != new[path])
    return (f"! This machine computed other bytes than the commit for {differ}, from the same code, data "
            "and parameters (another CPU architecture or operating system rounds differently). "
            "Before any time travel, commit your own reproduction: "
            "git commit -m 'Reproduce on my machine' dvc.lock  (README: Other platforms)")


def main() -> int:
    root = find_root()
    shown = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=root, capture_output=True, text=True)
    if shown.returncode != 0:  # no commit yet, or not a git repository: nothing to compare with
        return 0
    print(verdict(parse(shown.stdout), parse((root / "dvc.lock").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
