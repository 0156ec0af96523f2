"""A class of simulated students against one store: `make class-bench`.

Loopback only, bounded, and it stops the store it started. Each student has
their own clone of the class git remote, pulls the data from the S3 store,
runs one experiment of their own (process.random_state, so every student's
split, model and metrics differ) and pushes it with `dvc exp push`; the
pushes run all at once. Then the instructor pulls every experiment, and
every object is checked: in the instructor's cache, and in the store itself,
its bytes must have the md5 it is named by, and every output each
experiment's dvc.lock names must be there.

Every student joins with their own key (make class-join STUDENT=sNN, in a
home of their own), so every push goes through the gate's checks: the
signature, add-only, each object's md5, and the ref named after its pusher.

In the second run (the fault), the store (gate and SeaweedFS) is killed (SIGKILL) at a fixed
point: after the first half of the class has pushed, before the second half
starts. So exactly the second half's pushes fail, each with a message; they
must succeed when run again once the store is back, and leave no partial
object in the store.

    python kit/bench/class_bench.py --students 40     # as is, then with the fault; rewrites the results page
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the workspace (this file is kit/bench/)

from dataops_kit.teach import classroom  # noqa: E402
from dataops_kit.facts import free_port, md5, outputs, read_yaml, shell_env, stored  # noqa: E402
from dataops_kit.install import install_workspace  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def sh(args, cwd, check=True, home=None):
    # A student's shell: none of the variables a test process may carry (nbval's sandbox root),
    # and a home of their own (their key, their git credentials), as on their own laptop.
    env = {**shell_env(),
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home or cwd.parent / "home" / cwd.name),
           "GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.invalid",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.invalid"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            shell=isinstance(args, str))
    if check and result.returncode:
        raise RuntimeError(f"{args} in {cwd}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def clone(source, destination, class_dir, student=None):
    sh(["git", "clone", "-q", str(source), str(destination)], cwd=destination.parent,
       home=destination.parent / "home" / destination.name)  # the student's home, inside the bench's folder
    (destination / ".venv").symlink_to(VENV_BIN.parent)
    install_workspace(destination)
    sh([str(VENV_BIN / "python"), "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(class_dir),
        *(["--student", student] if student else [])], cwd=destination)


def outs(lock_text: str) -> dict:
    return outputs(read_yaml(lock_text))


def _students(folder: Path, class_dir: Path, names: list, figures: dict, workers) -> Path:
    """The instructor's clone pushed to the class, then each student's clone, pull and experiment."""
    # The instructor: this workspace's committed history, its reproduced data and model.
    instructor = folder / "instructor"
    clone(REPO, instructor, class_dir)
    shutil.copytree(REPO / ".dvc" / "cache" / "files", instructor / ".dvc" / "cache" / "files")
    sh("dvc checkout -q && git push -q class HEAD:main && dvc push -q", cwd=instructor)
    began = time.perf_counter()
    for name in names:
        clone(class_dir / "class.git", folder / name.split("-")[0], class_dir, student=name.split("-")[0])
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda name: sh("dvc pull -q", cwd=folder / name.split("-")[0]), names))
    figures["clone and pull, s"] = time.perf_counter() - began
    began = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        list(pool.map(lambda name: sh(f"dvc exp run -q -n {name} -S process.random_state={name[-3:]}",
                                      cwd=folder / name.split("-")[0]), names))
    figures["experiments, s"] = time.perf_counter() - began
    return instructor


def _push(folder: Path, class_dir: Path, names: list, figures: dict, fault: bool, say) -> None:
    """Every student pushes at once; with FAULT, the store is killed once the first half has pushed."""
    def push(name):  # as make class-remote prints it
        return sh(f"dvc exp push {classroom.REMOTE} {name}", cwd=folder / name.split("-")[0], check=False)

    began = time.perf_counter()
    waves = [names[:len(names) // 2], names[len(names) // 2:]] if fault else [names]
    results = {}
    for wave, pushing in enumerate(waves):
        if wave == 1:  # the fixed point: the first half has pushed, the second has not begun
            pid = classroom._private(class_dir)["pid"]
            os.killpg(pid, signal.SIGKILL)
            figures["fault: killed after, s"] = time.perf_counter() - began
            say(f"  fault: killed the store (pid {pid}) after {len(waves[0])} pushes")
        with concurrent.futures.ThreadPoolExecutor(len(pushing)) as pool:
            results.update(zip(pushing, pool.map(push, pushing)))
    if fault:
        restarted = time.perf_counter()
        classroom.serve(class_dir, say=say)
        figures["fault: store back after, s"] = time.perf_counter() - restarted
    failed = [name for name, result in results.items() if result.returncode]
    figures["push wall, s"] = time.perf_counter() - began - figures.get("fault: store back after, s", 0)
    figures["pushes failed"] = len(failed)
    # DVC's messages, one of each kind (object names, URLs and counts left out).
    figures["failure messages"] = sorted({
        re.sub(r"HTTPConnectionPool.*?(Connection refused).*", r"... \1",
               re.sub(r"[0-9a-f]{32}", "<md5>", re.sub(r"\d+ files", "N files", line)))
        for name in failed for line in (results[name].stdout + results[name].stderr).splitlines()
        if line.startswith("ERROR")})
    figures["retries failed"] = sum(bool(push(name).returncode) for name in failed)


def _pull_and_check(instructor: Path, class_dir: Path, names: list, figures: dict) -> None:
    """The instructor pulls every experiment and checks every object, in the cache and in the store."""
    began = time.perf_counter()
    sh(["dvc", "exp", "pull", classroom.REMOTE, *names], cwd=instructor)
    figures["instructor pull, s"] = time.perf_counter() - began
    expected, mismatches, missing = set(), 0, 0
    refs = {ref.rsplit("/", 1)[1]: ref for ref in
            sh("git for-each-ref --format='%(refname)' refs/exps", cwd=instructor).stdout.split()}
    for name in names:
        expected |= set(outs(sh(["git", "show", f"{refs[name]}:dvc.lock"], cwd=instructor).stdout).values())
    for digest in expected:
        path = stored(instructor / ".dvc" / "cache", digest)
        missing += not path.exists()
        mismatches += path.exists() and md5(path) != digest
    figures["objects the experiments name"] = len(expected)
    figures["missing after pull"] = missing
    figures["md5 mismatches in the instructor's cache"] = mismatches
    figures["partial or damaged objects in the store"], count, size = store_audit(class_dir)
    figures["objects in the store"], figures["MB in the store"] = count, size / 1e6
    figures["experiments on the class remote"] = len(
        sh("dvc exp list class --all-commits --name-only", cwd=instructor).stdout.split())


class Hog(threading.Thread):
    """One misbehaving client, from a loopback address of its own: as many connections to the gate as
    it will hold, each sending half a request's headers, each opened again as soon as the gate ends it."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.done, self.held, self.peak, self.opened = port, threading.Event(), [], 0, 0

    @staticmethod
    def _ended(connection) -> bool:
        try:
            ended = connection.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            ended = True
        if ended:
            connection.close()
        return ended

    def run(self):
        while not self.done.is_set():
            self.held = [connection for connection in self.held if not self._ended(connection)]
            try:
                connection = socket.create_connection(("127.0.0.1", self.port), timeout=1,
                                                      source_address=("127.0.0.66", 0))
                connection.sendall(b"GET /git/class.git/info/refs HTTP/1.1\r\nHost: class\r\n")
                connection.setblocking(False)
                self.held.append(connection)
                self.opened += 1
            except OSError:
                pass
            self.peak = max(self.peak, len(self.held))
            time.sleep(0.002)  # an attacker on this machine's cores would otherwise only measure itself


