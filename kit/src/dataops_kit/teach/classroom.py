"""The class as one system: an S3 object store and a git remote that the
instructor serves, students' experiments shared through both, a leaderboard.

    make class-remote [CLASS=../dataops-class] [CLASS_HOST=127.0.0.1] [CLASS_PORT=8333]
    make class-remote-stop
    make class-codes                  # a join code per name of CLASS/roster.csv, in CLASS/codes.csv
    make class-join STUDENT=ada       # in a student's clone: remotes, ada's own key (asks for her code)
    make leaderboard                  # the instructor: fetch every experiment, reproduce, rank

The store is SeaweedFS (``weed server -s3``), pinned in requirements-class.txt
with dvc-s3; ``make class-remote`` installs both into the venv, so the
student's ``make`` stays as it is. One port, CLASS_PORT, is the class's door
(dataops_kit.teach.gate): S3 for DVC, the class git remote at /git/class.git,
and the keys; SeaweedFS itself is in a network namespace of its own, reached
only through a Unix socket in CLASS/secrets. CLASS holds the store's data,
class.git, its address (store.json, readable by all), and, readable by the
instructor only, its state (gate.json), keys and join codes (keys.json,
codes.csv) and SeaweedFS's secrets (secrets/). A student's key reaches their
clone's .dvc/config.local (0600) and a git credential file in their home
(0600), never a command's arguments.
"""

import argparse
import fnmatch
import hashlib
import html
import json
import math
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dataops_kit.facts import in_history, is_md5, lock_outs, outputs, stages, workspace, yaml_at
from dataops_kit.facts import printable as clean
from dataops_kit.teach import gate

DEFAULT_CLASS = workspace().parent / "dataops-class"


class StoreError(Exception):
    """The class store or a student's link to it failed: the message says what to do."""


BUCKET = gate.BUCKET
REMOTE = "class"  # the name of both remotes in a clone: git's and DVC's
WEED = Path(sys.executable).parent / "weed"
# Every port weed server listens on, each set, all inside its own network namespace, where nothing else
# of the machine reaches them: the gate talks to its S3 over a Unix socket. Iceberg and Lance: off.
PORTS = {"s3.port": 8333, "s3.port.grpc": 18333, "s3.port.iceberg": 0, "s3.port.lance": 0, "master.port": 9333,
         "master.port.grpc": 19333, "volume.port": 8080, "volume.port.grpc": 18080, "filer.port": 8888,
         "filer.port.grpc": 18888}
QUOTA_MB = 200  # what one student may add to the store (make class-remote CLASS_QUOTA_MB=...)
METRICS = ("accuracy", "f1_macro")


def _state(folder: Path) -> dict:
    """What a student needs to join, readable by all: the gate's address and the bucket."""
    path = folder / "store.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _private(folder: Path) -> dict:
    """The store's own state, for the instructor's account alone (0600): the gate's pid, its host and
    port, SeaweedFS's command line, the quota and the certificate."""
    path = folder / "gate.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid, group=False) -> bool:
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except (OSError, TypeError):
        return False
    return True


def _answers(url: str) -> bool:
    context = ssl.create_default_context()  # whether something answers, not who: any certificate
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        urllib.request.urlopen(url, timeout=1, context=context)
    except urllib.error.HTTPError:
        return True  # an answer, even an error: something listens there
    except OSError:
        return False
    return True


def admin_key(folder: Path) -> dict:
    """The instructor's key (the only admin key): readable by the instructor's account only."""
    return gate.Keys(folder.resolve()).data["admin"]


