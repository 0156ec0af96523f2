"""The class on one store (dataops_kit.teach.classroom and .gate, kit/bench/class_bench.py):
a real SeaweedFS behind the real gate on 127.0.0.1, real git and dvc-s3 pushes and
pulls, each student in a home of their own; every attack a student's key allows
is tried, then the leaderboard, then the store killed between two halves of a class."""

import csv
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dataops_kit.teach import classroom
from helpers import ARTIFACTS, REPO, VENV_BIN, closed_by_peer, free_port, make_clone, prepend_to_cell, run

# Every test here drives a real store: all slow, so the quick loop (`pytest -m "not slow"`) stays quick.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not classroom.WEED.exists() and not os.environ.get("CI"),
    reason="needs the class store's packages: make class-deps (.ci/run installs them)")]


def class_bench():
    spec = importlib.util.spec_from_file_location("class_bench", REPO / "kit" / "bench" / "class_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Person:
    """One person at their own laptop: a clone, a home (their key, their git credentials)."""

    def __init__(self, base: Path, name: str, clone: Path):
        self.name, self.clone, self.home = name, clone, base / "homes" / name
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / ".gitconfig").write_text(f"[user]\n\tname = {name}\n\temail = {name}@example.invalid\n")

    def sh(self, cmd, check=True, code=None):
        """CMD in their clone; CODE, if given, typed at a join's prompt for their join code."""
        return run(cmd, cwd=self.clone, check=check, env={"HOME": str(self.home), "GIT_TERMINAL_PROMPT": "0"},
                   input=code or "")

    def key(self) -> dict:
        text = (self.clone / ".dvc" / "config.local").read_text()
        return {k: re.search(rf"{k} = (\S+)", text).group(1) for k in ("access_key_id", "secret_access_key")}

    def s3(self, key=None):
        return classroom._s3(self.state, key or self.key())


def forge(person: Person, name: str, edit) -> str:
    """An experiment ref made by hand (what a hostile student can push): a commit on HEAD
    with EDIT(clone) applied, pushed with the student's own key. Returns the ref."""
    base = person.sh("git rev-parse HEAD").stdout.strip()
    person.sh("git checkout -q --detach")
    try:
        edit(person.clone)
        person.sh(f"git add -A && git -c user.name=s -c user.email=s@x commit -q -m {name}")
        ref = f"refs/exps/{base[:2]}/{base[2:]}/{name}"
        person.sh(f"git push -q class HEAD:{ref}")
        return ref
    finally:
        person.sh("git checkout -q -f main")


def with_metrics(person: Person, metrics_bytes: bytes, params_text: str = None, md5_text: str = None):
    """An edit: reports/metrics.json's md5 in dvc.lock replaced (by the md5 of METRICS_BYTES, whose
    object the student adds to the store with their key, or by MD5_TEXT)."""
    digest = hashlib.md5(metrics_bytes).hexdigest()
    person.s3().put_object(Bucket="class", Key=f"dvc/files/md5/{digest[:2]}/{digest[2:]}", Body=metrics_bytes)

    def edit(clone):
        lock = (clone / "dvc.lock").read_text()
        old = re.search(r"path: reports/metrics.json\n\s+hash: md5\n\s+md5: (\w+)", lock).group(1)
        (clone / "dvc.lock").write_text(lock.replace(old, md5_text or digest))
        if params_text:
            (clone / "params.yaml").write_text(params_text)
    return edit


ROSTER = {"ada": "1001", "bob": "1002", "cat": "1003", "dan": "1004", "eve": "1005", "fay": "1006", "gus": "1007",
          "hal": "1008", "mal": "1009"}
QUOTA_MB = 3  # an experiment adds about 150 KB


def code(folder: Path, name: str) -> str:
    """NAME's join code, as the instructor hands it out: CLASS/codes.csv."""
    with open(folder / "codes.csv", newline="") as file:
        return {row["name"]: row["code"] for row in csv.DictReader(file)}.get(name, "")


@pytest.fixture(scope="module")
def klass():
    """A class run from what `make class-remote` prints: the instructor shares the workspace, with a
    roster (so each name is claimed with its join code); ada follows the printed lines, bob has an
    honest experiment too."""
    base = Path(tempfile.mkdtemp(prefix="class-test-"))
    base.chmod(0o755)  # the class folder is shared: another account must reach it
    folder, port = base / "class", free_port()
    folder.mkdir()
    (folder / "roster.csv").write_text("name,lms_id\n" + "".join(f"{n},{i}\n" for n, i in ROSTER.items()))
    started = run(["make", "--no-print-directory", "class-remote", f"CLASS={folder}", f"CLASS_PORT={port}",
                   f"CLASS_QUOTA_MB={QUOTA_MB}"], cwd=REPO)
    try:
        printed = started.stdout
        instructor = Person(base, "instructor", make_clone(base / "instructor"))
        shutil.copytree(REPO / ".dvc" / "cache" / "files", instructor.clone / ".dvc" / "cache" / "files")
        instructor.sh("dvc checkout -q")
        yours = re.search(r"You, in your clone: (.+); later: (.+)", printed)
        instructor.sh(yours.group(1))  # make class-join CLASS=... && git push class main && dvc push
        people = {"instructor": instructor, "printed": printed, "leaderboard": yours.group(2),
                  "folder": folder, "base": base}
        hints = re.findall(r"^    (.+)$", printed, re.M)
        for name, idea, extra in (("ada", "forest", ""), ("bob", "deep", " -S train.random_forest.max_depth=1")):
            student = Person(base, name, base / name)
            run(["git", "clone", "-q", str(instructor.clone), str(student.clone)], cwd=base)
            (student.clone / ".venv").symlink_to(VENV_BIN.parent)
            student.sh([sys.executable, "-c", "import pathlib, dataops_kit.install as i; i.install_workspace(pathlib.Path('.'))"])
            for line in hints:  # each line exactly as printed, <name> and <idea> filled in
                command = line.replace("<name>", name).replace("<idea>", idea)
                student.sh(command + (extra if command.startswith("dvc exp run") else ""), code=code(folder, name))
            people[name] = student
        for person in (p for p in people.values() if isinstance(p, Person)):
            person.state = classroom._state(folder)
        yield people
    finally:
        classroom.stop(folder, say=print)
        shutil.rmtree(base, ignore_errors=True)


