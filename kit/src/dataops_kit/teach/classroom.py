"""The class as one system: an S3 object store and a git remote that the
instructor serves, students' experiments shared through both, a leaderboard.

    make class-remote [CLASS=../dataops-class] [CLASS_HOST=127.0.0.1] [CLASS_PORT=8333]
    make class-remote-stop
    make class-join STUDENT=ada       # in a student's clone: remotes, ada's own key
    make leaderboard                  # the instructor: fetch every experiment, reproduce, rank

The store is SeaweedFS (``weed server -s3``), pinned in requirements-class.txt
with dvc-s3; ``make class-remote`` installs both into the venv, so the
student's ``make`` stays as it is. One port, CLASS_PORT, is the class's door
(dataops_kit.teach.gate): S3 for DVC, the class git remote at /git/class.git,
and the keys. CLASS holds the store's data, class.git, the store's state
(store.json: its address, readable by all) and its keys (keys.json and
secrets/, readable by the instructor only). A student's key reaches their
clone's .dvc/config.local (0600) and a git credential file in their home
(0600), never a command's arguments.
"""

import argparse
import html
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dataops_kit.facts import (YAMLError, free_port, git_show, is_md5, lock_outs, locked_metrics, read_yaml, stages,
                               workspace)
from dataops_kit.facts import printable as clean
from dataops_kit.teach import gate

DEFAULT_CLASS = workspace().parent / "dataops-class"


class StoreError(Exception):
    """The class store or a student's link to it failed: the message says what to do."""


BUCKET = gate.BUCKET
REMOTE = "class"  # the name of both remotes in a clone: git's and DVC's
WEED = Path(sys.executable).parent / "weed"
DVC = str(Path(sys.executable).parent / "dvc")  # the venv's (dataops_kit.install), activated or not
# Every port weed server listens on, each set: its defaults (8181 and 9101 too)
# would collide with a second store on the same machine.
PORTS = {"s3": "s3.port", "s3.grpc": "s3.port.grpc", "s3.iceberg": "s3.port.iceberg", "s3.lance": "s3.port.lance",
         "master": "master.port", "master.grpc": "master.port.grpc", "volume": "volume.port",
         "volume.grpc": "volume.port.grpc", "filer": "filer.port", "filer.grpc": "filer.port.grpc"}
METRICS = ("accuracy", "f1_macro")


def _state(folder: Path) -> dict:
    path = folder / "store.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid, group=False) -> bool:
    try:
        (os.killpg if group else os.kill)(pid, 0)
    except (OSError, TypeError):
        return False
    return True


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True  # an answer, even an error: something listens there
    except OSError:
        return False
    return True


def admin_key(folder: Path) -> dict:
    """The instructor's key (the only admin key): readable by the instructor's account only."""
    return gate.Keys(folder.resolve()).data["admin"]


def _secrets(folder: Path, ports: dict) -> list:
    """SeaweedFS's own keys, in CLASS/secrets (0700): the gate's S3 identity, and JWT keys
    so that its filer and volume HTTP ports refuse anyone without a signed token."""
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
    return [str(WEED), "server", f"-dir={folder / 'store'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.config={secrets_dir / 's3.json'}", "-master.electionTimeout=2s",
            # One master, so no peer to wait for: a restart elects it after 2 s, not 10 s.
            "-master.telemetry=false", "-volume.preStopSeconds=0",
            # Volumes of 256 MB, up to 64: with the default (30 GB, as many as the disk holds) an
            # idle store on a small disk logs "No writable volumes" 85 KB a minute.
            "-master.volumeSizeLimitMB=256", "-volume.max=64",
            *[f"-{PORTS[name]}={number}" for name, number in ports.items()]]


def _hook(folder: Path) -> None:
    git = folder / "class.git"
    if not git.exists():
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(git)], check=True)
    hook = git / "hooks" / "pre-receive"
    hook.write_text(gate.HOOK.format(python=sys.executable))
    hook.chmod(0o755)