def _weed(folder: Path) -> list:
    """SeaweedFS's command: in a network namespace and a /tmp of its own (bwrap), so that no process of
    the machine reaches its ports or sockets; its S3 answers on CLASS/secrets/s3.sock, for the gate. Its
    own keys are in CLASS/secrets (0700): the gate's S3 identity, and JWT keys for its filer and volume."""
    secrets_dir = folder / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    secrets_dir.chmod(0o700)
    admin = admin_key(folder)
    gate.write_private(secrets_dir / "s3.json", json.dumps({"identities": [{
        "name": "gate", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        "credentials": [{"accessKey": admin["access_key_id"], "secretKey": admin["secret_access_key"]}]}]}))
    toml = secrets_dir / "security.toml"  # read from the working directory weed starts in
    if not toml.exists():
        gate.write_private(toml, "".join(
            f'[{section}]\nkey = "{gate.new_key()["secret_access_key"]}"\nexpires_after_seconds = 60\n'
            for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")))
    alone = [_bwrap(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
             "--bind", str(folder), str(folder), "--ro-bind", str(WEED.resolve()), str(WEED),  # either may be in /tmp
             "--unshare-net", "--unshare-ipc", "--unshare-pid",
             "--die-with-parent", "--chdir", str(secrets_dir), "--"]
    return [*alone, str(WEED), "server", f"-dir={folder / 'store'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.config={secrets_dir / 's3.json'}", f"-s3.localSocket={gate.UPSTREAM_SOCKET}",
            "-master.electionTimeout=2s",
            # One master, so no peer to wait for: a restart elects it after 2 s, not 10 s.
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            # Volumes of 256 MB, up to 64: with the default (30 GB, as many as the disk holds) an
            # idle store on a small disk logs "No writable volumes" 85 KB a minute.
            "-master.volumeSizeLimitMB=256", "-volume.max=64",
            *[f"-{flag}={number}" for flag, number in PORTS.items()]]


def _bwrap() -> str:
    """bubblewrap, able to make a network namespace here; else StoreError, in one line."""
    found = shutil.which("bwrap")
    made = found and subprocess.run([found, "--ro-bind", "/", "/", "--unshare-net", "true"], capture_output=True)
    if not found or made.returncode:
        raise StoreError("the class store keeps SeaweedFS in a network namespace of its own, with bubblewrap, and "
                         + ("there is none: sudo apt-get install bubblewrap" if not found else
                            "bwrap cannot make one here (are unprivileged user namespaces allowed?)"))
    return found


def _hook(folder: Path) -> None:
    git = folder / "class.git"
    if not git.exists():
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(git)], check=True)
    # A push inflates to at most what the gate lets a request carry.
    subprocess.run(["git", "config", "receive.maxInputSize", str(gate.MAX_OBJECT)], cwd=git, check=True)
    hook = git / "hooks" / "pre-receive"
    hook.write_text(gate.HOOK.format(python=sys.executable))
    hook.chmod(0o755)


def serve(folder: Path, host: str = "127.0.0.1", port: int = 8333, say=print, timeout=90,
          quota_mb: int = QUOTA_MB, cert: Path = None, cert_key: Path = None) -> dict:
    """Start the store and its gate (if they are not running); return the store's public state.
    With CERT (and CERT_KEY, its private key, if not in the same file) the gate speaks HTTPS."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _hook(folder)
    state, private = _state(folder), _private(folder)
    if state and _alive(private.get("pid")) and _answers(state["endpoint"] + "/_class/health"):
        say(f"The class store is already running: {state['endpoint']}")
        return state
    if not WEED.exists():
        raise StoreError(f"no SeaweedFS in this venv ({WEED}): make class-remote installs it")
    for given in filter(None, (cert, cert_key)):
        if not Path(given).is_file():
            raise StoreError(f"no certificate file {given} (CLASS_CERT, CLASS_CERT_KEY)")
    (folder / "store").mkdir(exist_ok=True)
    # The same address after a restart, so every clone's remotes still point at the store.
    public_host, public = private.get("host", host), private.get("port", port)
    config = {"weed": _weed(folder), "host": public_host, "port": public, "quota_bytes": quota_mb << 20,
              "cert": cert and str(Path(cert).resolve()), "cert_key": str(Path(cert_key or cert).resolve()) if cert else None}
    gate.write_private(folder / "gate.json", json.dumps(config))
    began = time.monotonic()
    with open(folder / "store.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "dataops_kit.teach.gate", str(folder)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    gate.write_private(folder / "gate.json", json.dumps({**config, "pid": process.pid}))
    endpoint = f"{'https' if cert else 'http'}://{public_host}:{public}"
    started = {"endpoint": endpoint, "bucket": BUCKET}
    (folder / "store.json").write_text(json.dumps(started, indent=1) + "\n")
    (folder / "store.json").chmod(0o644)  # a student's join reads it
    if not _bucket(started, admin_key(folder), process, timeout, verify=config["cert"]):
        stop(folder, say=lambda _: None)
        raise StoreError(f"the store did not start; its log: {folder / 'store.log'}")
    say(f"The class store is up at {endpoint} (S3, bucket {BUCKET!r}; git: {endpoint}/git/class.git), "
        f"after {time.monotonic() - began:.1f} s. Its data, keys and log are in {folder}.")
    if not cert and public_host not in ("127.0.0.1", "localhost", "::1"):
        say(f"! Plain HTTP on {public_host}: every git push sends its student's key, readable on the network's "
            f"way; give a certificate (CLASS_CERT=...) for HTTPS.")
    if gate.roster(folder):
        codes(folder, say=say)
    return started


def _s3(state: dict, keys: dict, verify=None, **config):
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=state["endpoint"], region_name="us-east-1", config=botocore.config.Config(**config),
        verify=verify,
        aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])


def _bucket(state: dict, keys: dict, process, timeout: float, verify=None) -> bool:
    """Make the bucket, through the gate, once the store behind it answers; False if it never does.
    VERIFY: the certificate the gate shows, as its own authority (HTTPS), or None."""
    # Short timeouts, no retries: whatever holds the port may accept and never answer.
    client = _s3(state, keys, verify, connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            client.create_bucket(Bucket=state["bucket"])
            return True
        except client.exceptions.BucketAlreadyOwnedByYou:
            return True
        except Exception:  # noqa: BLE001 - the gate or the store is still starting: any error, try again
            time.sleep(0.3)
    return False


def fetch_objects(folder: Path, digests, to: Path, limit: int = 256 << 20) -> list:
    """Copy the store's objects of DIGESTS (files' md5s, checked to be 32 hex digits) into TO/xx/yyyy,
    with the instructor's key and config, through the gate: each at most LIMIT bytes, kept only if its
    bytes have that md5. Returns the digests found. No project's DVC config is read."""
    digests = sorted({digest for digest in digests if is_md5(digest)})
    if not digests:
        return []
    state = _state(folder)
    client = _s3(state, admin_key(folder), verify=_private(folder).get("cert"))
    found = []
    for digest in digests:
        try:
            body = client.get_object(Bucket=state["bucket"], Key=f"dvc/files/md5/{digest[:2]}/{digest[2:]}")["Body"]
            data = body.read(limit + 1)
        except Exception:  # noqa: BLE001 - not in the store (or unreadable): the grader says it is missing
            continue
        if len(data) <= limit and hashlib.md5(data).hexdigest() == digest:
            (to / digest[:2]).mkdir(parents=True, exist_ok=True)
            (to / digest[:2] / digest[2:]).write_bytes(data)
            found.append(digest)
    return found