def simulate(students: int, folder: Path, fault: bool = False, workers: int = None, say=print,
             keep_running: bool = False, hostile: bool = False) -> dict:
    class_dir, figures = folder / "class", {"students": students, "fault": fault}
    port = free_port("127.0.0.1")
    classroom.serve(class_dir, port=port, say=say)
    hog = Hog(port) if hostile else None
    try:
        names = [f"s{i:02d}-seed{100 + i}" for i in range(students)]
        instructor = _students(folder, class_dir, names, figures, workers)
        if hog:
            hog.start()
        _push(folder, class_dir, names, figures, fault, say)
        _pull_and_check(instructor, class_dir, names, figures)
        figures["push throughput, experiments/s"] = students / figures["push wall, s"]
        if hog:
            figures["hostile client: connections opened / held at most"] = f"{hog.opened} / {hog.peak}"
        return figures
    finally:
        if hog:
            hog.done.set()
        if not keep_running:
            classroom.stop(class_dir, say=lambda _: None)


def store_audit(class_dir: Path):
    """Read back every DVC object in the store: (bad, count, bytes)."""
    state, keys = classroom._state(class_dir), classroom.admin_key(class_dir)
    client = classroom._s3(state, keys)
    bad = count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=state["bucket"], Prefix="dvc/files/md5/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=state["bucket"], Key=item["Key"])["Body"].read()
            count, size = count + 1, size + len(body)
            bad += hashlib.md5(body).hexdigest() != "".join(item["Key"].split("/")[-2:])
    return bad, count, size


