"""The grader, in process, on synthetic repositories: it lists on each page what it
grades, and whatever state a repository is in, it prints ✓/✗ lines, never a traceback."""

import json
import re
import subprocess

import pytest

from dataops_kit.teach import exercises
from dataops_kit.teach.exercises import EXERCISES, MARKER, check, criteria
from helpers import REPO

PAGE = REPO / "docs" / "exercises.md"


def test_every_exercise_page_lists_exactly_what_is_graded():
    text = PAGE.read_text()
    sections = dict(re.findall(r"(?ms)^## (\d+)\. .*?\n(.*?)(?=^## |\Z)", text))
    assert sorted(map(int, sections)) == sorted(EXERCISES)
    for number in EXERCISES:
        graded = sections[str(number)].split("\nGraded:\n", 1)[1]
        assert re.findall(r"(?m)^- (.*)$", graded) == criteria(number), number


DIGEST = "0123456789abcdef0123456789abcdef"
FILES = {  # what the checkers read, with plausible contents
    "dvc.lock": "schema: '2.0'\nstages:\n  evaluate:\n    cmd: echo\n    outs:\n"
                f"    - path: reports/metrics.json\n      md5: {DIGEST}\n",
    "dvc.yaml": "stages:\n  evaluate:\n    cmd: echo done\n    outs: [reports/metrics.json]\n",
    "params.yaml": "process:\n  test_size: 0.25\ntrain:\n  random_forest:\n    n_estimators: 50\n",
    "reports/metrics.json": '{"accuracy": 0.9}',
    "notebooks/04_evaluate.ipynb": '{"cells": []}',
    "reports/failed/04_evaluate.ipynb": '{"cells": [], "ValueError": 1}',
}


def damage(path, how):
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    elif path.is_symlink() or path.exists():
        path.unlink()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage\x00" * 8)
    elif how == "symlink loop":
        path.symlink_to(path.name)
    elif how == "a folder":
        path.mkdir()
    elif how == "a list":
        path.write_text("[1, 2, 3]\n")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A git repository with every file the checkers read, committed, and a scene marker."""
    repo = tmp_path_factory.mktemp("scene") / "repo"
    for name, text in FILES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = "git -c user.name=t -c user.email=t@example.invalid"
    subprocess.run(f"git init -q -b main && {git} add -A && {git} commit -qm start", shell=True, cwd=repo,
                   check=True)
    start = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return repo, start


@pytest.mark.parametrize("how", ["deleted", "empty", "binary", "symlink loop", "a folder", "a list"])
def test_the_grader_never_crashes_whatever_each_file_holds(synthetic, how, tmp_path):
    """Every exercise's checker, with each file it reads deleted, emptied, binary, a symlink loop, a
    folder or the wrong kind of YAML/JSON: ✓/✗ lines and a verdict, never a traceback."""
    import shutil

    source, start = synthetic
    marker = ".git/" + MARKER
    for target in [*FILES, marker]:
        repo = tmp_path / target.replace("/", "_") / "repo"
        shutil.copytree(source, repo, symlinks=True)
        for number in EXERCISES:
            damage(repo / marker, "deleted")
            (repo / marker).write_text(json.dumps({"exercise": number, "start": start}))
            damage(repo / target, how)
            lines = []
            try:
                verdict = check(number, repo, say=lines.append)
            except exercises.CourseError as error:  # only a damaged marker: one line, from main()
                assert target.endswith(MARKER), (target, how, number, error)
                continue
            assert verdict is False, (target, how, number, lines)
            assert lines[-1].startswith(f"Exercise {number}: "), lines
            assert all(line.startswith(("✓ ", "✗ ", "Exercise ")) for line in lines), lines
            assert not any("the scenario can be read" in line for line in lines), (target, how, number, lines)


def test_the_grader_outside_any_scene_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert exercises.main(["check", "1", "--exercises", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("✗ ") and "make exercise 1" in err
    assert str(tmp_path / "nowhere") in err and f"{tmp_path}/{tmp_path}" not in err


def test_a_stage_that_is_not_a_notebook_run_never_reproduces(synthetic):
    repo, _ = synthetic
    scene = exercises.Scene(repo)
    scene.grading = True
    assert "every stage runs a notebook" in scene.reproduces("HEAD")
