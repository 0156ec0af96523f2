"""Someone else's work is reproduced in a sandbox (dataops_kit.teach.sandbox, bubblewrap): hostile
commits each end as rejected, with the reason, and nothing of the instructor's is read or touched."""

import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from helpers import prepend_to_cell, run

pytestmark = pytest.mark.skipif(not shutil.which("bwrap") and not os.environ.get("CI"), reason="needs bubblewrap (.ci/run installs it)")

GET_DATA = "01_get_data.ipynb"


@pytest.fixture
def instructor(tmp_path):
    """Things of the instructor's a reproduction must never reach: a class key file and a listening port."""
    keys = tmp_path / "class" / "keys.json"
    keys.parent.mkdir()
    keys.write_text(json.dumps({"instructor": {"secret_access_key": "SECRET-of-the-instructor"}}))
    secret, home = tempfile.mkstemp(dir=Path.home(), prefix=".dataops-test-")  # a file of the home's, no bind's
    os.write(secret, b"SECRET-of-the-home")
    os.close(secret)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    yield {"keys": keys, "home": home, "port": listener.getsockname()[1], "accepted": accepted,
           "outside": tmp_path / "outside"}
    listener.close()
    os.unlink(home)


def attack(workspace: Path, code: str) -> None:
    """A classmate's commit: CODE at the top of get_data's second cell, committed with the lock it had."""
    prepend_to_cell(workspace / "notebooks" / GET_DATA, code)
    run("git commit -qam 'my experiment' --no-verify", cwd=workspace)


def verdict(workspace: Path, wall=None):
    """The verdict on HEAD as the leaderboard judges an experiment: a fresh clone of the commit, from a
    bundle, reproduced in the sandbox."""
    from dataops_kit.facts import outputs, read_lock
    from dataops_kit.teach import sandbox

    wanted = outputs(read_lock(workspace))
    return sandbox.verdict(sandbox.reproduce(workspace, "HEAD", sorted(wanted), wall=wall or sandbox.WALL_SECONDS),
                           wanted)


def test_an_honest_commit_reproduces_in_the_sandbox(workspace):
    assert verdict(workspace) is None


HOSTILE = {
    "read the keys": ("print(open({keys!r}).read())", "FileNotFoundError"),
    "read the home": ("print(open({home!r}).read())", "FileNotFoundError"),
    "write outside the copy": ("open({outside!r}, 'w').write('x')", "FileNotFoundError"),
    "write into the venv": ("import sys, pathlib; pathlib.Path(sys.prefix, 'x').write_text('x')", "OSError: [Errno 30]"),
    "call the gate with the admin key": (
        "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)", "ConnectionRefusedError"),
    "a fork bomb": ("import os\nwhile True:\n    os.fork()", "a fresh run fails"),
    "fill the disk": ("import os\nfor i in range(64):\n    open(f'/tmp/fill{{i}}', 'wb').write(os.urandom(1 << 20) * 64)",
                      "a fresh run fails"),
    "print escape codes": ("raise RuntimeError('\\x1b]0;PWNED\\x07\\x1b[2J')", "RuntimeError: ?]0;PWNED??[2J"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_commit_is_rejected_with_the_reason_and_touches_nothing(workspace, instructor, case):
    code, reason = HOSTILE[case]
    attack(workspace, code.format(keys=str(instructor["keys"]), home=instructor["home"],
                                  outside=str(instructor["outside"]), port=instructor["port"]))
    said = verdict(workspace)
    assert said and said.startswith("a fresh run fails") and reason in said, said
    assert "\x1b" not in said and "\x07" not in said
    assert not instructor["outside"].exists() and instructor["accepted"] == []
    assert "SECRET" in instructor["keys"].read_text()


def test_a_run_that_never_ends_is_stopped_at_the_wall_limit(workspace):
    attack(workspace, "import time\ntime.sleep(10 ** 6)")
    said = verdict(workspace, wall=45)
    assert said == "a fresh run fails: it did not end within 45 s, and was stopped", said


def test_a_stage_command_of_the_students_runs_in_the_sandbox_and_reaches_nothing(workspace, instructor):
    pipeline = workspace / "dvc.yaml"
    pipeline.write_text(pipeline.read_text().replace(
        "cmd: dataops-run notebooks/01_get_data.ipynb",
        f"cmd: cp {instructor['keys']} {instructor['outside']} && dataops-run notebooks/01_get_data.ipynb"))
    run("git commit -qam 'my experiment' --no-verify", cwd=workspace)
    said = verdict(workspace)
    assert said.startswith("a fresh run fails: cp: cannot stat") and "No such file or directory" in said, said
    assert not instructor["outside"].exists()


def test_the_sandbox_imports_the_copys_helpers_and_no_library_of_the_copys(workspace):
    """The copy's src/dataops is what its kernel and runner import, and a src/dvc/ of the copy's cannot stand
    in for DVC (it would "reproduce" without running a stage): only those two import a project's src/."""
    (workspace / "src" / "dvc").mkdir()
    (workspace / "src" / "dvc" / "__init__.py").write_text("raise SystemExit('a fake dvc')\n")
    with open(workspace / "src" / "dataops" / "__init__.py", "a") as module:
        module.write("\nraise RuntimeError('the copy of the helpers ran')\n")
    run("git add -A && git commit -qm 'my experiment' --no-verify", cwd=workspace)
    said = verdict(workspace)
    assert said and "the copy of the helpers ran" in said and "fake dvc" not in said, said


def test_on_the_instructors_word_the_same_job_runs_unsandboxed(workspace):
    """make leaderboard SANDBOX=off: the same job, from the same bundle, as this user in a folder of its own."""
    from dataops_kit.facts import outputs, read_lock
    from dataops_kit.teach import sandbox

    wanted = outputs(read_lock(workspace))
    ran = sandbox.reproduce(workspace, "HEAD", sorted(wanted), sandboxed=False)
    assert sandbox.verdict(ran, wanted) is None and '"accuracy"' in ran["metrics"], ran
