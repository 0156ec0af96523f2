"""Where a stage's seconds go: its wall time, and the imports that take the most of it.

    .venv/bin/python kit/bench/profile.py            # in a temporary clone of this workspace
    .venv/bin/python kit/bench/profile.py --root DIR # in a reproduced workspace (rewrites its outputs, same bytes)
    .venv/bin/python kit/bench/profile.py --pipeline # a whole `dvc repro --force`

Runs each stage as `dvc repro` does (`dataops-run`, which starts
the stage's kernel) with PYTHONPROFILEIMPORTTIME=1, which both the runner and
its kernel inherit, and prints, per stage, the wall time and the ten
packages whose modules took longest to import (each module's own time,
summed by package; runner and kernel together, so a package both import
counts twice). Median of --repeat runs.

With --pipeline it profiles a whole `dvc repro --force` instead (DVC, the
runners and the kernels).
"""

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the workspace (this file is kit/bench/)
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_clone, run, workspace_env  # noqa: E402

LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


def profile(root: Path, command: list, repeat: int, env=None):
    env = {**os.environ, **workspace_env(root), "PYTHONPROFILEIMPORTTIME": "1", **(env or {})}
    walls, imports = [], collections.defaultdict(list)
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - started)
        if result.returncode:
            raise SystemExit(f"{command} failed:\n{result.stdout}\n{result.stderr[-2000:]}")
        totals = collections.Counter()
        for line in result.stderr.splitlines():
            found = LINE.match(line)
            if found:  # each module's own time, summed by its package
                totals[found.group(4).split(".")[0]] += int(found.group(1))
        for name, micros in totals.items():
            imports[name].append(micros / 1e6)
    top = sorted(((statistics.median(v), k) for k, v in imports.items()), reverse=True)[:10]
    return statistics.median(walls), top


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="a reproduced workspace to profile in")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pipeline", action="store_true", help="profile a whole `dvc repro --force`")
    args = parser.parse_args()
    work = None
    if args.root:
        root = args.root.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="dataops-profile-"))
        root = make_clone(work / "ws")
        run("dvc repro", cwd=root)
    try:
        names = ["dvc repro --force"] if args.pipeline else \
            [notebook.stem for notebook in sorted((root / "notebooks").glob("0*.ipynb"))]
        for name in names:
            command = name.split() if args.pipeline else \
                [str(Path(sys.executable).parent / "dataops-run"), f"notebooks/{name}.ipynb"]
            wall, top = profile(root, command, args.repeat)
            print(f"\n{name}: {wall:.2f} s wall; import time by package:")
            for seconds, package in top:
                print(f"  {seconds:6.3f} s  {package}")
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
