"""Submissions and the gradebook.

    make submit 1 CLASS=... STUDENT=ada    # a student: python -m dataops_kit.teach.gradebook submit 1
    make grades CLASS=...                  # the instructor: python -m dataops_kit.teach.gradebook grades

A submission is a commit of an exercise's scene. ``submit`` sends its data
and model to the class store, and the commit to the class git remote as
``refs/submissions/<name>/<NN>/<UTC time>``: the gate lets a student create
those under their own name only, and never replace one, so a resubmission
is a new version. The gate's hook records when each arrived
(``class.git/submissions.log``): a deadline reads that, never a commit's
date, which the student writes.

``grades`` fetches every submission and grades the latest of each student
and exercise (the latest before ``--deadline``, if given) with the
instructor's grader, in a fresh clone of the submitted commit: its start
is the commit with the tree of the instructor's own scene's start, its
outputs are pulled from the store, and every reproduction runs in the
sandbox. It writes ``CLASS/grades/grades.csv`` (a row a student, a column
an exercise, the share of criteria met in percent), one
``CLASS/grades/feedback/<name>.md`` a student with the ✓ and ✗ lines, and
a summary. Verdicts are kept per commit and grader version, so a second
run grades only what is new, and a changed grader grades again.

The other exercises grade what a commit does not carry, and are checked
on the student's machine only (``make check N``): see ``ON_THE_STUDENTS_MACHINE``.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from dataops_kit.facts import outputs, printable, yaml_at
from dataops_kit.teach import classroom, exercises, gate, sandbox
from dataops_kit.teach.course import DEFAULT_FOLDER, CourseError, student_env

ON_THE_STUDENTS_MACHINE = {  # exercise: what it grades that a commit does not carry
    2: "the experiments (refs/exps), which a commit of main does not hold",
    3: "../previous-model.skops, a file beside the repository",
    4: "a tag on an older commit",
    5: "the failed run's notebook in reports/failed/, which nothing commits",
    6: "your DVC cache",
    7: "your DVC cache",
    8: "the remote and the classmate's clone beside the repository",
    11: "the registry's tags (which the class's gate keeps for the instructor)",
    12: "the branch under review, which a commit of main does not hold",
}
GRADED_HERE = sorted(set(exercises.EXERCISES) - set(ON_THE_STUDENTS_MACHINE))


def _git(args: list, cwd: Path, check=True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode:
        raise CourseError(f"git {' '.join(args[:2])} failed: {(result.stderr.strip().splitlines() or [''])[-1]}")
    return result.stdout.strip()


# --- a student's side --------------------------------------------------------------------------------

def submit(number: int, class_dir: Path, student: str, exercises_dir: Path, say=print) -> str:
    """Send exercise NUMBER's scene, as committed, to the class; returns the submission's ref."""
    if number in ON_THE_STUDENTS_MACHINE:
        raise CourseError(f"exercise {number} is checked on your machine, as it grades "
                          f"{ON_THE_STUDENTS_MACHINE[number]}: make check {number}")
    repo = exercises.where(number, exercises_dir)
    if exercises._recorded(repo) != number:
        raise CourseError(f"no scene of exercise {number} here or in {exercises_dir}: make exercise {number}")
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=repo).returncode
    if changed or _git(["ls-files", "--others", "--exclude-standard"], repo):
        raise CourseError("commit your work first: a submission is a commit (git status lists what is not in one)")
    name = classroom.join(repo, class_dir, student, say=lambda *_: None, default=False)
    env = student_env(exercises.WORKSPACE)
    pushed = subprocess.run(["dvc", "push", "-q", "-r", classroom.REMOTE], cwd=repo, env=env,
                            capture_output=True, text=True)
    if pushed.returncode:
        raise CourseError(f"dvc push to the class store failed: {(pushed.stderr.strip().splitlines() or [''])[-1]}")
    ref = f"refs/submissions/{name}/{number:02d}/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    sent = subprocess.run(["git", "push", "-q", classroom.REMOTE, f"HEAD:{ref}"], cwd=repo, env=env,
                          capture_output=True, text=True)
    if sent.returncode:
        refused = [line for line in sent.stderr.splitlines() if "✗" in line] or sent.stderr.strip().splitlines()
        raise CourseError(f"the class git remote refused it: {(refused or [''])[-1].strip()}")
    say(f"Submitted exercise {number} as {name}: commit {_git(['rev-parse', '--short', 'HEAD'], repo)}, {ref}. "
        f"Submit again for a new version; the latest (before any deadline) is graded.")
    return ref


# --- the instructor's side ---------------------------------------------------------------------------

def latest(repo: Path, log: Path, deadline: float = None) -> dict:
    """{(name, number): (arrived, ref, commit)}: each student's latest submission of each exercise, by
    the class's clock, before DEADLINE; only those whose ref still names the commit that arrived."""
    found = {}
    for line in (log.read_text().splitlines() if log.is_file() else []):
        try:
            arrived, ref, commit = line.split()
            arrived = float(arrived)
        except ValueError:
            continue
        match = gate.SUBMISSION.fullmatch(ref)
        if not match or (deadline is not None and arrived > deadline):
            continue
        if _git(["rev-parse", "-q", "--verify", f"{ref}^{{commit}}"], repo, check=False) != commit:
            continue
        key = (match.group(1), int(match.group(2)))
        if key not in found or arrived >= found[key][0]:
            found[key] = (arrived, ref, commit)
    return found