def stop(folder: Path, say=print) -> None:
    """Stop the gate, which finishes its requests and stops SeaweedFS (about a second);
    SIGKILL for the whole group if it has not ended after 10 s."""
    folder = folder.resolve()
    pid = _private(folder).get("pid")
    if not _alive(pid, group=True):  # the group: SeaweedFS outlives a gate killed on its own
        say(f"The class store is not running (its data is in {folder / 'store'}).")
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _alive(pid, group=True) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if not _alive(pid, group=True):
            break
    say(f"The class store is stopped; its data stays in {folder / 'store'}")


def _home_keys(endpoint: str) -> Path:
    """Where a student's key for this class lives in their home (0600), so a second clone rejoins."""
    where = re.sub(r"[^A-Za-z0-9.]+", "_", endpoint.split("://", 1)[-1])
    return Path.home() / ".config" / "dataops-class" / f"{where}.json"


def _still_valid(state: dict, key: dict) -> bool:
    """False if the gate no longer knows KEY (the instructor revoked it); True otherwise."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _s3(state, key, retries={"max_attempts": 1}).list_objects_v2(Bucket=state["bucket"], Prefix="-", MaxKeys=1)
    except ClientError as error:
        return error.response["Error"]["Code"] != "InvalidAccessKeyId"
    except BotoCoreError:
        pass  # the store does not answer: the join's next step says so
    return True


def _ask_code(student: str) -> str:
    """STUDENT's join code, typed at the prompt (never an argument: another account's ps would show it)."""
    sys.stderr.write(f"{student}'s join code (from the instructor, through the course's LMS): ")
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line.endswith("\n"):  # nothing typed, or not a terminal: the next line starts on its own
        sys.stderr.write("\n")
    code = line.strip()
    if not code:
        raise StoreError(f"joining as {student} needs {student}'s join code, from the instructor: "
                         f"run make class-join again and type it at the prompt")
    return code


def _join_request(state: dict, student: str, code) -> dict:
    request = urllib.request.Request(state["endpoint"] + "/_class/join", method="POST",
                                     data=json.dumps({"student": student, "code": code}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read(4096))


def _enrol(state: dict, student: str, say=print) -> dict:
    saved = _home_keys(state["endpoint"])
    keys = json.loads(saved.read_text()) if saved.exists() else {}
    if student in keys:
        if _still_valid(state, keys[student]):
            return keys[student]
        say(f"The instructor has revoked the key of {student} that this account kept: joining again.")
    code = None
    while True:
        try:
            key = _join_request(state, student, code)
            break
        except urllib.error.HTTPError as error:
            if error.code == 401 and code is None:  # the class has a roster: a name needs its code
                code = _ask_code(student)
                continue
            raise StoreError(error.read(1000).decode(errors="replace").strip()) from None
        except OSError as error:
            raise StoreError(f"the class store at {state['endpoint']} does not answer ({error}): "
                             "is it running? (the instructor: make class-remote)") from None
    saved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    gate.write_private(saved, json.dumps({**keys, student: key}, indent=1) + "\n")
    return key


def codes(folder: Path, student: str = None, say=print) -> Path:
    """A join code for every name on CLASS/roster.csv that has neither a key nor a code (with STUDENT:
    STUDENT's key revoked at once, and a new code), all in CLASS/codes.csv (0600), to hand out."""
    folder = folder.resolve()
    listed = gate.roster(folder)
    if not listed:
        raise StoreError(f"no roster: write {folder / 'roster.csv'}, a line 'name,lms_id' then one row a student")
    wrong = [name for name in listed if not gate.NAME.fullmatch(name) or name == gate.INSTRUCTOR]
    if wrong:
        raise StoreError(f"{clean(wrong[0], 30)!r} on the roster is not a class name: lower-case letters, digits "
                         f"and _, starting with a letter, at most 20 ({folder / 'roster.csv'})")
    if student and student not in listed:
        raise StoreError(f"{student} is not on the roster ({folder / 'roster.csv'})")
    pending = gate.Keys(folder).issue([student] if student else sorted(listed), again=bool(student))
    path = folder / "codes.csv"
    gate.write_private(path, "name,lms_id,code\n" + "".join(
        f"{name},{listed.get(name, '')},{code}\n" for name, code in sorted(pending.items())))
    if student:
        say(f"{student}'s key is revoked (their work stays), and their new join code is in {path}.")
    say(f"{len(pending)} join code(s) not yet used are in {path} (name, lms_id, code): hand each student "
        f"theirs through the LMS; make class-join asks for it, once.")
    return path


def join(repo: Path, folder: Path, student: str = None, say=print, default: bool = True) -> str:
    """Point a clone at the class: git remote `class` (the gate's /git/class.git), DVC remote
    `class` (the default, unless DEFAULT is False), with STUDENT's own key (the instructor's if no
    STUDENT is named and this account can read it). Returns the name joined as."""
    folder = folder.resolve()
    try:
        state = _state(folder)
    except OSError as error:
        raise StoreError(f"cannot read the class's address in {folder}: {error.strerror}") from None
    if not state:
        raise StoreError(f"no class store in {folder}: the instructor starts it with make class-remote")
    _one_name(state["endpoint"], student or gate.INSTRUCTOR)
    if student:
        name, key = student, _enrol(state, student, say)
    else:
        try:
            name, key = gate.INSTRUCTOR, admin_key(folder)
        except OSError:
            raise StoreError("name yourself: make class-join STUDENT=<name> (lower-case letters, digits, _)") from None

    def run(*args):
        subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True)
    url = f"{state['endpoint']}/git/class.git"
    remotes = subprocess.run(["git", "remote"], cwd=repo, capture_output=True, text=True).stdout.split()
    run("git", "remote", "set-url" if REMOTE in remotes else "add", REMOTE, url)
    # git's password for the class remote: a credential file in the home (0600), named by the
    # user's git config for that address only, read by git and by DVC's git client alike.
    store = _home_keys(state["endpoint"]).with_suffix(".git-credentials")
    store.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    quote = urllib.parse.quote
    gate.write_private(store, f"http://{quote(name, safe='')}:{quote(key['secret_access_key'], safe='')}"
                              f"@{state['endpoint'].split('://', 1)[1]}\n")
    run("git", "config", "--global", "--replace-all", f"credential.{state['endpoint']}.helper", f"store --file={store}")
    run("git", "config", "--global", f"credential.{state['endpoint']}.username", name)
    # DVC's remote, written through DVC's own config API, never as command arguments: a secret
    # in argv is visible to every user of the machine (ps); one starting with "-" reads as an option.
    from dvc.config import Config

    local = repo / ".dvc" / "config.local"
    local.touch(mode=0o600)
    local.chmod(0o600)
    with Config(dvc_dir=str(repo / ".dvc")).edit("local") as config:
        if default:  # `dvc push` and `dvc exp push class X` both go here
            config["core"]["remote"] = REMOTE
        config["remote"][REMOTE] = {"url": f"s3://{state['bucket']}/dvc", "endpointurl": state["endpoint"],
                                    "verify": True, **key}
    say(f"Joined the class as {name}: git remote {REMOTE!r} = {url}; DVC remote {REMOTE!r}{' (the default)' if default else ''} = "
        f"s3://{state['bucket']}/dvc at {state['endpoint']}; your key is in .dvc/config.local and {store}.")
    return name


