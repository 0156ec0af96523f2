"""The class on one store (dataops_kit.teach.classroom, kit/bench/class_bench.py):
a real SeaweedFS S3 server on 127.0.0.1, real dvc-s3 pushes and pulls of
experiments, the leaderboard, and the store killed in the middle of the pushes."""

import importlib.util
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from dataops_kit.teach import classroom
from helpers import REPO, free_port, make_clone, run

# Every test here starts a real SeaweedFS store (about 14 s a test, even the
# shortest): all slow, so the quick loop (`pytest -m "not slow"`) stays quick.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not classroom.WEED.exists() and not os.environ.get("CI"),
    reason="needs the class store's packages: make class-deps (.ci/run installs them)")]


def class_bench():
    spec = importlib.util.spec_from_file_location("class_bench", REPO / "kit" / "bench" / "class_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_class_remote_starts_and_stops_the_store_and_keeps_credentials_untracked(tmp_path):
    folder, port = tmp_path / "class", free_port()
    started = run(["make", "--no-print-directory", "class-remote", f"CLASS={folder}", f"CLASS_PORT={port}"], cwd=REPO)
    try:
        assert f"http://127.0.0.1:{port}" in started.stdout
        pid = classroom._state(folder)["pid"]
        assert classroom._alive(pid)
        assert oct((folder / "credentials.json").stat().st_mode)[-3:] == "600"
        secret = classroom.credentials(folder)["secret_access_key"]

        student = make_clone(tmp_path / "student")
        joined = run(["make", "--no-print-directory", "class-join", f"CLASS={folder}"], cwd=student)
        assert "credentials in .dvc/config.local" in joined.stdout
        assert secret in (student / ".dvc" / "config.local").read_text()
        # Tracked nowhere: not in any tracked file, not in what git would commit.
        assert run("git status --porcelain", cwd=student).stdout == ""
        tracked = run("git ls-files -z", cwd=student).stdout.split("\0")
        assert not [name for name in filter(None, tracked) if (student / name).is_file()
                    and secret.encode() in (student / name).read_bytes()]
        assert run(["git", "grep", "-I", "-l", secret], cwd=student, check=False).stdout == ""
        pushed = run("dvc push -r class", cwd=student, check=False)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    finally:
        stopped = run(["make", "--no-print-directory", "class-remote-stop", f"CLASS={folder}"], cwd=REPO)
    assert "stopped" in stopped.stdout and not classroom._alive(pid)


def test_five_students_push_through_a_store_killed_mid_push_and_nothing_is_lost(tmp_path):
    bench = class_bench()
    class_dir, instructor = tmp_path / "class", tmp_path / "instructor"
    try:
        # Down for 15 s: longer than DVC's own retries, so the pushes in flight must fail.
        figures = bench.simulate(5, tmp_path, fault=True, keep_running=True, say=print, down_for=15)
        print(figures)
        # The fault broke pushes, each with DVC's message, and every retry succeeded.
        assert figures["pushes failed"] >= 1
        messages = figures["failure messages"]
        assert messages and all(message.startswith("ERROR: failed to ") for message in messages), messages
        assert any("Could not connect to the endpoint URL" in message for message in messages), messages
        assert figures["retries failed"] == 0
        # Nothing lost, nothing partial: every object the experiments name, byte for byte.
        assert figures["experiments on the class remote"] == 5
        assert figures["missing after pull"] == 0
        assert figures["md5 mismatches in the instructor's cache"] == 0
        assert figures["partial or damaged objects in the store"] == 0
        assert figures["objects the experiments name"] > 5 * 4  # each student's split, model, metrics differ

        # The instructor's clone is of the committed workspace: this checkout's module, as the code under test.
        board = run([sys.executable, "-m", "dataops_kit.teach.classroom", "leaderboard", "--class-dir", str(class_dir)],
                    cwd=instructor, env={"PYTHONPATH": str(REPO / "src")})
        print(board.stdout)
        rows = [line.split() for line in board.stdout.splitlines() if re.match(r"\s+\d+\s+s\d\d\s", line)]
        assert [row[1] for row in rows] != [] and sorted(row[1] for row in rows) == [f"s{i:02d}" for i in range(5)]
        accuracies = [float(row[3]) for row in rows]
        assert accuracies == sorted(accuracies, reverse=True)
        assert all(row[5].startswith("process.random_state=") for row in rows)
        page = (instructor / "leaderboard.html").read_text()
        assert page.count("<tr><td>") == 5 and "<script" not in page
        assert run("git status --porcelain", cwd=instructor).stdout == ""

        # The instructor reproduces the winner byte for byte.
        winner = rows[0][2]
        ref = run(f"git for-each-ref --format='%(refname)' refs/exps | grep '/{winner}$'", cwd=instructor).stdout.strip()
        recorded = run(["git", "show", f"{ref}:dvc.lock"], cwd=instructor).stdout
        run(f"dvc exp apply {winner} && dvc repro --force", cwd=instructor)
        assert (instructor / "dvc.lock").read_text() == recorded
    finally:
        classroom.stop(class_dir)
    assert subprocess.run(["pgrep", "-f", str(class_dir)], capture_output=True).stdout == b""


def test_a_store_that_cannot_listen_says_so_at_once_and_leaves_nothing_running(tmp_path):
    # Its S3 port taken: weed exits at once; the start is tried again (fresh
    # internal ports), then fails with its log named, well before the 90 s timeout.
    folder = tmp_path / "class"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port, began = taken.getsockname()[1], time.monotonic()
        with pytest.raises(classroom.StoreError, match="the store did not start; its log: "):
            classroom.serve(folder, port=port, say=print)
    assert time.monotonic() - began < 60
    # Three tries, each refused on that port (a fresh internal port can be refused too, on a busy machine).
    assert (folder / "store.log").read_text().count(f":{port}: bind: address already in use") == 3
    assert subprocess.run(["pgrep", "-f", str(folder)], capture_output=True).stdout == b""