RESULTS = Path(__file__).with_name("class-results.json")
HOSTILE = Path(__file__).with_name("class-hostile.json")  # --hostile: quiet, then one client hogging the gate
PAGE = REPO / "docs" / "instructors" / "class-bench-results.md"
CORRECT = ("retries failed", "missing after pull", "md5 mismatches in the instructor's cache",
           "partial or damaged objects in the store")


def render(results: dict) -> str:
    """The instructors' page of figures, from class-results.json alone: none typed by hand."""
    runs = results["runs"]
    keys = [key for key in runs[0] if key not in ("students", "fault")]
    keys += [key for key in runs[1] if key not in keys and key not in ("students", "fault")]
    lines = ["# The class store under load: results", "",
             f"Written by `make class-bench` from `kit/bench/class-results.json`; do not edit. {results['machine']}. "
             f"{runs[0]['students']} simulated students, each with their own key and home, on this one machine "
             "(the store and every student's `dvc` share its cores). The fault: the store (gate and SeaweedFS) "
             "is killed with SIGKILL after the first half of the class has pushed and before the second half "
             "starts, and started again after the second half's pushes have failed; those are pushed again.", "",
             "| figure | as is | store killed |", "|---|---:|---:|"]

    def cell(value):
        if isinstance(value, float):
            return f"{value:.1f}"
        if isinstance(value, list):
            return "<br>".join(f"`{item}`" for item in value) or "–"
        return "–" if value is None else str(value)
    lines += [f"| {key} | {cell(runs[0].get(key))} | {cell(runs[1].get(key))} |" for key in keys]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--json", type=Path, default=RESULTS,
                        help="where to write the figures (the default also rewrites the instructors' results page)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument("--hostile", action="store_true",
                        help="quiet, then with one client holding all the connections it can (class-hostile.json)")
    args = parser.parse_args()
    runs = []
    for fault, hostile in ((False, False), (False, True)) if args.hostile else ((False, False), (True, False)):
        folder = Path(tempfile.mkdtemp(prefix="class-bench-"))
        try:
            runs.append(simulate(args.students, folder, fault, hostile=hostile))
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        width = max(map(len, runs[-1]))
        for key, value in runs[-1].items():
            print(f"{key:<{width}}  {value:.1f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    results = {"machine": f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}", "runs": runs}
    target = HOSTILE if args.hostile and args.json == RESULTS else args.json
    target.write_text(json.dumps(results, indent=1, default=str) + "\n")
    if target == RESULTS:
        PAGE.write_text(render(results))
    return 0 if all(run[key] == 0 for run in runs for key in CORRECT) else 1


if __name__ == "__main__":
    sys.exit(main())