def _one_name(endpoint: str, name: str) -> None:
    """Refuse a second name from one account: git's credential for the store's address is the
    account's (DVC's git client reads only the global config), so every clone would push as the last."""
    key = f"credential.{endpoint}.username"
    joined = subprocess.run(["git", "config", "--global", "--get", key], capture_output=True, text=True).stdout.strip()
    if joined and joined != name:
        raise StoreError(f"this account joined the class as {joined}, and every clone of it pushes as {joined}: "
                         f"one account, one name (to join as {name} instead: git config --global --unset {key})")


def _flat(tree: dict, prefix="") -> dict:
    flat = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def lock_refusal(lock) -> str:
    """Why a dvc.lock cannot be ranked on its own terms (an output not named by an md5), or None."""
    for entry in stages(lock).values():
        for path, digest in lock_outs(entry):
            if not is_md5(digest):
                return f"dvc.lock gives {clean(digest, 40)!r} as the md5 of {clean(path, 40)}: refused"
    return None


def metric_refusal(metrics: dict) -> str:
    if not metrics:
        return "its reports/metrics.json cannot be read (not in the store, or not a JSON object)"
    for key in METRICS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= 1:
            return f"{key} is {clean(repr(value), 30)}: not a number between 0 and 1"
    return None


RANKED_KEYS = ("train.*",)  # what an experiment may change and still be compared: not the split, not the data