def serve(folder: Path, host: str = "127.0.0.1", port: int = 8333, say=print, timeout=90) -> dict:
    """Start the store and its gate (if they are not running); return the store's state."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _hook(folder)
    state = _state(folder)
    if state and _alive(state.get("pid")) and _answers(state["endpoint"] + "/_class/health"):
        say(f"The class store is already running: {state['endpoint']}")
        return state
    if not WEED.exists():
        raise StoreError(f"no SeaweedFS in this venv ({WEED}): make class-remote installs it")
    (folder / "store").mkdir(exist_ok=True)
    # The same ports after a restart, so every clone's remotes still point at the store.
    # Fresh ones are free when picked, but another program can take one before the
    # store listens on it (weed then exits): pick others, up to three times.
    for attempt in range(3):
        ports = state.get("ports") or {name: free_port("127.0.0.1") for name in PORTS}
        public = state.get("port", port)
        public_host = state.get("host", host)
        command = _secrets(folder, ports)
        gate.write_private(folder / "gate.json", json.dumps(
            {"weed": command, "upstream_port": ports["s3"], "host": public_host, "port": public, "ports": ports}))
        began = time.monotonic()
        with open(folder / "store.log", "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "dataops_kit.teach.gate", str(folder)],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        endpoint = f"http://{public_host}:{public}"
        started = {"pid": process.pid, "endpoint": endpoint, "host": public_host, "port": public,
                   "ports": ports, "bucket": BUCKET}
        (folder / "store.json").write_text(json.dumps(started, indent=1) + "\n")
        if _bucket(started, admin_key(folder), process, timeout):
            break
        stop(folder, say=lambda _: None)
        if state.get("ports") or attempt == 2:
            raise StoreError(f"the store did not start; its log: {folder / 'store.log'}")
    say(f"The class store is up at {endpoint} (S3, bucket {BUCKET!r}; git: {endpoint}/git/class.git), "
        f"after {time.monotonic() - began:.1f} s. Its data, keys and log are in {folder}.")
    return started


def _s3(state: dict, keys: dict, **config):
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=state["endpoint"], region_name="us-east-1", config=botocore.config.Config(**config),
        aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])


def _bucket(state: dict, keys: dict, process, timeout: float) -> bool:
    """Make the bucket, through the gate, once the store behind it answers; False if it never does."""
    # Short timeouts, no retries: whatever holds the port may accept and never answer.
    client = _s3(state, keys, connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})
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


def stop(folder: Path, say=print) -> None:
    """Stop the gate, which finishes its requests and stops SeaweedFS (about a second);
    SIGKILL for the whole group if it has not ended after 10 s."""
    folder = folder.resolve()
    pid = _state(folder).get("pid")
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


def _enrol(state: dict, student: str) -> dict:
    saved = _home_keys(state["endpoint"])
    keys = json.loads(saved.read_text()) if saved.exists() else {}
    if student in keys:
        return keys[student]
    request = urllib.request.Request(state["endpoint"] + "/_class/join", method="POST",
                                     data=json.dumps({"student": student}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            key = json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise StoreError(error.read().decode(errors="replace").strip()) from None
    except OSError as error:
        raise StoreError(f"the class store at {state['endpoint']} does not answer ({error}): "
                         "is it running? (the instructor: make class-remote)") from None
    saved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    gate.write_private(saved, json.dumps({**keys, student: key}, indent=1) + "\n")
    return key


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
        name, key = student, _enrol(state, student)
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


def experiments(repo: Path, names=None) -> list:
    """The clone's experiments (those NAMES, if given): name, student, commit, params
    changed from its baseline, metrics, and why it cannot be ranked (None if it can)."""
    def show(rev, path):
        try:
            data = read_yaml(git_show(repo, rev, path) or "")
        except (YAMLError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True).stdout.splitlines()
    rows = []
    for line in refs:
        ref, commit = line.split()
        match = re.fullmatch(r"refs/exps/(\w\w)/(\w+)/(.+)", ref)
        if not match:
            continue
        baseline, name = match.group(1) + match.group(2), match.group(3)
        if names is not None and name not in names:
            continue
        before, after = _flat(show(baseline, "params.yaml")), _flat(show(ref, "params.yaml"))
        changed = {key: value for key, value in after.items() if before.get(key) != value}
        lock = show(ref, "dvc.lock")
        metrics = locked_metrics(repo, lock)
        rows.append({"student": name.split("-")[0], "experiment": name, "ref": ref, "commit": commit,
                     "changed": changed, "metrics": metrics,
                     "refused": lock_refusal(lock) or metric_refusal(metrics)})
    return rows


def _verdicts(repo: Path, rows: list, say, sandboxed: bool) -> None:
    """Each row's reproduction, as the exercise grader checks it (a fresh clone reruns every
    stage, and the outputs must be the bytes dvc.lock names), in the sandbox; kept per commit in .dvc/tmp."""
    from dataops_kit.teach.exercises import Scene

    path = repo / ".dvc" / "tmp" / "dataops-leaderboard.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    scene = Scene(repo, sandboxed=sandboxed)
    try:
        for row in rows:
            if row["refused"]:
                continue
            if row["commit"] not in known:
                began = time.monotonic()
                known[row["commit"]] = scene.reproduces(row["ref"])
                say(f"  reproduced {clean(row['experiment'])}: "
                    f"{'same bytes' if known[row['commit']] is None else 'differs'} ({time.monotonic() - began:.0f} s)")
            if known[row["commit"]]:
                row["refused"] = f"does not reproduce: {known[row['commit']]}"
    finally:
        scene.cleanup()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1) + "\n")


def leaderboard(repo: Path, html_path: Path, say=print, sandboxed: bool = True) -> list:
    """Fetch every experiment pushed to the class, reproduce each in the sandbox (or, only when
    SANDBOXED is False, as this user), rank those that reproduce."""
    if sandboxed:
        from dataops_kit.teach import sandbox

        try:
            sandbox.check()
        except sandbox.Unavailable as error:
            raise StoreError(f"{error}; nothing of the class was run (make leaderboard SANDBOX=off runs "
                             f"students' code as you, with your home, keys and network)") from None
    listed = subprocess.run([DVC, "exp", "list", REMOTE, "--all-commits", "--name-only"], cwd=repo,
                            capture_output=True, text=True)
    if listed.returncode:
        raise StoreError(f"dvc exp list {REMOTE} failed: {clean(listed.stderr.strip(), 300)}")
    names = sorted({name for name in listed.stdout.split() if re.fullmatch(r"[A-Za-z0-9_.-]+", name)})
    if names:
        pulled = subprocess.run([DVC, "exp", "pull", "-f", REMOTE, *names], cwd=repo, capture_output=True, text=True)
        if pulled.returncode:
            raise StoreError(f"dvc exp pull failed:\n{pulled.stdout}{pulled.stderr}")
    rows = experiments(repo, set(names))  # the class's, not the instructor's own tries
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
    parser.add_argument("command", choices=["serve", "stop", "join", "leaderboard"])
    parser.add_argument("--class-dir", type=Path, default=Path(os.environ.get("CLASS") or DEFAULT_CLASS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8333)
    parser.add_argument("--student", default=os.environ.get("STUDENT") or None)
    parser.add_argument("--unsandboxed", action="store_true",
                        help="leaderboard: reproduce students' experiments as you, outside the sandbox")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.class_dir, args.host, args.port)
            print("Students, in their clone of the course or workspace:\n"
                  + "".join(f"    {line}\n" for line in hints(args.class_dir))
                  + f"You, in your clone: make class-join CLASS={args.class_dir.resolve()} && git push {REMOTE} main"
                    f" && dvc push; later: make leaderboard CLASS={args.class_dir.resolve()}")
        elif args.command == "stop":
            stop(args.class_dir)
        elif args.command == "join":
            join(Path.cwd(), args.class_dir, args.student)
        else:
            leaderboard(Path.cwd(), Path.cwd() / "leaderboard.html", sandboxed=not args.unsandboxed)
    except (StoreError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"✗ {error}{(': ' + detail.strip()) if detail else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