def reference(number: int, course: Path, folder: Path) -> Path:
    """The instructor's own scene of exercise NUMBER, set up once in FOLDER: its start's tree
    (and its branches') identify a submission's."""
    repo = exercises.folder_of(number, folder) / "repo"
    if exercises._recorded(repo) != number:
        shutil.rmtree(exercises.folder_of(number, folder), ignore_errors=True)
        exercises.start(number, course, folder, say=lambda *_: None)
    return repo


def _trees(repo: Path, rev: str) -> dict:
    """{tree: the newest commit in REV's history with that tree}."""
    found = {}
    for line in reversed(_git(["log", "--format=%H %T", rev], repo).splitlines()):
        commit, tree = line.split()
        found[tree] = commit
    return found


def _scene_of(repo: Path, number: int, commit: str, ours: Path) -> dict:
    """What makes COMMIT (in REPO) the scene it was submitted as, read by git's plumbing: its start and
    branches are the submission's commits with the trees of OUR scene's (never what the student says)."""
    trees = _trees(repo, commit)
    start = json.loads((ours / ".git" / exercises.MARKER).read_text())["start"]
    found = trees.get(_git(["rev-parse", f"{start}^{{tree}}"], ours))
    if found is None:
        raise CourseError(f"the submission does not start from exercise {number}'s scene (make exercise {number})")
    branches = {}
    for line in _git(["for-each-ref", "--format=%(refname:short) %(tree)", "refs/heads"], ours).splitlines():
        branch, tree = line.split()
        if branch != "main" and tree in trees:
            branches[branch] = trees[tree]
    return {"start": found, "branches": branches}


def grade(number: int, ref: str, commit: str, instructor: Path, ours: Path, class_dir: Path) -> list:
    """Exercise NUMBER's criteria on the submission COMMIT (fetched into INSTRUCTOR's clone as REF),
    graded as `make check` grades, the whole grader in the sandbox: [(ok, label, hint)]. A submission
    that cannot be graded, whatever it holds, gets one ✗ and a kept verdict: it never stops the class."""
    try:
        return _grade(number, ref, commit, instructor, ours, class_dir)
    except Exception as error:  # noqa: BLE001 - see above
        return [exercises.criterion(False, "the submission can be graded",
                                    f"grading it failed: {type(error).__name__}: {printable(error, 200)}")]


def _grade(number: int, ref: str, commit: str, instructor: Path, ours: Path, class_dir: Path) -> list:
    try:
        scene = _scene_of(instructor, number, commit, ours)
    except CourseError as error:
        return [exercises.criterion(False, "the submission is the exercise's scene, committed", str(error))]
    with tempfile.TemporaryDirectory(prefix="dataops-grade-") as folder:
        inputs = sandbox.bundle(instructor, [ref], Path(folder))
        # Its start's outputs are our scene's (the same tree); its own, from the class store by the md5s
        # its dvc.lock names, read through plumbing (DVC reads nothing of the submission's here).
        shutil.copytree(ours / ".dvc" / "cache" / "files" / "md5", inputs / "objects")
        classroom.fetch_objects(class_dir, outputs(yaml_at(instructor, commit, "dvc.lock")).values(), inputs / "objects")
        answer = sandbox.run({"job": "grade", "number": number, "commit": commit, **scene}, inputs)
    found = answer.get("criteria")
    if not (isinstance(found, list) and 0 < len(found) <= 20 and all(
            isinstance(item, list) and len(item) == 3 and isinstance(item[0], bool)
            and all(isinstance(text, str) for text in item[1:]) for item in found)):
        return [exercises.criterion(False, "the submission can be graded",
                                    f"grading it in the sandbox failed: {(answer['lines'] or ['no answer'])[0]}")]
    return [(ok, printable(label, 300), printable(hint, 300)) for ok, label, hint in found]


