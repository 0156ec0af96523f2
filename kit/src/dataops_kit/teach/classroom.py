"""The class as one system: an S3 object store and a git remote that the
instructor serves, students' experiments shared through both, a leaderboard.

    make class-remote [CLASS=../dataops-class] [CLASS_HOST=127.0.0.1] [CLASS_PORT=8333]
    make class-remote-stop
    make class-join STUDENT=ada       # in a student's clone: remotes, credentials in .dvc/config.local
    make leaderboard                  # the instructor: fetch every experiment, rank them

The store is SeaweedFS (``weed server -s3``), pinned in requirements-class.txt
with dvc-s3; ``make class-remote`` installs both into the venv, so the
student's ``make`` stays as it is. CLASS holds everything: the store's data,
the class git remote (class.git, a bare repository), the store's state
(ports, process id) and its credentials (credentials.json, readable by its
owner only). Credentials reach a clone only through .dvc/config.local, which
git never tracks.
"""

import argparse
import html
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from dataops_kit.facts import YAMLError, free_port, git_show, locked_metrics, read_yaml, workspace

DEFAULT_CLASS = workspace().parent / "dataops-class"


class StoreError(Exception):
    """The class store or a student's link to it failed: the message says what to do."""
BUCKET = "class"
REMOTE = "class"  # the name of both remotes in a clone: git's and DVC's
WEED = Path(sys.executable).parent / "weed"
DVC = str(Path(sys.executable).parent / "dvc")  # the venv's (dataops_kit.install), activated or not
# Every port weed server listens on, each set: its defaults (8181 and 9101 too)
# would collide with a second store on the same machine.
PORTS = {"s3": "s3.port", "s3.grpc": "s3.port.grpc", "s3.iceberg": "s3.port.iceberg", "s3.lance": "s3.port.lance",
         "master": "master.port", "master.grpc": "master.port.grpc", "volume": "volume.port",
         "volume.grpc": "volume.port.grpc", "filer": "filer.port", "filer.grpc": "filer.port.grpc"}


def _state(folder: Path) -> dict:
    path = folder / "store.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, TypeError):
        return False
    return True


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True  # 403 without credentials: the S3 API is up
    except OSError:
        return False
    return True


def credentials(folder: Path) -> dict:
    path = folder / "credentials.json"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"access_key_id": "DATAOPS" + secrets.token_hex(6).upper(),
                                    "secret_access_key": secrets.token_urlsafe(30)}) + "\n")
    return json.loads(path.read_text())


def serve(folder: Path, host: str = "127.0.0.1", port: int = 8333, say=print, timeout=90) -> dict:
    """Start the store (if it is not running) and the class git remote; return the store's state."""
    folder = folder.resolve()
    git = folder / "class.git"
    if not git.exists():
        subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(git)], check=True)
    state = _state(folder)
    if state and _alive(state.get("pid")) and _answers(state["endpoint"]):
        say(f"The class store is already running: {state['endpoint']}")
        return state
    if not WEED.exists():
        raise StoreError(f"no SeaweedFS in this venv ({WEED}): make class-remote installs it")
    keys = credentials(folder)
    identities = folder / "s3.json"
    identities.touch(mode=0o600)
    identities.write_text(json.dumps({"identities": [{
        "name": "class", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        "credentials": [{"accessKey": keys["access_key_id"], "secretKey": keys["secret_access_key"]}]}]}))
    (folder / "store").mkdir(parents=True, exist_ok=True)
    # The same ports after a restart, so every clone's remote still points at the store.
    # Fresh ones are free when picked, but another program can take one before the
    # store listens on it (weed then exits): pick others, up to three times.
    # One master, so no peer to wait for: a restart (which resumes the master's raft
    # state) elects it after 2 s, not the default 10 s (a store back in 5 s, not 19).
    for attempt in range(3):
        ports = state.get("ports") or {name: free_port(host) for name in PORTS}
        ports["s3"] = state.get("ports", {}).get("s3", port)
        command = [str(WEED), "server", f"-dir={folder / 'store'}", f"-ip={host}", f"-ip.bind={host}",
                   "-s3", f"-s3.config={identities}", "-s3.autoCreateBucket", "-volume.max=0",
                   "-master.electionTimeout=2s",
                   *[f"-{PORTS[name]}={number}" for name, number in ports.items()]]
        with open(folder / "store.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        endpoint = f"http://{host}:{ports['s3']}"
        started = {"pid": process.pid, "endpoint": endpoint, "ports": ports, "bucket": BUCKET}
        (folder / "store.json").write_text(json.dumps(started, indent=1) + "\n")
        began = time.monotonic()
        while not _answers(endpoint) and process.poll() is None and time.monotonic() - began < timeout:
            time.sleep(0.3)
        if _answers(endpoint):
            break
        exited = process.poll() is not None
        stop(folder, say=lambda _: None)
        if not exited or state.get("ports") or attempt == 2:
            raise StoreError(f"the store did not start; its log: {folder / 'store.log'}")
    state = started
    _bucket(state, keys)
    say(f"The class store is up at {endpoint} (S3, bucket {BUCKET!r}), after {time.monotonic() - began:.1f} s;"
        f" the class git remote is {git}.")
    return state


def _s3(state: dict, keys: dict):
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=state["endpoint"], region_name="us-east-1",
        aws_access_key_id=keys["access_key_id"], aws_secret_access_key=keys["secret_access_key"])


