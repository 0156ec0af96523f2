"""docs/walkthrough.md is executable: every `sh` block runs in order, and every
Expect line is checked against what it printed. Then the `sh` blocks of the
exercises' solutions run in the state the walkthrough leaves.

It runs as on the least convenient student machine: under another CPU's BLAS
kernel, in a clone whose committed dvc.lock was made on a machine that rounds
differently (an arm64 Mac), so no step may rely on bytes only the author's
machine made."""

import re

import pytest
import yaml

from helpers import REPO, md5, run

WALKTHROUGH = REPO / "docs" / "walkthrough.md"
EXERCISES = REPO / "docs" / "exercises.md"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "student@example.invalid",
                "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "student@example.invalid"}
ANOTHER_CPU = {"OPENBLAS_CORETYPE": "Sandybridge"}
ELSEWHERE = "a1" * 16  # the model md5 another platform recorded


def blocks(text: str):
    """(line number, commands, [(kind, expected)]) for each `sh` block, in order."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start, i = i + 1, i + 1
            while lines[i].strip() != "```":
                i += 1
            commands, expects = "\n".join(lines[start:i]), []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                match = re.match(r"Expect( pattern)?: `(.*)`$", lines[i])
                if match:
                    expects.append(("pattern" if match.group(1) else "line", match.group(2)))
                i += 1
            found.append((start, commands, expects))
        else:
            i += 1
    return found


def run_blocks(path, root, env):
    for line, commands, expects in blocks(path.read_text()):
        result = run(["bash", "-eo", "pipefail", "-c", commands], cwd=root, check=False, env=env)
        output = result.stdout + result.stderr
        where = f"{path.relative_to(REPO)}:{line}\n$ {commands}\n{output}"
        assert result.returncode == 0, where
        for kind, expected in expects:
            if kind == "line":
                assert expected in output, f"expected {expected!r} at {where}"
            else:
                assert re.search(expected, output, re.MULTILINE), f"expected /{expected}/ at {where}"


def test_every_walkthrough_block_states_what_to_expect():
    parsed = blocks(WALKTHROUGH.read_text())
    assert len(parsed) >= 15
    assert [line for line, _, expects in parsed if not expects] == []
    assert len(blocks(EXERCISES.read_text())) >= 4


def committed_elsewhere(root, env):
    """Rewrite the committed model md5, as if the last commit came from another platform."""
    lock = root / "dvc.lock"
    text = lock.read_text()
    model = yaml.safe_load(text)["stages"]["train_model"]["outs"][0]
    assert model["path"] == "models/model.skops"
    lock.write_text(text.replace(model["md5"], ELSEWHERE))
    run("git commit -qam 'Pipeline, reproduced on an arm64 Mac'", cwd=root, env=env)


@pytest.mark.slow
def test_walkthrough_and_exercises_run_top_to_bottom_on_any_machine(clone, tmp_path):
    # COLUMNS: DVC wraps its tables at the terminal's width, and a test's paths are long.
    env = {**GIT_IDENTITY, **ANOTHER_CPU, "HOME": str(tmp_path), "COLUMNS": "200"}
    committed_elsewhere(clone, env)
    # What `make` runs once the venv is there.
    made = run("dvc repro && python -m dataops.lockcheck", cwd=clone, env=env)
    assert "! This machine computed other bytes than the commit for models/model.skops" in made.stdout

    run_blocks(WALKTHROUGH, clone, env)

    # Section 8's way out of an old commit where `dvc repro` did change dvc.lock.
    foreign = run("git log --format=%H -1 --grep='arm64 Mac'", cwd=clone).stdout.strip()
    run(f"git checkout -q {foreign}", cwd=clone, env=env)
    run("dvc checkout", cwd=clone, env=env, check=False)  # that model was never in this cache
    run("dvc repro", cwd=clone, env=env)
    assert "dvc.lock" in run("git status --porcelain", cwd=clone).stdout
    refused = run("git checkout -q main", cwd=clone, env=env, check=False)
    assert "would be overwritten" in refused.stderr
    run("git checkout -q HEAD -- dvc.lock && git checkout -q main && dvc checkout", cwd=clone, env=env)
    assert run("git status --porcelain", cwd=clone).stdout == ""
    assert "up to date" in run("dvc status", cwd=clone).stdout

    run_blocks(EXERCISES, clone, env)
    lock = yaml.safe_load(run("git show HEAD~1:dvc.lock", cwd=clone).stdout)
    assert md5(tmp_path / "previous-model.skops") == lock["stages"]["train_model"]["outs"][0]["md5"]
