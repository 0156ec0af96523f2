"""dataops_kit.teach.gradebook on its own: one submission never stops the class's grading."""

import subprocess

from dataops_kit.teach import gradebook


def git(*args, cwd, text=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, input=text, capture_output=True, text=True, check=True).stdout.strip()


def test_a_submission_that_cannot_even_be_checked_out_gets_one_cross_and_a_verdict(tmp_path):
    """Case 5: a tree holding sub/.git/x (made with git's plumbing; git checkout refuses it)."""
    instructor = tmp_path / "instructor"
    git("init", "-q", str(instructor), cwd=tmp_path)
    blob = git("hash-object", "-w", "--stdin", cwd=instructor, text="x\n")
    tree = git("mktree", cwd=instructor, text=f"100644 blob {blob}\tx\n")
    for name in (".git", "sub"):
        tree = git("mktree", cwd=instructor, text=f"040000 tree {tree}\t{name}\n")
    commit = git("-c", "user.name=s", "-c", "user.email=s@x", "commit-tree", tree, "-m", "Exercise 1", cwd=instructor)
    ref = "refs/submissions/eve/01/20261207T120000Z"
    git("update-ref", ref, commit, cwd=instructor)
    verdict = gradebook.grade(1, ref, commit, instructor, tmp_path / "ours")
    assert len(verdict) == 1 and verdict[0][:2] == (False, "the submission can be graded"), verdict
    assert verdict[0][2].startswith("grading it failed: CourseError: git checkout")