def _bucket(state: dict, keys: dict, tries=60) -> None:
    """Make the bucket; the filer behind the S3 port may need a few more seconds."""
    client = _s3(state, keys)
    for attempt in range(tries):
        try:
            client.create_bucket(Bucket=state["bucket"])
            return
        except client.exceptions.BucketAlreadyOwnedByYou:
            return
        except Exception:  # noqa: BLE001 - the store is still starting: any error, try again
            if attempt == tries - 1:
                raise
            time.sleep(0.5)


def stop(folder: Path, say=print) -> None:
    """Stop the store: SIGTERM, then SIGKILL after 5 s (weed may ignore the first)."""
    state = _state(folder.resolve())
    pid = state.get("pid")
    if not _alive(pid):
        say("The class store is not running.")
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.1)
        if not _alive(pid):
            break
    say("The class store is stopped; its data stays in " + str(folder / "store"))


def join(repo: Path, folder: Path, say=print) -> None:
    """Point a clone at the class: git remote `class`, DVC remote `class` with
    the credentials in .dvc/config.local (never tracked)."""
    folder, state = folder.resolve(), _state(folder.resolve())
    if not state:
        raise StoreError(f"no class store in {folder}: the instructor starts it with make class-remote")
    keys = credentials(folder)

    def run(*args):
        subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True)
    if REMOTE in subprocess.run(["git", "remote"], cwd=repo, capture_output=True, text=True).stdout.split():
        run("git", "remote", "set-url", REMOTE, str(folder / "class.git"))
    else:
        run("git", "remote", "add", REMOTE, str(folder / "class.git"))
    run(DVC, "remote", "add", "--local", "--force", REMOTE, f"s3://{state['bucket']}/dvc")
    # Written through DVC's own config API, never as command arguments: a secret in argv is
    # visible to every user of the machine (ps), and one that starts with "-" reads as an option.
    from dvc.config import Config

    local = repo / ".dvc" / "config.local"
    local.touch(mode=0o600)
    local.chmod(0o600)
    with Config(dvc_dir=str(repo / ".dvc")).edit("local") as config:
        config["remote"][REMOTE].update({"endpointurl": state["endpoint"], **keys})
    say(f"Joined the class: git remote {REMOTE!r} = {folder / 'class.git'}; "
        f"DVC remote {REMOTE!r} = s3://{state['bucket']}/dvc at {state['endpoint']} (credentials in .dvc/config.local)")