def lie_in_evaluate(clone: Path) -> None:
    """The last code cell of 04_evaluate.ipynb also writes accuracy 1.0 into reports/metrics.json."""
    path = clone / "notebooks" / "04_evaluate.ipynb"
    notebook = json.loads(path.read_text())
    cell = [c for c in notebook["cells"] if c["cell_type"] == "code"][-1]
    cell["source"] = "".join(cell["source"]) + (
        "\nimport json; json.dump({**json.load(open('reports/metrics.json')), 'accuracy': 1.0}, "
        "open('reports/metrics.json', 'w'))")
    path.write_text(json.dumps(notebook, indent=1))


def model_object(person: Person, experiment: str) -> str:
    ref = person.sh(f"git for-each-ref --format='%(refname)' 'refs/exps/*/*/{experiment}'").stdout.strip()
    lock = person.sh(["git", "show", f"{ref}:dvc.lock"]).stdout
    digest = re.search(r"path: models/model.skops\n\s+hash: md5\n\s+md5: (\w+)", lock).group(1)
    return f"dvc/files/md5/{digest[:2]}/{digest[2:]}"


def test_the_printed_commands_put_the_experiment_in_the_class_store(klass):
    """The hint `dvc exp push class <name>-<idea>`, run as printed, sends the files to S3
    (the class store is the clone's default remote), and a classmate gets the exact model."""
    assert "dvc exp push class <name>-<idea>" in klass["printed"]
    ada, bob = klass["ada"], klass["bob"]
    key = model_object(ada, "ada-forest")
    body = ada.s3().get_object(Bucket="class", Key=key)["Body"].read()
    assert hashlib.md5(body).hexdigest() == "".join(key.split("/")[-2:])
    pulled = bob.sh("dvc exp pull class ada-forest && dvc exp apply ada-forest && dvc checkout -q models/model.skops")
    assert "Missing cache files" not in pulled.stdout + pulled.stderr
    assert hashlib.md5((bob.clone / "models" / "model.skops").read_bytes()).hexdigest() == "".join(key.split("/")[-2:])
    bob.sh("git checkout -q -f main && dvc pull -q -f")


def test_the_instructor_reviews_a_pushed_experiment_without_running_it(klass):
    """`make review` of a class experiment fetched with git: DVC reads it in the sandbox, with its outputs
    fetched from the store by md5 (none into the instructor's cache); none of its code runs."""
    instructor, model = klass["instructor"], model_object(klass["ada"], "ada-forest")
    alone = instructor.sh("git fetch -q class '+refs/exps/*:refs/exps/*' && make review BASE=main REV=ada-forest")
    assert "! not in DVC's cache, so not compared: reports/plots/roc.csv." in alone.stdout, alone.stdout
    reviewed = instructor.sh(f"make review BASE=main REV=ada-forest CLASS={klass['folder']}")
    assert "not in DVC's cache" not in reviewed.stdout, reviewed.stdout  # its objects came from the store
    report = (instructor.clone / "review" / "review.md").read_text()
    assert "# Review of ada-forest against main" in report
    assert "| params.yaml | train.model | logistic_regression | random_forest |" in report, report
    assert not (instructor.clone / ".dvc" / "cache" / model.removeprefix("dvc/")).exists()
    assert not list((instructor.clone / "reports").glob("failed/*")) and instructor.sh("git status --porcelain").stdout == ""


def test_a_student_key_can_only_add_and_every_attack_leaves_the_work_intact(klass):
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    ada, bob = klass["ada"], klass["bob"]
    key = model_object(ada, "ada-forest")
    original = ada.s3().get_object(Bucket="class", Key=key)["Body"].read()
    client = bob.s3()
    anonymous = __import__("botocore.session").session.get_session().create_client(
        "s3", endpoint_url=bob.state["endpoint"], region_name="us-east-1", config=Config(signature_version=UNSIGNED))
    attacks = {
        "DeleteObject on ada's model": lambda: client.delete_object(Bucket="class", Key=key),
        "PutObject over ada's model": lambda: client.put_object(Bucket="class", Key=key, Body=b"not her model"),
        "DeleteObjects": lambda: client.delete_objects(Bucket="class", Delete={"Objects": [{"Key": key}]}),
        "CopyObject onto ada's model": lambda: client.copy_object(Bucket="class", Key=key,
                                                                 CopySource={"Bucket": "class", "Key": key}),
        "DeleteBucket": lambda: client.delete_bucket(Bucket="class"),
        "CreateBucket": lambda: client.create_bucket(Bucket="mine"),
        "PutObject outside the DVC objects": lambda: client.put_object(Bucket="class", Key="dvc/runs/x", Body=b"x"),
        "multipart upload": lambda: client.create_multipart_upload(Bucket="class", Key=key),
        "PutBucketAcl": lambda: client.put_bucket_acl(Bucket="class", ACL="public-read-write"),
        "a guessed secret": lambda: bob.s3({**bob.key(), "secret_access_key": "guess"}).get_object(Bucket="class", Key=key),
        "no key at all": lambda: anonymous.get_object(Bucket="class", Key=key),
    }
    seen = {}
    for attack, call in attacks.items():
        with pytest.raises(ClientError) as error:
            call()
        seen[attack] = error.value.response["Error"]["Code"]
    print(json.dumps(seen, indent=1))
    assert seen["PutObject over ada's model"] == "BadDigest"
    assert seen["a guessed secret"] == "SignatureDoesNotMatch"
    assert all(code in ("AccessDenied", "BadDigest", "SignatureDoesNotMatch") for code in seen.values()), seen
    # The same bytes again are no change, and a new object of the right md5 is an addition.
    client.put_object(Bucket="class", Key=key, Body=original)
    new = b"bob's new file"
    digest = hashlib.md5(new).hexdigest()
    client.put_object(Bucket="class", Key=f"dvc/files/md5/{digest[:2]}/{digest[2:]}", Body=new)
    assert ada.s3().get_object(Bucket="class", Key=key)["Body"].read() == original
    bad, count, _ = class_bench().store_audit(klass["folder"])
    assert bad == 0 and count > 10
    # The instructor's admin key is the only one that may delete.
    admin = classroom._s3(bob.state, classroom.admin_key(klass["folder"]))
    admin.delete_object(Bucket="class", Key=f"dvc/files/md5/{digest[:2]}/{digest[2:]}")


