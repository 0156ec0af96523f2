"""A class of simulated students against one store: `make class-bench`.

Loopback only, bounded, and it stops the store it started. Each student has
their own clone of the class git remote, pulls the data from the S3 store,
runs one experiment of their own (process.random_state, so every student's
split, model and metrics differ) and pushes it with `dvc exp push`; the
pushes run all at once. Then the instructor pulls every experiment, and
every object is checked: in the instructor's cache, and in the store itself,
its bytes must have the md5 it is named by, and every output each
experiment's dvc.lock names must be there.

With --fault, the store is killed (SIGKILL) in the middle of the pushes
and started again; the pushes it broke must fail with a message, succeed
when run again, and leave no partial object in the store.

    python kit/bench/class_bench.py --students 40 [--fault] [--json out.json]
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the workspace (this file is kit/bench/)

from dataops_kit.teach import classroom  # noqa: E402
from dataops_kit.facts import free_port, md5, outputs, read_yaml, stored  # noqa: E402
from dataops_kit.install import install_workspace  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def sh(args, cwd, check=True):
    # A student's shell: none of the variables a test process may carry (nbval's sandbox root).
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATAOPS_ROOT", "DATAOPS_STAGE")},
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.invalid",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.invalid"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            shell=isinstance(args, str))
    if check and result.returncode:
        raise RuntimeError(f"{args} in {cwd}: exit {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def clone(source, destination, class_dir):
    sh(["git", "clone", "-q", str(source), str(destination)], cwd=destination.parent)
    (destination / ".venv").symlink_to(VENV_BIN.parent)
    install_workspace(destination)
    classroom.join(destination, class_dir, say=lambda _: None)


def outs(lock_text: str) -> dict:
    return outputs(read_yaml(lock_text))


def simulate(students: int, folder: Path, fault: bool = False, workers: int = None, say=print,
             keep_running: bool = False, down_for: float = 1.0) -> dict:
    class_dir, figures = folder / "class", {"students": students, "fault": fault}
    classroom.serve(class_dir, port=free_port("127.0.0.1"), say=say)
    try:
        # The instructor: this workspace's committed history, its reproduced data and model.
        instructor = folder / "instructor"
        clone(REPO, instructor, class_dir)
        shutil.copytree(REPO / ".dvc" / "cache" / "files", instructor / ".dvc" / "cache" / "files")
        sh("dvc checkout -q && git push -q class HEAD:main && dvc push -q -r class", cwd=instructor)

        names = [f"s{i:02d}-seed{100 + i}" for i in range(students)]
        began = time.perf_counter()
        for name in names:
            clone(class_dir / "class.git", folder / name.split("-")[0], class_dir)
        with concurrent.futures.ThreadPoolExecutor(students) as pool:
            list(pool.map(lambda name: sh("dvc pull -q -r class", cwd=folder / name.split("-")[0]), names))
        figures["clone and pull, s"] = time.perf_counter() - began

        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
            list(pool.map(lambda name: sh(f"dvc exp run -q -n {name} -S process.random_state={name[-3:]}",
                                          cwd=folder / name.split("-")[0]), names))
        figures["experiments, s"] = time.perf_counter() - began

        def push(name):
            return sh(f"dvc exp push -r class class {name}", cwd=folder / name.split("-")[0], check=False)

        baseline = written(class_dir)
        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(students) as pool:
            pushing = {name: pool.submit(push, name) for name in names}
            if fault:
                # In the middle of the pushes: as soon as the first student's objects arrive.
                wait_for_first_object(class_dir, baseline, timeout=120)
                pid = classroom._state(class_dir)["pid"]
                os.killpg(pid, signal.SIGKILL)
                figures["fault: killed after, s"] = time.perf_counter() - began
                say(f"  fault: killed the store (pid {pid}) {time.perf_counter() - began:.1f} s into the pushes")
                time.sleep(down_for)
                restarted = time.perf_counter()
                classroom.serve(class_dir, say=say)
                figures["fault: store back after, s"] = time.perf_counter() - restarted
            results = {name: future.result() for name, future in pushing.items()}
        failed = [name for name, result in results.items() if result.returncode]
        figures["push wall, s"] = time.perf_counter() - began
        figures["pushes failed"] = len(failed)
        # DVC's messages, one of each kind (object names, URLs and counts left out).
        figures["failure messages"] = sorted({
            re.sub(r'"http[^"]*"', "<url>", re.sub(r"[0-9a-f]{32}", "<md5>", re.sub(r"\d+ files", "N files", line)))
            for name in failed for line in (results[name].stdout + results[name].stderr).splitlines()
            if line.startswith("ERROR")})
        retried = [push(name) for name in failed]
        figures["retries failed"] = sum(bool(result.returncode) for result in retried)

        # The instructor pulls everything, and checks every object.
        began = time.perf_counter()
        sh(["dvc", "exp", "pull", "-r", "class", "class", *names], cwd=instructor)
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
        figures["push throughput, experiments/s"] = students / figures["push wall, s"]
        figures["instructor"] = str(instructor)
        return figures
    finally:
        if not keep_running:
            classroom.stop(class_dir, say=lambda _: None)


def store_audit(class_dir: Path):
    """Read back every DVC object in the store: (bad, count, bytes)."""
    state, keys = classroom._state(class_dir), classroom.credentials(class_dir)
    client = classroom._s3(state, keys)
    bad = count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=state["bucket"], Prefix="dvc/files/md5/"):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=state["bucket"], Key=item["Key"])["Body"].read()
            count, size = count + 1, size + len(body)
            bad += hashlib.md5(body).hexdigest() != "".join(item["Key"].split("/")[-2:])
    return bad, count, size


def written(class_dir: Path) -> int:
    """Bytes in the store's volume indexes, which grow with every object it writes
    (read from disk every 10 ms: asking the store over S3 takes longer than a push)."""
    return sum(path.stat().st_size for path in (class_dir / "store").glob("*.idx"))


def wait_for_first_object(class_dir: Path, baseline: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while written(class_dir) <= baseline:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no push reached the store within {timeout} s")
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--fault", action="store_true", help="kill and restart the store during the pushes")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="class-bench-"))
    try:
        figures = simulate(args.students, folder, args.fault)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    width = max(map(len, figures))
    for key, value in figures.items():
        if key != "instructor":
            print(f"{key:<{width}}  {value:.1f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    ok = (figures["retries failed"] == 0 and figures["missing after pull"] == 0
          and figures["md5 mismatches in the instructor's cache"] == 0
          and figures["partial or damaged objects in the store"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