def _verdicts(class_dir: Path, instructor: Path, course: Path, chosen: dict, say) -> dict:
    """{(name, number): [(ok, label, hint)]}, graded anew only where commit or toolkit are new."""
    store, found = sandbox.Verdicts(class_dir / "grades" / "verdicts.json"), {}
    for (name, number), (_, ref, commit) in sorted(chosen.items()):
        def judge():
            say(f"  grading {printable(name, 20)}'s exercise {number} ({commit[:7]}) in the sandbox")
            ours = reference(number, course, class_dir / "grades" / "reference")
            return grade(number, ref, commit, instructor, ours, class_dir)
        found[(name, number)] = store.get(store.key(commit, f"grade {number}", True), judge)
    return found


def score(found: list) -> int:
    return round(100 * sum(ok for ok, _, _ in found) / len(found)) if found else 0


def write_grades(class_dir: Path, ids: dict, verdicts: dict, chosen: dict) -> Path:
    """grades.csv for the LMS and one feedback page a student."""
    out = class_dir / "grades"
    names = sorted(set(ids) | {name for name, _ in verdicts})
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="") as file:
        writer = csv.writer(file)
        # Canvas's gradebook import: these five columns (it matches on SIS User ID here), then one a score.
        writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                         *(f"Exercise {n}" for n in GRADED_HERE)])
        for name in names:
            writer.writerow([name, "", ids.get(name, ""), "", "",
                             *(score(verdicts[name, n]) if (name, n) in verdicts else "" for n in GRADED_HERE)])
    for name in names:
        page = [f"# Feedback for {printable(name, 20)}", ""]
        for number in GRADED_HERE:
            title = exercises.EXERCISES[number]["title"]
            if (name, number) not in verdicts:
                page += [f"## Exercise {number}: {title}", "", "Not submitted (make submit " f"{number}).", ""]
                continue
            arrived = datetime.fromtimestamp(chosen[name, number][0], timezone.utc)
            lines = exercises.report(number, verdicts[name, number])
            page += [f"## Exercise {number}: {title}", "",
                     f"Graded: commit {chosen[name, number][2][:7]}, submitted {arrived:%Y-%m-%d %H:%M} UTC.", "",
                     "```", *(printable(line, 400) for text in lines for line in text.split("\n")), "```", ""]
        (out / "feedback" / f"{name}.md").write_text("\n".join(page))
    return out / "grades.csv"


def grades(instructor: Path, class_dir: Path, course: Path, deadline: float = None, say=print) -> Path:
    """Fetch, grade in the sandbox, write grades.csv and the feedback; one line a student on the terminal."""
    sandbox.check()
    class_dir = class_dir.resolve()
    _git(["fetch", "-q", classroom.REMOTE, "+refs/submissions/*:refs/submissions/*"], instructor)
    chosen = latest(instructor, class_dir / "class.git" / gate.SUBMISSIONS_LOG, deadline)
    ids = gate.roster(class_dir)
    say(f"{len(chosen)} submission(s) to grade, from {len({name for name, _ in chosen})} student(s); "
        f"exercises {', '.join(map(str, GRADED_HERE))} are graded here, the others on students' machines.")
    verdicts = _verdicts(class_dir, instructor, course, chosen, say)
    path = write_grades(class_dir, ids, verdicts, chosen)
    for name in sorted(set(ids) | {name for name, _ in verdicts}):
        cells = [f"{n}: {score(verdicts[name, n]):3d}%" if (name, n) in verdicts else f"{n}:    –"
                 for n in GRADED_HERE]
        unknown = "" if not ids or name in ids else "  (not on the roster)"
        say(f"  {printable(name, 20):<20} {'  '.join(cells)}{unknown}")
    say(f"Grades: {path}; feedback: {path.parent / 'feedback'}/<name>.md")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataops_kit.teach.gradebook", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["submit", "grades"])
    parser.add_argument("number", nargs="?", type=int)
    parser.add_argument("--class-dir", type=Path, default=classroom.DEFAULT_CLASS)
    parser.add_argument("--student", default=os.environ.get("STUDENT") or None)
    parser.add_argument("--exercises", type=Path, default=exercises.DEFAULT_EXERCISES)
    parser.add_argument("--course", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--deadline", type=datetime.fromisoformat,
                        help="grade the latest submission before this time (ISO 8601; local time if no zone)")
    args = parser.parse_args(argv)
    try:
        if args.command == "submit":
            if args.number not in exercises.EXERCISES:
                raise CourseError(f"which exercise? make submit N, N from {min(exercises.EXERCISES)} to "
                                  f"{max(exercises.EXERCISES)}")
            submit(args.number, args.class_dir, args.student, args.exercises)
        else:
            grades(Path.cwd(), args.class_dir, args.course, args.deadline and args.deadline.astimezone().timestamp())
    except (CourseError, classroom.StoreError, sandbox.Unavailable) as error:
        print(f"✗ {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