def comparable_refusal(repo: Path, baseline: str, commit: str, changed: dict, keys=RANKED_KEYS) -> str:
    """Why an experiment cannot be compared with the class's (None if it can): it must start from a commit
    of main and change only params.yaml and dvc.lock, and in params.yaml only KEYS (a new split or seed
    changes the test set). Read from git's trees (diff-tree): no checkout, no filter."""
    if not in_history(repo, baseline, "main"):
        return "its baseline is not a commit of the class's main"
    files = subprocess.run(["git", "diff-tree", "-r", "--no-renames", "--name-only", "-z", baseline, commit],
                           cwd=repo, capture_output=True).stdout.decode(errors="replace").split("\0")
    other = sorted(set(filter(None, files)) - {"params.yaml", "dvc.lock"})
    if other:
        return f"it changes {', '.join(other[:3])}{' …' if len(other) > 3 else ''}: only params.yaml and dvc.lock may differ"
    wrong = sorted(str(key) for key in changed if not any(fnmatch.fnmatchcase(str(key), k) for k in keys))
    if wrong:
        return f"it changes {', '.join(wrong[:3])}: only {', '.join(keys)} may change (the rest changes what is measured)"
    return None


def experiments(repo: Path, names=None, keys=RANKED_KEYS) -> list:
    """The clone's experiments (those NAMES, if given): name, student, commit, params changed from its
    baseline, the outputs its dvc.lock records, and why it cannot be ranked (None if it can), read
    through git's plumbing with bounds: nothing of theirs checked out, run or read by DVC."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True).stdout.splitlines()
    rows = []
    for line in refs:
        ref, commit = line.split()
        match = re.fullmatch(r"refs/exps/(\w\w)/(\w+)/(.+)", ref)
        if not match or (names is not None and match.group(3) not in names):
            continue
        baseline, name = match.group(1) + match.group(2), match.group(3)
        before, after = _flat(yaml_at(repo, baseline, "params.yaml")), _flat(yaml_at(repo, ref, "params.yaml"))
        changed = {key: after.get(key) for key in {**before, **after} if before.get(key) != after.get(key)}
        lock = yaml_at(repo, ref, "dvc.lock")
        rows.append({"student": name.split("-")[0], "experiment": name, "ref": ref, "commit": commit,
                     "changed": changed, "outputs": outputs(lock), "metrics": {},
                     "refused": lock_refusal(lock) or comparable_refusal(repo, baseline, commit, changed, keys)})
    return rows


def _metrics(text) -> dict:
    try:
        data = json.loads(text) if isinstance(text, str) else {}
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _verdicts(repo: Path, rows: list, say, sandboxed: bool) -> None:
    """Each row reproduced in a fresh clone, in the sandbox (dataops_kit.teach.sandbox: every stage anew,
    the outputs the bytes dvc.lock names); its metrics are the fresh run's. Kept per commit."""
    from dataops_kit.teach import sandbox

    store = sandbox.Verdicts(repo / ".dvc" / "tmp" / "dataops-leaderboard.json")

    def judge(row):
        began = time.monotonic()
        ran = sandbox.reproduce(repo, row["ref"], sorted(row["outputs"]), sandboxed)
        why = sandbox.verdict(ran, row["outputs"])
        say(f"  reproduced {clean(row['experiment'])}: {'same bytes' if why is None else 'differs'} "
            f"({time.monotonic() - began:.0f} s)")
        return {"why": why, "metrics": _metrics(ran.get("metrics"))}
    for row in rows:
        if not row["refused"]:
            found = store.get(store.key(row["commit"], "reproduce", sandboxed), lambda: judge(row))
            row["metrics"] = found["metrics"]
            if found["why"] and sandbox.OTHER_CPU not in found["why"]:  # another CPU: ranked by the fresh run
                row["refused"] = f"does not reproduce: {found['why']}"
            row["refused"] = row["refused"] or metric_refusal(row["metrics"])