def test_a_pull_checks_what_it_fetches(klass):
    """Were an object damaged in the store (only the admin key can), a pull refuses its bytes."""
    ada, bob = klass["ada"], klass["bob"]
    key = model_object(ada, "ada-forest")
    admin = classroom._s3(bob.state, classroom.admin_key(klass["folder"]))
    original = admin.get_object(Bucket="class", Key=key)["Body"].read()
    admin.put_object(Bucket="class", Key=key, Body=b"damaged")
    try:
        fresh = Person(klass["base"], "bob", klass["base"] / "bob-fresh")
        run(["git", "clone", "-q", str(bob.clone), str(fresh.clone)], cwd=klass["base"])
        (fresh.clone / ".venv").symlink_to(VENV_BIN.parent)
        fresh.sh([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(klass["folder"]),
                  "--student", "bob"])
        pulled = fresh.sh("dvc exp pull class ada-forest && dvc exp apply ada-forest && dvc pull", check=False)
        assert pulled.returncode != 0
        model = fresh.clone / "models" / "model.skops"
        assert not model.exists() or model.read_bytes() != b"damaged"
    finally:
        admin.put_object(Bucket="class", Key=key, Body=original)


def test_refs_are_owned_by_the_student_they_are_named_after(klass):
    ada, bob, instructor = klass["ada"], klass["bob"], klass["instructor"]
    remote = klass["folder"] / "class.git"

    def refs():
        return run("git for-each-ref --format='%(refname) %(objectname)'", cwd=remote).stdout
    # The class's model registry is the instructor's (lesson 9): a version, in dev then prod.
    instructor.sh("gto register classifier --version v1.0.0 && gto assign classifier --version v1.0.0 "
                  "--stage dev && gto assign classifier --version v1.0.0 --stage prod && git push -q class --tags")
    assert "│ classifier │ v1.0.0   │ v1.0.0 │ v1.0.0  │" in bob.sh("git fetch -q class --tags && gto show").stdout
    # ... and fetches the prod model by its stage, from the class store: in a new clone, with no cache of its own.
    deploy = Person(klass["base"], "bob", klass["base"] / "bob-deploy")
    run(["git", "clone", "-q", str(bob.clone), str(deploy.clone)], cwd=klass["base"])
    (deploy.clone / ".venv").symlink_to(VENV_BIN.parent)
    deploy.sh([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(klass["folder"]),
               "--student", "bob"])
    deploy.sh("git fetch -q class --tags && dvc artifacts get . classifier --stage prod -o ../prod.skops")
    prod = instructor.sh("git show 'classifier@v1.0.0:dvc.lock'").stdout
    assert hashlib.md5((bob.clone.parent / "prod.skops").read_bytes()).hexdigest() == re.search(
        r"path: models/model.skops\n\s+hash: md5\n\s+md5: (\w+)", prod).group(1)
    before = refs()
    assert "ada-forest" in before and "bob-deep" in before and "refs/tags/classifier#prod#2" in before
    attempts = {
        "gto register classifier --version v9.0.0 (pushed)":
            "git commit -q --allow-empty -m 'v9' && gto register classifier --version v9.0.0 && "
            "git push class classifier@v9.0.0",
        "gto assign --stage prod (pushed: a promotion or a rollback)":
            "gto assign classifier --version v1.0.0 --stage prod --force && git push class --tags",
        "move prod's tag": "git tag -f -a 'classifier#prod#2' -m x HEAD && git push -f class 'classifier#prod#2'",
        "delete prod's tag (unassign)": "git push class ':refs/tags/classifier#prod#2'",
        "delete the version (deregister)": "git push class ':refs/tags/classifier@v1.0.0'",
        # bob's own experiment under ada's name, force-pushed over hers
        "dvc exp push -f class ada-forest": "dvc exp save -q -f -n ada-forest && dvc exp push -f class ada-forest",
        "dvc exp remove -g class ada-forest": "dvc exp remove -g class ada-forest",
        "an experiment in ada's name": "dvc exp save -q -f -n ada-seed7 && dvc exp push class ada-seed7",
        "git push class :main": "git push class :main",
        "git push -f class HEAD:main": "git commit -q --allow-empty -m x && git push -f class HEAD:main",
        "git push class HEAD:refs/tags/v9": "git push class HEAD:refs/tags/v9",
        "delete bob's own experiment": f"git push class :{bob.sh(['git', 'for-each-ref', '--format=%(refname)', 'refs/exps/*/*/bob-deep']).stdout.strip()}",
    }
    for attempt, command in attempts.items():
        result = bob.sh(command, check=False)
        output = result.stdout + result.stderr
        print(f"--- {attempt}: exit {result.returncode}\n{output[-600:]}")
        assert result.returncode != 0, attempt
        assert "✗" in output or "rejected" in output or "declined" in output, attempt
    assert refs() == before  # nothing moved, nothing deleted
    deleted = instructor.sh("git push class :main", check=False)
    assert deleted.returncode != 0 and refs() == before  # main is protected even from the admin key
    # Ada may update her own (a rerun under the same name), and nobody gets in without a key.
    keyless = run(["git", "ls-remote", f"{bob.state['endpoint']}/git/class.git"], cwd=klass["base"], check=False,
                  env={"HOME": str(klass["base"]), "GIT_TERMINAL_PROMPT": "0"})
    assert keyless.returncode != 0
    # Ada may move her own experiment (here to its baseline, then back): the hook lets her.
    ref = ada.sh(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/*/*/ada-forest"]).stdout.split()
    ada.sh(f"git push -q -f class {ref[1]}~1:{ref[0]} && git push -q -f class {ref[1]}:{ref[0]}")
    assert refs() == before


PROBE = """
import glob, json, socket, sys, urllib.request
seen = {}
for port in json.loads(sys.argv[1]):  # SeaweedFS's admin requests, as case 1 of the issue sent them
    for path in ("/col/delete?collection=class", "/dir/assign", "/status", "/buckets/class/dvc/"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3)
            seen[f"{port}{path}"] = "answered"
        except urllib.error.HTTPError as error:
            seen[f"{port}{path}"] = f"answered {error.code}"
        except OSError:  # nothing listens there
            pass
for path in [sys.argv[2], *glob.glob("/tmp/seaweedfs-*.sock")]:
    try:
        socket.socket(socket.AF_UNIX).connect(path)
        seen[path] = "connected"
    except OSError:
        pass
print(json.dumps(seen))
"""


def test_no_listener_of_the_store_but_the_gate_answers_a_local_process(klass, tmp_path):
    """Case 1: SeaweedFS's admin requests, sent to every port it listens on (and its sockets), by this
    process, by another account, from the grading sandbox and by weed shell: nothing answers, and every
    object is still there."""
    from dataops_kit.teach import sandbox

    folder = klass["folder"]
    before, count, _ = class_bench().store_audit(folder)
    found = subprocess.run(["pgrep", "-f", f"weed server -dir={folder}"], capture_output=True, text=True).stdout.split()
    weed = [pid for pid in found if Path(f"/proc/{pid}/comm").read_text().strip() == "weed"]  # not bwrap's
    assert weed and all(os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net") for pid in weed)
    ports = json.dumps([number for number in classroom.PORTS.values() if number])
    socket_path = str(folder / "secrets" / "s3.sock")
    accounts = [[sys.executable]]
    if os.geteuid() == 0 and os.access("/usr/bin/python3", os.X_OK):  # another account, with the system's Python
        accounts.append(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"])
    accounts.append([*sandbox.command(tmp_path)[:-5], sys.executable])  # its bwrap, running the probe
    for account in accounts:
        probed = subprocess.run([*account, "-I", "-c", PROBE, ports, socket_path],
                                capture_output=True, text=True, timeout=120)
        seen = json.loads(probed.stdout)
        if len(account) > 1:  # the instructor's own account reaches the gate's socket; no other does
            assert seen == {}, seen
        else:
            assert set(seen) <= {socket_path}, seen
    shell = subprocess.run(f"(echo collection.list; echo fs.ls /; sleep 3) | timeout 4 {classroom.WEED} shell "
                           f"-master=127.0.0.1:{classroom.PORTS['master.port']}", shell=True, capture_output=True,
                           text=True)
    assert "class" not in shell.stdout, shell.stdout
    bad, after, _ = class_bench().store_audit(folder)
    assert bad == 0 and after == count


def gate_peak_mb(folder: Path) -> float:
    pid = classroom._private(folder)["pid"]
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def test_a_keyless_client_sending_a_gigabyte_is_cut_off_before_the_gate_reads_it(klass):
    """Case 2: PUTs with no key announcing 1 GB, -1 bytes, or a chunk of -1, each sending as much as it
    can: the gate refuses on the headers and closes; its peak memory stays far under 300 MB."""
    port = classroom._private(klass["folder"])["port"]
    sent = {}
    for framing in (f"Content-Length: {1 << 30}", "Content-Length: -1", "Transfer-Encoding: chunked\r\n\r\n-1"):
        connection = socket.create_connection(("127.0.0.1", port), timeout=30)
        connection.sendall(f"PUT /class/dvc/files/md5/00/{'0' * 30} HTTP/1.1\r\nHost: x\r\n{framing}\r\n".encode())
        block, total = b"\0" * (1 << 20), 0
        try:
            while total < 1 << 30:
                connection.sendall(block)
                total += len(block)
        except OSError:
            pass
        sent[framing.split("\r")[0]] = total >> 20
        connection.close()
    peak = gate_peak_mb(klass["folder"])
    print(f"MB sent before the gate closed: {sent}; the gate's peak: {peak:.0f} MB")
    assert all(mb < 1024 for mb in sent.values()) and peak < 300


def test_a_student_over_quota_is_refused_while_the_others_are_served(klass, tmp_path):
    from botocore.exceptions import ClientError

    folder, base = klass["folder"], klass["base"]
    mal = Person(base, "mal", tmp_path / "mal")
    run(["git", "clone", "-q", str(klass["instructor"].clone), str(mal.clone)], cwd=base)
    mal.sh([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(folder), "--student", "mal"],
           code=code(folder, "mal"))
    mal.state = klass["bob"].state

    def put(person, body):
        digest = hashlib.md5(body).hexdigest()
        return person.s3().put_object(Bucket="class", Key=f"dvc/files/md5/{digest[:2]}/{digest[2:]}", Body=body)
    big = os.urandom(2 << 20)
    put(mal, big)
    with pytest.raises(ClientError, match="QuotaExceeded") as refused:
        put(mal, os.urandom(2 << 20))
    assert f"its quota ({QUOTA_MB} MB)" in refused.value.response["Error"]["Message"]
    put(mal, big)  # what is stored already adds nothing
    put(klass["bob"], os.urandom(1 << 20))  # a classmate is served
    assert (folder / "store.log").read_text().count("refused 403 QuotaExceeded: mal") == 1


def test_keys_stay_private_and_never_reach_a_command_line(klass):
    folder, ada = klass["folder"], klass["ada"]
    assert oct((folder / "keys.json").stat().st_mode)[-3:] == "600"
    assert oct((folder / "secrets").stat().st_mode)[-3:] == "700"
    assert oct((ada.clone / ".dvc" / "config.local").stat().st_mode)[-3:] == "600"
    homes = list((ada.home / ".config" / "dataops-class").iterdir())
    assert homes and all(oct(path.stat().st_mode)[-3:] == "600" for path in homes)
    secret = ada.key()["secret_access_key"]
    # Nothing git would commit holds it (her experiment's params.yaml and dvc.lock are in the working tree).
    assert sorted(run("git status --porcelain", cwd=ada.clone).stdout.split()) == ["M", "M", "dvc.lock", "params.yaml"]
    assert secret not in run("git diff", cwd=ada.clone).stdout
    assert run(["git", "grep", "-I", "-l", secret], cwd=ada.clone, check=False).stdout == ""
    # Watch every process's arguments while ada joins again and pushes with git and with DVC.
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if secret.encode() in cmdline.read_bytes():
                        seen.append(cmdline.read_bytes().replace(b"\0", b" ")[:200])
                except OSError:
                    pass
            time.sleep(0.005)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ada.sh(f"make --no-print-directory class-join CLASS={folder} STUDENT=ada && "
               "dvc exp push -f class ada-forest && git fetch -q class")
    finally:
        done.set()
        watcher.join()
    assert seen == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_student_with_another_uid_joins_from_the_shared_folder_without_reading_other_keys(klass):
    folder, base = klass["folder"], klass["base"]
    student = Person(base, "cat", base / "cat")
    run(["git", "clone", "-q", str(klass["instructor"].clone), str(student.clone)], cwd=base)
    (student.clone / ".venv").symlink_to(VENV_BIN.parent)
    run(["chown", "-R", "65534:65534", str(student.clone), str(student.home)], cwd=base)
    python = str(VENV_BIN / "python")

    def as_cat(*args, check=True, code=""):
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args],
                              cwd=student.clone, capture_output=True, text=True, check=check, input=code,
                              env={"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(student.home)})
    if as_cat(python, "-c", "import dataops_kit", check=False).returncode:
        pytest.skip(f"another user cannot read this checkout's venv ({VENV_BIN}): its folders are private here")
    assert as_cat("cat", str(folder / "keys.json"), check=False).returncode != 0
    nameless = as_cat(python, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(folder), check=False)
    assert nameless.returncode == 1 and "Traceback" not in nameless.stderr
    assert "make class-join STUDENT=<name>" in nameless.stderr
    taken = as_cat(python, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(folder),
                   "--student", "ada", check=False, code=code(folder, "cat"))
    assert taken.returncode == 1 and "not ada's join code, or it was used" in taken.stderr
    joined = as_cat(python, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(folder), "--student", "cat",
                    code=code(folder, "cat"))
    assert "Joined the class as cat" in joined.stdout
    assert oct((student.clone / ".dvc" / "config.local").stat().st_mode)[-3:] == "600"
    assert as_cat("git", "ls-remote", "class").returncode == 0  # git reaches the class with cat's key


def test_one_account_joins_under_one_name_only(klass, tmp_path):
    """A second name from the account that joined as ada would take over git's credential for the store
    (every clone of the account would push as the second): refused in one line, ada's stays hers."""
    ada = klass["ada"]
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(ada.clone), str(second)], cwd=tmp_path)
    refused = run([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(klass["folder"]),
                   "--student", "gus"], cwd=second, check=False, env={"HOME": str(ada.home)})
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "this account joined the class as ada" in refused.stderr and "one account, one name" in refused.stderr
    assert "gus" not in (ada.home / ".gitconfig").read_text()
    assert ada.sh("git ls-remote class").returncode == 0  # still ada, with her own key
    again = run([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(klass["folder"]),
                 "--student", "ada"], cwd=second, env={"HOME": str(ada.home)})
    assert "Joined the class as ada" in again.stdout
    # The way out it prints, run as printed, in a copy of the account (ada's own stays hers).
    home = tmp_path / "home"
    shutil.copytree(ada.home, home)
    run(re.search(r"instead: (git config .+)\)$", refused.stderr.strip()).group(1), cwd=second, env={"HOME": str(home)})
    gus = run([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(klass["folder"]),
               "--student", "gus"], cwd=second, env={"HOME": str(home)}, input=code(klass["folder"], "gus"))
    assert "Joined the class as gus" in gus.stdout


def test_the_leaderboard_ranks_only_what_reproduces_and_survives_hostile_experiments(klass):
    bob, instructor = klass["bob"], klass["instructor"]
    bob.sh("git checkout -q -f main && git reset -q --hard origin/main")  # forged from the class's main (an
    # earlier test committed on bob's): each is refused for what it forges, not for where it starts
    metrics = json.loads((bob.clone / "reports" / "metrics.json").read_text())
    params = (bob.clone / "params.yaml").read_text()
    forge(bob, "bob-huge", with_metrics(bob, json.dumps({**metrics, "accuracy": 1e9}).encode()))
    forge(bob, "bob-fake", with_metrics(bob, json.dumps({**metrics, "accuracy": 0.999}).encode()))
    # Escape codes where YAML and JSON allow them: a quoted params key, a metric's text.
    forge(bob, "bob-best", with_metrics(bob, json.dumps({**metrics, "accuracy": "best\x1b[2J"}).encode(),
                                        params_text=params + '"\\e]0;PWNED-TITLE\\a": 1\n"\\e[2J": 2\n'))
    secret = klass["base"] / "secret.json"
    secret.write_text(json.dumps({"accuracy": 1.0, "f1_macro": 1.0}))
    forge(bob, "bob-path", with_metrics(bob, b"{}", md5_text=f"xx/../../../../../../..{secret}"))
    # Case 6: an evaluate cell that writes accuracy 1.0 every time (so it reproduces); and a new split.
    # Case 2: with a module of the toolkit's name, which a checkout on the instructor's side would run.
    marker = klass["base"] / "marker"

    def lie_with_a_module(clone):
        lie_in_evaluate(clone)
        (clone / "dataops_kit").mkdir()
        for name in ("__init__.py", "notebook.py"):
            (clone / "dataops_kit" / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    forge(bob, "bob-lies", lie_with_a_module)
    forge(bob, "bob-split", lambda clone: (clone / "params.yaml").write_text(
        params.replace("random_state: 42        # seed of the shuffle", "random_state: 7        # seed of the shuffle")))

    board = instructor.sh(klass["leaderboard"])  # make leaderboard CLASS=..., as printed
    out = board.stdout + board.stderr
    print(out)
    assert "\x1b" not in out and "\x07" not in out
    ranked = re.findall(r"^\s+(\d+)\s+(\w+)\s+(\S+)\s+([\d.]+)", out, re.M)
    assert sorted(row[2] for row in ranked) == ["ada-forest", "bob-deep"]
    assert [float(row[3]) for row in ranked] == sorted((float(row[3]) for row in ranked), reverse=True)
    rejected = dict(re.findall(r"^\s+-\s+\w+\s+(\S+)\s+rejected: (.+)$", out, re.M))
    assert "?]0;PWNED-TITLE?=1" in rejected["bob-best"]  # the key, shown with its control characters as '?'

    for forged in ("bob-huge", "bob-fake"):  # ranked by the fresh run's metrics, never by what a lock records
        assert rejected[forged].startswith("does not reproduce: reports/metrics.json is not what a fresh run makes")
    assert rejected["bob-best"].startswith("it changes ")
    assert "as the md5 of reports/metrics.json: refused" in rejected["bob-path"]
    assert rejected["bob-lies"].startswith("it changes dataops_kit/__init__.py, dataops_kit/notebook.py, "
                                           "notebooks/04_evaluate.ipynb: only params.yaml and dvc.lock")
    assert not marker.exists()
    assert rejected["bob-split"].startswith("it changes process.random_state: only train.* may change")
    page = (instructor.clone / "leaderboard.html").read_text()
    assert "<script" not in page and "\x1b" not in page and page.count("class='rejected'") == 6
    # Each ranked one reproduced byte for byte in the sandbox, and ranked by its fresh run's metrics, which
    # are the ones its own record names; nothing was checked out on the instructor's side.
    kept = json.loads((instructor.clone / ".dvc" / "tmp" / "dataops-leaderboard.json").read_text())
    for _, _, name, accuracy in ranked:
        ref = instructor.sh(f"git for-each-ref --format='%(refname) %(objectname)' 'refs/exps/*/*/{name}'").stdout.split()
        verdict = next(value for key, value in kept.items() if key.startswith(f"{ref[1]} reproduce ") and key.endswith(" sandboxed"))
        assert verdict["why"] is None and f"{verdict['metrics']['accuracy']:.4f}" == accuracy
    assert instructor.sh("git status --porcelain").stdout == "" and instructor.sh("git branch --show-current").stdout.strip() == "main"


def test_an_idle_store_is_quiet_and_stops_at_once_and_keeps_everything(klass):
    folder = klass["folder"]
    log = folder / "store.log"
    size = log.stat().st_size
    time.sleep(65)  # SeaweedFS's ring update comes once a minute: one must pass unlogged
    assert log.stat().st_size == size
    assert "-master.telemetry=false" in json.loads((folder / "gate.json").read_text())["weed"]
    # Clients that never finish their headers do not hold a stop up: they are ended with it.
    held = []
    for _ in range(5):
        held.append(socket.create_connection(("127.0.0.1", classroom._private(folder)["port"]), timeout=60,
                                             source_address=("127.0.0.66", 0)))
        held[-1].sendall(b"GET /git/class.git/info/refs HTTP/1.1\r\nHost: class\r\n")
    began = time.monotonic()
    stopped = run(["make", "--no-print-directory", "class-remote-stop", f"CLASS={folder}"], cwd=REPO, timeout=120)
    print(f"stop took {time.monotonic() - began:.1f} s")  # a figure, not a bound: the machine's speed sets it
    assert all(closed_by_peer(connection) for connection in held)
    assert f"its data stays in {folder / 'store'}" in stopped.stdout
    assert subprocess.run(["pgrep", "-f", str(folder)], capture_output=True).stdout == b""
    classroom.serve(folder, say=print)
    bad, count, _ = class_bench().store_audit(folder)
    assert bad == 0 and count > 10


def test_five_students_and_the_store_killed_at_a_fixed_point_lose_nothing(tmp_path):
    bench = class_bench()
    class_dir = tmp_path / "class"
    try:
        figures = bench.simulate(6, tmp_path, fault=True, say=print)
        print(figures)
        # The fixed point: after the first half pushed. Exactly the second half fails, each with a message.
        assert figures["pushes failed"] == 3
        assert figures["failure messages"] and all(m.startswith("ERROR: ") for m in figures["failure messages"])
        assert figures["retries failed"] == 0
        assert figures["experiments on the class remote"] == 6
        assert figures["missing after pull"] == 0
        assert figures["md5 mismatches in the instructor's cache"] == 0
        assert figures["partial or damaged objects in the store"] == 0
        assert figures["objects the experiments name"] > 6 * 4  # each student's split, model, metrics differ
    finally:
        classroom.stop(class_dir)
    assert subprocess.run(["pgrep", "-f", str(class_dir)], capture_output=True).stdout == b""


def test_a_store_that_cannot_listen_says_so_at_once_and_leaves_nothing_running(tmp_path):
    # Its port taken: the gate exits at once, and the start fails with its log named.
    folder = tmp_path / "class"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port, began = taken.getsockname()[1], time.monotonic()
        with pytest.raises(classroom.StoreError, match="the store did not start; its log: /"):
            classroom.serve(folder, port=port, say=print)
    assert time.monotonic() - began < 60
    assert (folder / "store.log").read_text().count("Address already in use") == 1
    assert subprocess.run(["pgrep", "-f", str(folder)], capture_output=True).stdout == b""


WORSE = "sed -i '/logistic_regression:/,/max_iter/ s/C: [0-9.e-]*/C: 0.0001/' params.yaml"  # exercise 1's solution


def test_submissions_are_graded_in_the_sandbox_into_an_lms_csv_and_feedback(klass, course, tmp_path):
    """Five students submit exercise 1 (honest, forged, hostile, escape codes, twice); make grades grades the
    latest of each in the sandbox; a second run grades nothing anew; a deadline picks the earlier version."""
    workspace, course_folder = course
    folder, instructor, base = klass["folder"], klass["instructor"], klass["base"]
    pristine = tmp_path / "pristine"
    run(["make", "--no-print-directory", "exercise", "1", f"COURSE={course_folder}", f"EXERCISES={pristine}"],
        cwd=workspace)
    stolen, marker = tmp_path / "stolen.json", tmp_path / "marker"
    planted = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"
    work = {
        "ada": f"{WORSE} && dvc repro -q",
        "bob": """sed -i 's/"accuracy": 1.0/"accuracy": 0.5/' reports/metrics.json && dvc commit -f -q""",
        "cat": f"{WORSE} && dvc repro -q",  # and a cell that copies the class's keys, where they exist
        "dan": f"{WORSE} && dvc repro -q",  # and a cell that prints escape codes, in the sandbox only
        "eve": "dvc repro -q",  # nothing done yet: submitted, then done and submitted again
    }
    people = {}
    for name, commands in work.items():
        scene = tmp_path / name / "exercises"
        shutil.copytree(pristine, scene, symlinks=True)
        person = people[name] = Person(base, name, next(scene.glob("01-*")) / "repo")
        nb = person.clone / "notebooks" / "01_get_data.ipynb"
        if name == "cat":
            prepend_to_cell(nb, f"import os, shutil\nif os.path.exists({str(folder / 'keys.json')!r}) and "
                                "not os.path.exists(os.path.expanduser('~/.gitconfig')):  # not on cat's own machine\n"
                                f"    shutil.copy({str(folder / 'keys.json')!r}, {str(stolen)!r})")
            # Case 1: a module of the toolkit's name, and a sitecustomize, at the root and in src/.
            for path in ("dataops_kit/__init__.py", "dataops_kit/notebook.py", "src/sitecustomize.py"):
                (person.clone / path).parent.mkdir(exist_ok=True)
                (person.clone / path).write_text(planted)
        if name == "dan":
            prepend_to_cell(nb, "import os\nif not os.path.exists(os.path.expanduser('~/.gitconfig')):\n"
                                "    raise RuntimeError('\\x1b]0;PWNED\\x07\\x1b[2J')")
            # Case 3: .dvc/config.local committed as a link to a tracked file.
            (person.clone / "notes.txt").write_text("")
            (person.clone / ".dvc" / "config.local").symlink_to("../notes.txt")
            person.sh("git add -f .dvc/config.local notes.txt")
        person.sh(f"{commands} && git add -A && git commit -q --allow-empty -m 'Exercise 1'")
        person.sh(["make", "-C", str(workspace), "--no-print-directory", "submit", "1", f"CLASS={folder}",
                   f"STUDENT={name}", f"EXERCISES={scene}"], code=code(folder, name))
    eve, first = people["eve"], (folder / "class.git" / "submissions.log").read_text().splitlines()[-1]
    time.sleep(1.1)  # a submission's name has the second it was sent in: the next is a new one
    eve.sh(f"{WORSE} && dvc repro -q && git commit -qam 'Worse'")
    again = run([sys.executable, "-m", "dataops_kit.teach.gradebook", "submit", "1", "--class-dir", str(folder),
                 "--student", "eve", "--exercises", str(eve.clone.parents[1])], cwd=eve.clone,
                env={"HOME": str(eve.home)})
    assert "Submitted exercise 1 as eve" in again.stdout

    graded = instructor.sh(["make", "--no-print-directory", "grades", f"CLASS={folder}", f"COURSE={course_folder}"])
    out = graded.stdout + graded.stderr
    print(out)
    assert "\x1b" not in out and "\x07" not in out and not stolen.exists() and not marker.exists()
    secret = classroom.admin_key(folder)["secret_access_key"]
    assert not [path for path in (folder / "grades").rglob("*") if path.is_file() and secret.encode() in path.read_bytes()]
    with open(folder / "grades" / "grades.csv", newline="") as file:
        rows = {row["Student"]: row for row in csv.DictReader(file)}
    assert sorted(rows) == sorted(ROSTER) and rows["ada"]["SIS User ID"] == "1001"
    scores = {name: row["Exercise 1"] for name, row in rows.items()}
    assert scores["ada"] == scores["eve"] == "100" and scores["fay"] == "", scores
    assert all(scores[name] not in ("", "100") for name in ("bob", "cat", "dan")), scores
    feedback = {name: (folder / "grades" / "feedback" / f"{name}.md").read_text() for name in rows}
    ARTIFACTS.mkdir(exist_ok=True)  # what an instructor hands in and hands out, kept to be read
    for path in (folder / "grades" / "grades.csv", *(folder / "grades" / "feedback").glob("*.md")):
        shutil.copy(path, ARTIFACTS / f"grades-{path.name}")
    print(out, *feedback.values(), sep="\n")
    assert "Well done." in feedback["ada"] and "Not submitted" in feedback["fay"]
    assert "✗ the data, model and metrics are what a fresh run" in feedback["bob"]
    assert "✗ notebooks, src/dataops and dvc.yaml are as the exercise set them" in feedback["cat"]
    assert "RuntimeError: ?]0;PWNED??[2J" in feedback["dan"] and "\x1b" not in feedback["dan"]
    assert "grading" not in instructor.sh(["make", "--no-print-directory", "grades", f"CLASS={folder}",
                                           f"COURSE={course_folder}"]).stdout  # nothing new: nothing rerun
    deadline = datetime.fromtimestamp(float(first.split()[0]) + 0.5, timezone.utc).isoformat()
    instructor.sh([sys.executable, "-m", "dataops_kit.teach.gradebook", "grades", "--class-dir", str(folder),
                   "--course", str(course_folder), "--deadline", deadline])
    with open(folder / "grades" / "grades.csv", newline="") as file:
        assert {row["Student"]: row["Exercise 1"] for row in csv.DictReader(file)}["eve"] not in ("", "100")


def test_a_student_submits_under_their_own_name_only_and_never_over_a_submission(klass):
    ada, bob = klass["ada"], klass["bob"]
    ref = "refs/submissions/ada/01/20261206T120000Z"
    assert ada.sh(f"git push -q class HEAD:{ref}").returncode == 0
    for person, target in ((bob, "refs/submissions/ada/01/20261206T130000Z"), (ada, ref)):
        refused = person.sh(f"git push -f class HEAD~1:{target}", check=False)
        assert refused.returncode != 0 and "✗" in refused.stderr, refused.stderr
    assert ada.sh(f"git push class :{ref}", check=False).returncode != 0  # nobody deletes one
    assert ada.sh(f"git ls-remote class {ref}").stdout.split()[0] == ada.sh("git rev-parse HEAD").stdout.strip()


def test_a_name_is_claimed_only_with_its_own_code_and_a_revoked_key_stops_at_once(klass, tmp_path):
    """Case 3: eve, from her account, tries hal's name (no code, her own code) before hal joins; hal joins
    with his; he loses his laptop: the instructor revokes his key and hands out a new code. (Last in the
    module: hal's experiment is no one else's to rank.)"""
    folder, base = klass["folder"], klass["base"]
    eve = Person(base, "eve", base / "eve")
    run(["git", "clone", "-q", str(klass["instructor"].clone), str(eve.clone)], cwd=base)
    join = [sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(folder), "--student", "hal"]
    for typed, says in (("", "joining as hal needs hal's join code"), (code(folder, "eve"), "not hal's join code")):
        refused = eve.sh(join, check=False, code=typed)
        print(refused.stderr)
        lines = [line for line in refused.stderr.splitlines() if line.startswith("✗")]
        assert refused.returncode and len(lines) == 1 and says in lines[0] and "Traceback" not in refused.stderr
    hal = Person(base, "hal", tmp_path / "hal")
    run(["git", "clone", "-q", str(klass["instructor"].clone), str(hal.clone)], cwd=base)
    hal.sh(join, code=code(folder, "hal"))
    hal.state, old = classroom._state(folder), hal.key()
    forge(hal, "hal-first", lambda clone: (clone / "notes.txt").write_text("hal's idea\n"))
    assert eve.sh(join, check=False, code=code(folder, "eve")).returncode  # his now; eve's account still has no name
    # The lost laptop: revoked at once, his work stays, a new code joins a new clone.
    revoked = run(["make", "--no-print-directory", "class-codes", f"CLASS={folder}", "STUDENT=hal"], cwd=REPO)
    assert run("git config receive.maxInputSize", cwd=folder / "class.git").stdout.strip() == str(50 << 20)
    assert "hal's key is revoked" in revoked.stdout
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        hal.s3(old).list_objects_v2(Bucket="class", MaxKeys=1)
    assert hal.sh("git ls-remote class", check=False).returncode
    laptop = Person(tmp_path, "hal", tmp_path / "laptop")
    run(["git", "clone", "-q", str(klass["instructor"].clone), str(laptop.clone)], cwd=base)
    rejoined = laptop.sh(join, code=code(folder, "hal"))
    assert "Joined the class as hal" in rejoined.stdout
    assert "/hal-first" in laptop.sh("git ls-remote class 'refs/exps/*'").stdout
    # The old laptop, asked again, says why it needs a code.
    again = hal.sh(join, check=False)
    assert "revoked the key of hal" in again.stdout and again.returncode
