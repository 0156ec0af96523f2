"""A class's submissions graded by `make grades`: python kit/bench/grades_bench.py --students 40

Loopback only, and it stops the store it started. A class store, the course
built once, exercise 1 solved once and committed by every student anew (the
same answer, a commit of each student's own, so each is graded afresh),
submitted through the gate with each student's own key and home. Then
`make grades` twice: the first grades every submission (a fresh clone, a
pull, the reproduction in the sandbox), the second finds nothing new.
Writes kit/bench/grades-results.json: wall and CPU seconds of each run, and per
submission. The CPU seconds are the instructor's own processes', outside the
sandbox: bwrap does not hand its processes' CPU time up to the process that
waits for it, so the grading inside is in the wall time only.
"""

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the workspace (this file is kit/bench/)

from dataops_kit.facts import free_port  # noqa: E402
from dataops_kit.teach import classroom  # noqa: E402

RESULTS = Path(__file__).with_name("grades-results.json")
WORSE = "sed -i '/logistic_regression:/,/max_iter/ s/C: [0-9.e-]*/C: 0.0001/' params.yaml"  # exercise 1's answer


def sh(args, cwd: Path, home: Path = None):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_TERMINAL_PROMPT": "0", **({"HOME": str(home)} if home else {})}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(args, str))
    if result.returncode:
        raise SystemExit(f"{args!r} failed in {cwd}:\n{result.stdout}{result.stderr}")
    return result.stdout


def home_of(folder: Path, name: str) -> Path:
    home = folder / "homes" / name
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(f"[user]\n\tname = {name}\n\temail = {name}@example.invalid\n")
    return home


def instructor_clone(folder: Path, class_dir: Path) -> Path:
    clone = folder / "instructor"
    sh(["git", "clone", "-q", str(REPO), str(clone)], folder)
    (clone / ".venv").symlink_to(Path(sys.prefix))
    sh([sys.executable, "-c", "import pathlib, dataops_kit.install as i; i.install_workspace(pathlib.Path('.'))"], clone)
    shutil.copytree(REPO / ".dvc" / "cache" / "files", clone / ".dvc" / "cache" / "files")
    sh("dvc checkout -q", clone)
    sh([sys.executable, "-m", "dataops_kit.teach.classroom", "join", "--class-dir", str(class_dir)], clone,
       home_of(folder, "instructor"))
    return clone


def submissions(folder: Path, class_dir: Path, course: Path, students: int, instructor: Path) -> None:
    solved = folder / "solved"
    sh(["make", "--no-print-directory", "exercise", "1", f"COURSE={course}", f"EXERCISES={solved}"], instructor)
    scene = next(solved.glob("01-*")) / "repo"
    sh(f"{WORSE} && dvc repro -q && git commit -qam 'Exercise 1'", scene, home_of(folder, "solver"))
    for i in range(students):
        name, mine = f"s{i:02d}", folder / "students" / f"s{i:02d}"
        shutil.copytree(solved, mine, symlinks=True)
        repo, home = next(mine.glob("01-*")) / "repo", home_of(folder, f"s{i:02d}")
        sh(f"git commit -q --amend --reset-author -m 'Exercise 1, by {name}'", repo, home)
        sh([sys.executable, "-m", "dataops_kit.teach.gradebook", "submit", "1", "--class-dir", str(class_dir),
            "--student", name, "--exercises", str(mine)], repo, home)


def timed_grades(instructor: Path, class_dir: Path, course: Path, home: Path) -> tuple:
    before, began = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = sh(["make", "--no-print-directory", "grades", f"CLASS={class_dir}", f"COURSE={course}"], instructor, home)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - began, cpu, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--course", type=Path, help="a built course (default: build one, about 75 s)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="grades-bench-"))
    class_dir = folder / "class"
    classroom.serve(class_dir, port=free_port("127.0.0.1"), say=lambda _: None)
    try:
        instructor = instructor_clone(folder, class_dir)
        course = args.course or folder / "course"
        if not args.course:
            sh(["make", "--no-print-directory", "course", f"COURSE={course}"], instructor)
        submissions(folder, class_dir, course, args.students, instructor)
        home = folder / "homes" / "instructor"
        first, first_cpu, _ = timed_grades(instructor, class_dir, course, home)
        second, second_cpu, _ = timed_grades(instructor, class_dir, course, home)
        with open(class_dir / "grades" / "grades.csv", newline="") as file:
            scores = Counter(row["Exercise 1"] for row in csv.DictReader(file))
        figures = {"submissions": args.students, "first make grades, wall s": first,
                   "first make grades, CPU s": first_cpu, "per submission, wall s": first / args.students,
                   "per submission, CPU s": first_cpu / args.students, "second make grades (nothing new), wall s": second,
                   "second make grades, CPU s": second_cpu, "scores": dict(scores), "cpus": os.cpu_count()}
        print(json.dumps(figures, indent=1))
        RESULTS.write_text(json.dumps(figures, indent=1) + "\n")
    finally:
        classroom.stop(class_dir, say=lambda _: None)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