def fetch_experiments(repo: Path) -> list:
    """The names of the experiments pushed to the class, their refs fetched by git (never `dvc exp
    pull`, which reads their YAML unbounded); their objects stay in the store."""
    listed = subprocess.run(["git", "ls-remote", "--refs", REMOTE, "refs/exps/*"], cwd=repo, capture_output=True,
                            text=True)
    if listed.returncode:
        raise StoreError(f"git ls-remote {REMOTE} failed: {clean(listed.stderr.strip(), 300)}")
    names = {match.group(1) for match in re.finditer(r"refs/exps/\w\w/\w+/([A-Za-z0-9_.-]+)$", listed.stdout, re.M)}
    fetched = subprocess.run(["git", "fetch", "-q", REMOTE, "+refs/exps/*:refs/exps/*"], cwd=repo,
                             capture_output=True, text=True)
    if fetched.returncode:
        raise StoreError(f"git fetch {REMOTE} refs/exps failed: {clean(fetched.stderr.strip(), 300)}")
    return sorted(names)


def leaderboard(repo: Path, html_path: Path, say=print, sandboxed: bool = True, keys=RANKED_KEYS) -> list:
    """Fetch every experiment pushed to the class, reproduce each in the sandbox (or, only when
    SANDBOXED is False, as this user), rank those that reproduce by their fresh run's metrics."""
    if sandboxed:
        from dataops_kit.teach import sandbox

        try:
            sandbox.check()
        except sandbox.Unavailable as error:
            raise StoreError(f"{error}; nothing of the class was run (make leaderboard SANDBOX=off runs "
                             f"students' code as you, with your home, keys and network)") from None
    rows = experiments(repo, set(fetch_experiments(repo)), keys)  # the class's, not the instructor's own tries
    _verdicts(repo, rows, say, sandboxed)
    ranked = sorted((row for row in rows if not row["refused"]),
                    key=lambda row: (-row["metrics"]["accuracy"], -row["metrics"]["f1_macro"], row["experiment"]))
    rejected = sorted((row for row in rows if row["refused"]), key=lambda row: row["experiment"])

    def changed(row):
        return ", ".join(f"{k}={v}" for k, v in sorted(row["changed"].items(), key=str)) or "(nothing)"
    say(f"{'#':>3}  {'student':<12} {'experiment':<24} {'accuracy':>8} {'f1_macro':>8}  changed")
    for rank, row in enumerate(ranked, 1):
        say(f"{rank:>3}  {clean(row['student'], 12):<12} {clean(row['experiment'], 24):<24} "
            f"{row['metrics']['accuracy']:>8.4f} {row['metrics']['f1_macro']:>8.4f}  {clean(changed(row), 80)}")
    for row in rejected:
        say(f"  -  {clean(row['student'], 12):<12} {clean(row['experiment'], 24):<24} rejected: "
            f"{clean(row['refused'], 120)} (changed: {clean(changed(row), 80)})")
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(clean(value, 200))}</td>" for value in (
            rank, row["student"], row["experiment"], f"{row['metrics']['accuracy']:.4f}",
            f"{row['metrics']['f1_macro']:.4f}", changed(row))) + "</tr>\n"
        for rank, row in enumerate(ranked, 1))
    cells += "".join(
        "<tr class='rejected'>" + "".join(f"<td>{html.escape(clean(value, 200))}</td>" for value in (
            "-", row["student"], row["experiment"], "rejected", "", row["refused"])) + "</tr>\n" for row in rejected)
    html_path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>\n"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        "<title>Class leaderboard</title><style>body{font-family:sans-serif}td,th{padding:2px 10px;"
        "text-align:left}tr:nth-child(even){background:#f3f3f3}.rejected{color:#999}</style></head><body>\n"
        f"<h1>Class leaderboard</h1><p>{len(ranked)} experiments that reproduce, ranked by test accuracy;"
        f" {len(rejected)} rejected.</p>\n<table>\n"
        "<tr><th>#</th><th>student</th><th>experiment</th><th>accuracy</th><th>f1_macro</th><th>changed</th></tr>\n"
        f"{cells}</table></body></html>\n")
    say(f"{len(ranked)} experiments ranked, {len(rejected)} rejected; the page: {html_path}")
    return ranked + rejected