def _flat(tree: dict, prefix="") -> dict:
    flat = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def experiments(repo: Path, names=None) -> list:
    """The clone's experiments (those NAMES, if given): name, student, params
    changed from its baseline, metrics."""
    def show(rev, path):
        try:
            data = read_yaml(git_show(repo, rev, path) or "")
        except (YAMLError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=repo,
                          capture_output=True, text=True).stdout.split()
    rows = []
    for ref in refs:
        match = re.fullmatch(r"refs/exps/(\w\w)/(\w+)/(.+)", ref)
        if not match:
            continue
        baseline, name = match.group(1) + match.group(2), match.group(3)
        if names is not None and name not in names:
            continue
        before, after = _flat(show(baseline, "params.yaml")), _flat(show(ref, "params.yaml"))
        changed = {key: value for key, value in after.items() if before.get(key) != value}
        rows.append({"student": name.split("-")[0], "experiment": name, "changed": changed,
                     "metrics": locked_metrics(repo, show(ref, "dvc.lock"))})
    return sorted(rows, key=lambda row: (-row["metrics"].get("accuracy", -1), row["experiment"]))


def leaderboard(repo: Path, html_path: Path, say=print) -> list:
    """Fetch every experiment pushed to the class remotes, rank by test accuracy."""
    listed = subprocess.run([DVC, "exp", "list", REMOTE, "--all-commits", "--name-only"], cwd=repo,
                            capture_output=True, text=True)
    names = sorted(set(listed.stdout.split()))
    if names:
        pulled = subprocess.run([DVC, "exp", "pull", "-r", REMOTE, "-f", REMOTE, *names], cwd=repo,
                                capture_output=True, text=True)
        if pulled.returncode:
            raise StoreError(f"dvc exp pull failed:\n{pulled.stdout}{pulled.stderr}")
    rows = experiments(repo, set(names))  # the class's, not the instructor's own tries
    header = f"{'#':>3}  {'student':<12} {'experiment':<24} {'accuracy':>8} {'f1_macro':>8}  changed"
    say(header)
    for rank, row in enumerate(rows, 1):
        changed = ", ".join(f"{k}={v}" for k, v in sorted(row["changed"].items())) or "(nothing)"
        say(f"{rank:>3}  {row['student']:<12} {row['experiment']:<24} "
            f"{row['metrics'].get('accuracy', '-'):>8} {row['metrics'].get('f1_macro', '-'):>8}  {changed}")
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in (
            rank, row["student"], row["experiment"], row["metrics"].get("accuracy", "-"),
            row["metrics"].get("f1_macro", "-"),
            ", ".join(f"{k}={v}" for k, v in sorted(row["changed"].items())))) + "</tr>\n"
        for rank, row in enumerate(rows, 1))
    html_path.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>\n"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        "<title>Class leaderboard</title><style>body{font-family:sans-serif}td,th{padding:2px 10px;"
        "text-align:left}tr:nth-child(even){background:#f3f3f3}</style></head><body>\n"
        f"<h1>Class leaderboard</h1><p>{len(rows)} experiments, ranked by test accuracy.</p>\n<table>\n"
        "<tr><th>#</th><th>student</th><th>experiment</th><th>accuracy</th><th>f1_macro</th><th>changed</th></tr>\n"
        f"{cells}</table></body></html>\n")
    say(f"{len(rows)} experiments; the page: {html_path}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataops_kit.teach.classroom", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["serve", "stop", "join", "leaderboard"])
    parser.add_argument("--class-dir", type=Path, default=Path(os.environ.get("CLASS") or DEFAULT_CLASS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8333)
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            serve(args.class_dir, args.host, args.port)
            print("Students, in their clone of the course or workspace: make class-join "
                  f"CLASS={args.class_dir.resolve()}, then dvc exp run -n <name>-<idea> ..., "
                  f"dvc exp push {REMOTE} <name>-<idea>")
        elif args.command == "stop":
            stop(args.class_dir)
        elif args.command == "join":
            join(Path.cwd(), args.class_dir)
        else:
            leaderboard(Path.cwd(), Path.cwd() / "leaderboard.html")
    except (StoreError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"✗ {error}{(': ' + detail.strip()) if detail else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
