"""After `make`'s `dvc repro`: did this machine reproduce the committed dvc.lock?

``python -m dataops_kit.lockcheck`` prints one line, because DVC's autostage
(``core.autostage`` in .dvc/config) stages a changed dvc.lock without a word:

* the same bytes as the commit: say so;
* other bytes from the same code, data and parameters: this machine rounds
  differently (another CPU architecture or operating system), so say what to
  commit before any time travel;
* the student changed an input: say that dvc.lock now records it, staged.

Before that, and alone as git's pre-commit hook (``--before-commit``), it
checks that dvc.lock records what each stage's kernel ran
(dataops_kit.runner.ran); where it does not, it names the stage and the
command that puts it right, and exits 1.
"""

import sys

from dataops_kit.facts import git_show, outputs, read_lock, read_yaml, stages
from dataops_kit.runner import project_root
from dataops_kit.runner.ran import lies


def _inputs(lock: dict) -> dict:
    """What a run starts from: each stage's command, parameters, and the deps
    no stage writes (an output's md5 is a result, not an input)."""
    written = set(outputs(lock))
    return {name: (stage.get("cmd"), stage.get("params"),
                   [dep for dep in stage.get("deps", []) if dep["path"] not in written])
            for name, stage in stages(lock).items()}


def verdict(committed: dict, current: dict) -> str:
    if outputs(committed) == outputs(current) and _inputs(committed) == _inputs(current):
        return "✓ dvc.lock: this machine reproduced the committed data and model byte for byte."
    if _inputs(committed) != _inputs(current):
        return ("dvc.lock now records your changes to the pipeline's inputs; DVC staged it (core.autostage): "
                "commit it with them.")
    old, new = outputs(committed), outputs(current)
    differ = ", ".join(path for path in new if old.get(path) != new[path])
    return (f"! This machine computed other bytes than the commit for {differ}, from the same code, data "
            "and parameters (another CPU architecture or operating system rounds differently). "
            "Before any time travel, commit your own reproduction: "
            "git commit -m 'Reproduce on my machine' dvc.lock  (README: Other platforms)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = project_root()
    if root is None:  # a repository with no pipeline yet (the course's first commits)
        return 0
    found = lies(root)
    for line in found:
        print(f"✗ {line}")
    if found or argv == ["--before-commit"]:
        return 1 if found else 0
    committed = git_show(root, "HEAD", "dvc.lock")
    if committed is None:  # no commit yet, or not a git repository: nothing to compare with
        return 0
    print(verdict(read_yaml(committed), read_lock(root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