def hints(folder: Path) -> list:
    """What the instructor hands out after `make class-remote`: each line a command, run as printed."""
    return [f"make class-join CLASS={folder.resolve()} STUDENT=<name>",
            "dvc pull",
            "dvc exp run -n <name>-<idea> -S train.model=random_forest",
            f"dvc exp push {REMOTE} <name>-<idea>"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataops_kit.teach.classroom", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["serve", "stop", "join", "codes", "leaderboard"])
    parser.add_argument("--class-dir", type=Path, default=Path(os.environ.get("CLASS") or DEFAULT_CLASS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8333)
    parser.add_argument("--student", default=os.environ.get("STUDENT") or None)
    parser.add_argument("--quota-mb", type=int, default=QUOTA_MB, help="serve: what one student may add, in MB")
    parser.add_argument("--cert", type=Path, help="serve: the gate's certificate (PEM): HTTPS")
    parser.add_argument("--cert-key", type=Path, help="serve: the certificate's private key, if not in --cert")
    parser.add_argument("--keys", default=",".join(RANKED_KEYS),
                        help="leaderboard: the params.yaml keys an experiment may change (globs, comma-separated)")
    parser.add_argument("--unsandboxed", action="store_true",
                        help="leaderboard: reproduce students' experiments as you, outside the sandbox")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.class_dir, args.host, args.port, quota_mb=args.quota_mb, cert=args.cert, cert_key=args.cert_key)
            print("Students, in their clone of the course or workspace:\n"
                  + "".join(f"    {line}\n" for line in hints(args.class_dir))
                  + f"You, in your clone: make class-join CLASS={args.class_dir.resolve()} && git push {REMOTE} main"
                    f" && dvc push; later: make leaderboard CLASS={args.class_dir.resolve()}")
        elif args.command == "stop":
            stop(args.class_dir)
        elif args.command == "join":
            join(Path.cwd(), args.class_dir, args.student)
        elif args.command == "codes":
            codes(args.class_dir, args.student)
        else:
            leaderboard(Path.cwd(), Path.cwd() / "leaderboard.html", sandboxed=not args.unsandboxed,
                        keys=tuple(args.keys.split(",")))
    except (StoreError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"✗ {error}{(': ' + detail.strip()) if detail else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
