"""Helpers that give each test a real workspace: a git clone of this
repository (with any uncommitted edits carried over and committed), using this
checkout's venv, with real git, DVC, papermill and Jupyter kernels."""

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "tests" / "artifacts"  # screenshots the browser tests keep
CHROMIUM = Path("/usr/bin/chromium")

# The configuration the tests' expectations are written for: params.yaml as
# committed. A clone gets it, byte for byte, whatever the student has edited
# in their working tree, so `make test` passes on an edited workspace too.
def _committed_params() -> str:
    return subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


COMMITTED_PARAMS = _committed_params()
DEFAULTS = yaml.safe_load(COMMITTED_PARAMS)


def run(cmd, cwd, check=True, env=None, **kwargs):
    """Run a shell command the way a student types it, with the venv on PATH."""
    # Arguments given to this pytest (PYTEST_ADDOPTS="-k ...") are not for a pytest the test runs.
    full_env = {**{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}, **workspace_env(cwd), **(env or {})}
    result = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), env=full_env,
                            capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def workspace_env(root):
    """A student's shell in the workspace ROOT: the venv first on PATH (each clone's kernel and runner import
    its own src/)."""
    return {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "JUPYTER_PLATFORM_DIRS": "1",
        "DATAOPS_ROOT": "",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def locked_md5(root, out, lock_text=None) -> str:
    """The md5 that dvc.lock records for an output path."""
    lock = yaml.safe_load(lock_text if lock_text is not None else (Path(root) / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for entry in stage.get("outs", []):
            if entry["path"] == out:
                return entry["md5"]
    raise KeyError(out)


def set_param(root, dotted, value):
    """Edit params.yaml as a student would: change one value (given as YAML
    text, so "1.5", "abc" and "true" mean what they mean there), keep the comments."""
    from ruamel.yaml import YAML

    path, rt = Path(root) / "params.yaml", YAML()
    data = rt.load(path)
    *parents, key = dotted.split(".")
    node = data
    for name in parents:
        node = node[name]
    node[key] = yaml.safe_load(str(value))
    rt.dump(data, path)


def make_clone(destination: Path, share_venv=True) -> Path:
    """A git clone of this repository at its working-tree state. With
    share_venv, it is set up as `make` would set it up, using this checkout's venv."""
    run(["git", "clone", "--quiet", str(REPO), str(destination)], cwd=REPO.parent)
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO).stdout
    for name in filter(None, files.split("\0")):
        source, target = REPO / name, destination / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif target.exists():
            target.unlink()
    params = destination / "params.yaml"
    if params.read_text() != COMMITTED_PARAMS:  # the student's edits stay in their workspace
        params.write_text(COMMITTED_PARAMS)
    if share_venv:
        (destination / ".venv").symlink_to(VENV_BIN.parent)
        run([sys.executable, "-c", "from dataops_kit.install import install_workspace as f; import pathlib; "
             f"f(pathlib.Path({str(destination)!r}))"], cwd=destination)
    run("git add -A && git -c user.name=test -c user.email=test@example.invalid "
        "commit --quiet --allow-empty -m 'workspace under test'", cwd=destination)
    return destination


def edit_cell(root, notebook, old, new):
    """Change one cell's code in notebooks/NOTEBOOK, as a student would in an editor that saves."""
    from dataops_kit.teach.exercises import edit_cell as edit

    edit(Path(root) / "notebooks" / notebook, old, new)


def prepend_to_cell(notebook: Path, code: str) -> None:
    """CODE at the top of NOTEBOOK's second code cell (the first after the parameters), as a classmate would."""
    data = json.loads(notebook.read_text())
    cell = [c for c in data["cells"] if c["cell_type"] == "code"][1]
    cell["source"] = code + "\n" + "".join(cell["source"])
    notebook.write_text(json.dumps(data, indent=1) + "\n")


def closed_by_peer(connection) -> bool:
    """The other end closed CONNECTION (waits for it, up to the connection's timeout)."""
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def new_machine_env(extra=None):
    """Only what a new machine has: no venv on PATH, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DATAOPS_ROOT")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    return {**env, **(extra or {})}


def kernels_in(root, wait=0.0):
    """Kernel processes still running in this workspace, after waiting up to `wait` seconds for them to go."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for process in psutil.process_iter(["cmdline", "cwd"]):
            command = process.info["cmdline"] or []
            # ipykernel's launcher, or the preloaded kernel (dataops_kit.runner.kernel) and its forks.
            if ({"dataops_kit.runner.kernel", "ipykernel_launcher"} & set(command)
                    or any("kernelapp" in word for word in command)) and \
                    str(process.info["cwd"] or "").startswith(str(root)):
                found.append(process)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def save_through_jupyter(url, token, path, content):
    """PUT a notebook through a Jupyter server's contents API, as JupyterLab's Save does."""
    body = json.dumps({"type": "notebook", "format": "json", "content": content}).encode()
    request = urllib.request.Request(f"{url}/api/contents/{path}?token={token}", data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30)


def md_rows(table: str) -> list[list[str]]:
    """The cells of a markdown table, stripped of padding."""
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]


def serve(folder):
    """A static server on 127.0.0.1 for one folder; returns its address and a stop function."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown
