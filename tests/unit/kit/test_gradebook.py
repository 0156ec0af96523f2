"""dataops_kit.teach.gradebook on its own: one submission never stops the class's grading."""

import json
import os
import shutil
import subprocess

import pytest

from dataops_kit.teach import exercises, gradebook


def git(*args, cwd, text=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, input=text, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(not shutil.which("bwrap") and not os.environ.get("CI"), reason="needs bubblewrap")
def test_a_submission_that_cannot_even_be_checked_out_gets_one_cross_and_a_verdict(tmp_path):
    """Case 5: a tree holding sub/.git/x (made with git's plumbing; git checkout refuses it), on top of
    the scene's start: the checkout fails inside the sandbox, and that is one ✗."""
    ours, instructor = tmp_path / "ours", tmp_path / "instructor"
    git("init", "-q", str(ours), cwd=tmp_path)
    (ours / "x").write_text("x\n")
    git("add", "x", cwd=ours)
    git("-c", "user.name=i", "-c", "user.email=i@x", "commit", "-qm", "the scene", cwd=ours)
    (ours / ".git" / exercises.MARKER).write_text(json.dumps({"exercise": 1, "start": git("rev-parse", "HEAD", cwd=ours)}))
    (ours / ".dvc" / "cache" / "files" / "md5").mkdir(parents=True)
    git("clone", "-q", str(ours), str(instructor), cwd=tmp_path)
    tree = git("rev-parse", "HEAD^{tree}", cwd=instructor)
    blob = git("hash-object", "-w", "--stdin", cwd=instructor, text="x\n")
    inner = git("mktree", cwd=instructor, text=f"100644 blob {blob}\tx\n")
    for name in (".git", "sub"):
        inner = git("mktree", cwd=instructor, text=f"040000 tree {inner}\t{name}\n")
    tree = git("mktree", cwd=instructor, text=f"100644 blob {blob}\tx\n040000 tree {inner}\tsub\n")
    commit = git("-c", "user.name=s", "-c", "user.email=s@x", "commit-tree", tree, "-p", "HEAD", "-m", "Exercise 1",
                 cwd=instructor)
    ref = "refs/submissions/eve/01/20261207T120000Z"
    git("update-ref", ref, commit, cwd=instructor)
    verdict = gradebook.grade(1, ref, commit, instructor, ours, tmp_path / "class")
    assert len(verdict) == 1 and verdict[0][:2] == (False, "the submission can be graded"), verdict
    assert verdict[0][2].startswith("grading it in the sandbox failed: RuntimeError: git checkout"), verdict
