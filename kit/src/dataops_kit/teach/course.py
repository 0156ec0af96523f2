"""The course: the pipeline built from an empty folder, one lesson at a time,
as a git history with an annotated tag per lesson.

The lesson pages, docs/lessons/NN-name.md, are the generator's script: every
``sh`` block of every page runs, in order, in the course repository, and every
``Expect:`` line under a block must appear in what the block printed
(``Expect pattern:`` is a regular expression). A page that no longer matches
what DVC or the workspace does stops the build at that line, so the pages and
the history cannot drift apart. After each page, the repository must be
committed and DVC up to date; then it is tagged ``lesson-NN-name``: the state
a student has at the end of that lesson, which is where lesson NN+1 starts.

    python -m dataops_kit.teach.course build [FOLDER]      # make course
    python -m dataops_kit.teach.course verify [FOLDER]     # make course-verify
    python -m dataops_kit.teach.course publish [FOLDER] [TO]   # make course-publish
    python -m dataops_kit.teach.course catch-up LESSON     # make catch-up LESSON=3, in the course

FOLDER is the classroom folder: the course repository is FOLDER/repo, and the
lessons put the DVC remote and a classmate's clone beside it (FOLDER/storage,
FOLDER/classmate), so one ``rm -rf FOLDER`` removes everything.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dataops_kit.facts import (YAMLError, declared_outputs, in_history, md5, printable, read_yaml,
                               shell_env, stored, workspace, yaml_at)

WORKSPACE = workspace()
LESSONS = WORKSPACE / "docs" / "lessons"
DEFAULT_FOLDER = WORKSPACE.parent / "dataops-course"
TAG = "lesson-{number}-{slug}"
# The course's commits and tags name one author and one date, so two builds of
# the same workspace give the same commits, hashes included.
AUTHOR = {
    "GIT_AUTHOR_NAME": "DataOps course", "GIT_AUTHOR_EMAIL": "course@example.invalid",
    "GIT_COMMITTER_NAME": "DataOps course", "GIT_COMMITTER_EMAIL": "course@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-05T09:00:00+00:00", "GIT_COMMITTER_DATE": "2026-01-05T09:00:00+00:00",
}


class CourseError(Exception):
    pass


def blocks(text: str):
    """(line number, commands, [(kind, expected)]) for each ```sh block, in order.
    A block fenced ```sh no-test is shown to students and not run."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start, i = i + 1, i + 1
            while lines[i].strip() != "```":
                i += 1
            commands, expects = "\n".join(lines[start:i]), []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                match = re.match(r"Expect( pattern)?: `(.*)`$", lines[i])
                if match:
                    expects.append(("pattern" if match.group(1) else "line", match.group(2)))
                i += 1
            found.append((start, commands, expects))
        else:
            i += 1
    return found


def unmet(output: str, expects) -> list:
    """The Expect lines that the output does not satisfy."""
    return [expected for kind, expected in expects
            if not (expected in output if kind == "line" else re.search(expected, output, re.MULTILINE))]


class Lesson:
    def __init__(self, path: Path):
        self.path = path
        number, slug = path.stem.split("-", 1)
        self.number, self.slug = int(number), slug
        self.tag = TAG.format(number=number, slug=slug)
        self.text = path.read_text()
        self.title = self.text.splitlines()[0].lstrip("# ").strip()

    def __repr__(self):
        return self.tag


def lessons(folder: Path = LESSONS) -> list:
    return [Lesson(path) for path in sorted(folder.glob("[0-9][0-9]-*.md"))]


def _git(args, cwd, env=None, check=True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode:  # git says some things ("needs merge") on stdout
        raise CourseError(f"git {' '.join(args)}: {(result.stderr.strip() or result.stdout.strip())}")
    return result.stdout.strip()


def student_env(workspace: Path) -> dict:
    """What a student's shell has after `source .venv/bin/activate` in the
    workspace: its venv first on PATH, WORKSPACE naming it, nothing else of ours."""
    env = shell_env()
    env.update(AUTHOR, WORKSPACE=str(workspace), COLUMNS="200",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


class Terminal:
    """The student's one terminal: each block runs in bash where the last one
    left off (its folder, its exported variables), as typed into one shell."""

    def __init__(self, cwd: Path, env: dict, state: Path):
        self.env, self.state, self.last = env, state, 0.0
        state.mkdir(parents=True, exist_ok=True)
        (state / "cwd").write_text(str(cwd))
        (state / "env").write_text("")
        (state / "save.sh").write_text(
            f"pwd > '{state}/cwd'\n"
            f"export -p | grep -v -e ' OLDPWD' -e ' PWD=' -e ' SHLVL=' > '{state}/env' || true\n")

    @property
    def cwd(self) -> Path:
        return Path((self.state / "cwd").read_text().strip("\n"))

    def run(self, commands: str) -> subprocess.CompletedProcess:
        if "gto " in commands:  # GTO orders a registry's tags by their time, in whole seconds, as typing spaces them
            time.sleep(max(0.0, self.last + 1.0 - time.time()))
        script = (f"cd \"$(cat '{self.state}/cwd')\" && . '{self.state}/env'\n"
                  f"trap '. \"{self.state}/save.sh\"' EXIT\n{commands}\n")
        try:
            return subprocess.run(["bash", "-eo", "pipefail", "-c", script], env=self.env, capture_output=True,
                                  text=True)
        finally:
            self.last = time.time()


def run_lesson(lesson: Lesson, repo: Path, terminal: Terminal) -> None:
    """Run a page's blocks in the student's terminal, check them, and check that
    the page ends where it started (the course repository), committed, with its tag."""
    for line, commands, expects in blocks(lesson.text):
        result = terminal.run(commands)
        output = result.stdout + result.stderr
        missing = unmet(output, expects)
        noise = [text for text in NOT_FOR_STUDENTS if text in output]
        if result.returncode or missing or noise:
            why = (f"exited {result.returncode}" if result.returncode else
                   f"printed no {missing[0]!r}" if missing else f"printed {noise[0]!r}, which no page explains")
            raise CourseError(f"{lesson.path.relative_to(WORKSPACE)}:{line}: this block {why}\n"
                              f"$ {commands}\n{output}")
    if terminal.cwd.resolve() != repo.resolve():
        raise CourseError(f"{lesson.path.name} leaves the student in {terminal.cwd}: "
                          f"it must end with a `cd` back to the course repository")
    left = _git(["status", "--porcelain"], repo)
    if left:
        raise CourseError(f"{lesson.path.name} left uncommitted changes:\n{left}")
    if lesson.tag not in _git(["tag", "--list", lesson.tag], repo).split():
        raise CourseError(f"{lesson.path.name} must end with the block that tags it: "
                          f"git tag -a {lesson.tag} -m \"{lesson.title}\"")


# What a page must never leave a student to wonder about.
NOT_FOR_STUDENTS = ["Could not create .gitignore entry"]


def build(folder: Path, workspace: Path = WORKSPACE, say=print) -> Path:
    folder = folder.resolve()
    if folder.exists() and any(folder.iterdir()):
        raise CourseError(f"{folder} is not empty: name a new folder (make course COURSE=...), or remove it")
    repo = folder / "repo"
    repo.mkdir(parents=True)
    env, started = student_env(workspace), time.perf_counter()
    say(f"Building the course in {repo}, from the lesson pages in {LESSONS.relative_to(WORKSPACE)}/")
    state = Path(tempfile.mkdtemp(prefix="dataops-terminal-"))
    try:
        terminal = Terminal(repo, env, state)
        for lesson in lessons():
            begun = time.perf_counter()
            run_lesson(lesson, repo, terminal)
            say(f"  {lesson.tag:<34} {time.perf_counter() - begun:5.1f} s  {lesson.title}")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    say(f"Built {len(lessons())} lessons in {time.perf_counter() - started:.0f} s. "
        f"`git tag` in {repo} lists them; `make catch-up LESSON=N` there goes to the start of lesson N.")
    return repo


def tags(repo: Path) -> dict:
    """{lesson number: tag} of the lesson tags in a course repository."""
    found = {}
    for tag in _git(["tag", "--list", "lesson-*"], repo).split():
        match = re.match(r"lesson-(\d\d)-", tag)
        if match:
            found[int(match.group(1))] = tag
    return dict(sorted(found.items()))


def registry_tags(repo: Path) -> list:
    """GTO's tags (lesson 9): a version, <artifact>@v1.0.0, or a stage, <artifact>#prod#3."""
    return [tag for tag in _git(["tag", "--list"], repo).split() if re.match(r"[a-z0-9-]+(@v\d|#)", tag)]


def later_registry_tags(repo: Path, target: str) -> list:
    """GTO's tags on commits outside TARGET's history: a later lesson's registry."""
    return [tag for tag in registry_tags(repo) if not in_history(repo, tag, target)]


def _dvc(args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode:
        raise CourseError(f"dvc {' '.join(args)}:\n{result.stdout}{result.stderr}")
    return result


def _unique(make_name, exists) -> str:
    name, n = make_name(""), 1
    while exists(name):
        n += 1
        name = make_name(f"-{n}")
    return name


IN_PROGRESS = {"MERGE_HEAD": ("a merge", "git merge --abort"), "rebase-merge": ("a rebase", "git rebase --abort"),
               "rebase-apply": ("a rebase", "git rebase --abort"),
               "CHERRY_PICK_HEAD": ("a cherry-pick", "git cherry-pick --abort"),
               "REVERT_HEAD": ("a revert", "git revert --abort")}


def _preflight(repo: Path, target: str) -> None:
    """Refuse, before anything moves, what would leave a mix: git in the middle of
    something, conflicted files, files catch-up must replace but cannot."""
    git_dir = repo / _git(["rev-parse", "--git-dir"], repo)
    for marker, (what, abort) in IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise CourseError(f"{what} is in progress: finish it (resolve, git add, git commit) or undo it "
                              f"({abort}), then catch up. Nothing was moved")
    conflicted = _git(["diff", "--name-only", "--diff-filter=U"], repo).split()
    if conflicted:
        raise CourseError(f"{conflicted[0]} has merge conflicts: resolve it (or git checkout HEAD -- "
                          f"{conflicted[0]}), then catch up. Nothing was moved")
    for name in dict.fromkeys(declared_outputs(_spec(repo)) + declared_outputs(yaml_at(repo, target, "dvc.yaml"))):
        path = repo / name
        folder = next((p for p in [path.parent, *path.parents] if p.exists()), repo)
        if (path.exists() and not os.access(path, os.W_OK)) or not os.access(folder, os.W_OK):
            raise CourseError(f"{name} cannot be replaced (read-only, or immutable: lsattr {name}): "
                              f"make it writable, then catch up. Nothing was moved")


def _spec(repo: Path):
    try:
        return read_yaml((repo / "dvc.yaml").read_text()) if (repo / "dvc.yaml").exists() else {}
    except (OSError, UnicodeDecodeError, YAMLError, ValueError) as error:
        raise CourseError(f"dvc.yaml cannot be read ({type(error).__name__}): resolve it first "
                          f"(git checkout dvc.yaml, or finish the merge). Nothing was moved") from None


def _unsaved_outputs(repo: Path) -> list:
    """Tracked outputs on disk whose bytes are in no version DVC saved: a
    `dvc checkout` would refuse to overwrite them, and they exist nowhere else."""
    cache = Path(_dvc(["cache", "dir"], repo).stdout.strip())
    unsaved = []
    for name in declared_outputs(_spec(repo)):
        path = repo / name
        if path.is_file() and not stored(cache, md5(path)).exists():
            unsaved.append(path.relative_to(repo))
    return unsaved


def _keep(repo: Path, number: int, known: dict, stamp: str) -> list:
    """Put the student's uncommitted changes, unsaved outputs and own commits where catch-up leaves
    them alone (a stash, saved-work/, a branch); one line for each, saying how to get it back."""
    kept = []
    unsaved = _unsaved_outputs(repo)  # before git moves anything
    if _git(["status", "--porcelain"], repo):
        message = f"catch-up to lesson {number}: uncommitted work"
        _git(["stash", "push", "--include-untracked", "-q", "-m", message], repo)
        kept.append(f'uncommitted changes: stash@{{0}} "{message}" (get them back: git stash pop)')
    if unsaved:
        folder = repo / "saved-work" / _unique(lambda n: f"{stamp}{n}", lambda n: (repo / "saved-work" / n).exists())
        for path in unsaved:
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / path, folder / path)
        kept.append(f"outputs DVC had not saved: copied to {folder.relative_to(repo)}/ "
                    f"({', '.join(map(str, unsaved))})")
    branches = set(_git(["for-each-ref", "--format=%(refname:short)", "refs/heads"], repo).split())
    on_branch = _git(["symbolic-ref", "-q", "--short", "HEAD"], repo, check=False)
    for ref in dict.fromkeys(["main", "HEAD" if not on_branch else "main"]):
        if ref == "main" and "main" not in branches:
            continue
        # Commits of the student's own: on no lesson tag's history.
        if _git(["rev-list", "-n1", ref, "--not", *known.values()], repo):
            name = _unique(lambda n: f"my-work-{stamp}{n}", lambda n: n in branches)
            _git(["branch", name, ref], repo)
            branches.add(name)
            kept.append(f"your commits on {'main' if ref == 'main' else 'a detached HEAD'}: "
                        f"branch {name} (see them: git log {name})")
    return kept


def _set_aside_registry(repo: Path, target: str, stamp: str) -> list:
    """GTO's tags on commits after TARGET (a later lesson's registry), where retyping that lesson does not collide."""
    later = later_registry_tags(repo, target)
    folder = _unique(lambda n: f"refs/kept-tags/{stamp}{n}",
                     lambda name: _git(["for-each-ref", "--count=1", name], repo) != "")
    for tag in later:
        _git(["update-ref", f"{folder}/{tag}", f"refs/tags/{tag}"], repo)
        _git(["tag", "-d", tag], repo)
    return [f"registry tags of later lessons ({', '.join(later)}): set aside in {folder}/ "
            f"(get one back: git update-ref refs/tags/NAME {folder}/NAME)"] if later else []


def _put_back_registry(repo: Path, target: str) -> list:
    """Registry tags an earlier catch-up set aside that belong to TARGET's history, where no tag has their name."""
    taken, back = set(registry_tags(repo)), []
    for ref in _git(["for-each-ref", "--format=%(refname)", "refs/kept-tags"], repo).split():
        tag = ref.split("/", 3)[3]
        if tag not in taken and in_history(repo, ref, target):
            _git(["update-ref", f"refs/tags/{tag}", ref], repo)
            _git(["update-ref", "-d", ref], repo)
            taken.add(tag)
            back.append(tag)
    return [f"registry tags put back, as this lesson has them: {', '.join(back)}"] if back else []


def _move(repo: Path, target: str, outputs_now: list) -> None:
    """main at TARGET, with exactly that lesson's outputs in the working tree."""
    _git(["checkout", "-q", "-B", "main", target], repo)
    if _dvc(["checkout", "--force"], repo, check=False).returncode:
        remote = _dvc(["remote", "default"], repo, check=False).stdout.strip()
        if remote:
            _dvc(["pull", "--force"], repo)
        else:
            _dvc(["repro"], repo)
    # Outputs of later lessons: saved by _keep when DVC had not, so in DVC's cache
    # or in saved-work/ now. The working tree holds exactly this lesson's.
    later = [name for name in outputs_now if name not in declared_outputs(_spec(repo))]
    for name in later:
        path = repo / name
        if path.is_file() or path.is_symlink():
            path.unlink()
        for folder in path.parents:
            if folder == repo or not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()


def catch_up(number: int, repo: Path, say=print) -> None:
    """Bring the course repository to the start of lesson NUMBER (the tag of
    the lesson before), keeping everything of the student's, and say where."""
    known = tags(repo)
    if not known:
        raise CourseError(f"{repo} has no lesson tags: run this in the course repository (make course builds one)")
    if number == 0:
        raise CourseError("lesson 0 starts from an empty folder: follow docs/lessons/00-setup.md")
    if number - 1 not in known:
        raise CourseError(f"no lesson {number}: this course has lessons 1 to {max(known) + 1} "
                          f"({max(known) + 1} is the end of the last lesson)")
    target, stamp = known[number - 1], f"before-lesson-{number:02d}"
    _preflight(repo, target)
    outputs_now = declared_outputs(_spec(repo))
    kept = _keep(repo, number, known, stamp) + _set_aside_registry(repo, target, stamp)
    _move(repo, target, outputs_now)
    back = _put_back_registry(repo, target)
    status = _dvc(["status"], repo).stdout
    if "up to date" not in status and "no data or pipelines" not in status:
        raise CourseError(f"after checking out {target}, DVC says:\n{status}")
    say(f"At the start of lesson {number}: main is now {target}, and its data and model are in place.")
    if kept:
        say("Nothing of yours is lost. Kept:")
        for line in kept:
            say(f"  - {line}")
    else:
        say("Nothing of yours needed keeping: no changes, and no commits beyond that lesson.")
    for line in back:
        say(line)


def verify(folder: Path, say=print, sandboxed: bool = False) -> list:
    """For every lesson tag and model version (lesson 9's registry), in a fresh clone of the built course:
    `dvc repro` must give that tag's dvc.lock byte for byte, and git and DVC must be clean. The sandbox's
    verify job does it with the one reproduction (sandbox.fresh_run) on a bundle of the tags: in the
    sandbox with SANDBOXED (a course you did not build), else here, in a folder of its own. The clones
    share one DVC cache, filled only by these checks, so a stage whose inputs an earlier tag already
    reproduced is restored from DVC's run cache, not rerun; each distinct run is made once."""
    from dataops_kit.teach import sandbox

    repo = folder.resolve() / "repo"
    at = {tag: _git(["rev-parse", f"{tag}^{{commit}}"], repo) for tag in [*tags(repo).values(), *registry_tags(repo)]}
    lessons_at = {at[tag] for tag in tags(repo).values()}
    names = [*tags(repo).values(), *(tag for tag in registry_tags(repo) if "@" in tag and at[tag] not in lessons_at)]
    if sandboxed:
        try:
            sandbox.check()
        except sandbox.Unavailable as error:
            raise CourseError(f"{error}: nothing of the course was run") from None
    with tempfile.TemporaryDirectory(prefix="dataops-verify-") as inputs:
        sandbox.bundle(repo, [f"refs/tags/{tag}" for tag in names], Path(inputs))
        answer = sandbox.run({"job": "verify", "commit": at[names[0]], "tags": [[tag, at[tag]] for tag in names]},
                             Path(inputs), sandboxed, sandbox.WALL_SECONDS * len(names))
    found = answer.get("rows") if isinstance(answer.get("rows"), list) else []
    if answer["code"] or [row[0] for row in found if isinstance(row, list) and len(row) == 7] != names:
        raise CourseError(f"the course's check failed: {(answer['lines'] or ['a tag is missing from its answer'])[0]}")
    say(f"{'tag':<32} {'ran':>3} {'restored':>8}  {'dvc.lock identical':<18} {'clean':<5} {'time':>6}")
    rows = [tuple(row[:6]) for row in found]
    for (tag, ran, restored, identical, clean, seconds), why in zip(rows, (row[6] for row in found)):
        lock = {True: "yes", False: "NO", None: "(no dvc.lock)"}.get(identical, "NO")
        say(f"{printable(tag, 32):<32} {ran:>3} {restored:>8}  {lock:<18} {'yes' if clean else 'NO':<5} "
            f"{seconds:5.1f}s{'  ' + printable(why, 200) if why else ''}")
    return rows


def publish(folder: Path, to: Path, say=print) -> None:
    """What a class clones: a bare git repository with every lesson tag, and a
    DVC remote holding every tag's data and models."""
    repo, to = folder.resolve() / "repo", to.resolve()
    if to.exists() and any(to.iterdir()):
        raise CourseError(f"{to} is not empty: name a new folder, or remove it")
    _git(["clone", "-q", "--bare", str(repo), str(to / "course.git")], repo)
    _dvc(["remote", "add", "--local", "--force", "publish", str(to / "storage")], repo)
    try:
        pushed = _dvc(["push", "--all-tags", "-r", "publish"], repo).stdout.strip().splitlines()[-1]
    finally:
        _dvc(["remote", "remove", "--local", "publish"], repo)
    say(f"Published {len(tags(repo))} lessons: {to / 'course.git'} (git) and {to / 'storage'} (DVC: {pushed}).")
    say("A student then types:")
    say(f"  git clone {to / 'course.git'} dataops-course && cd dataops-course && make setup")
    say(f"  dvc remote add --local -d class {to / 'storage'}")
    say("  make catch-up LESSON=5        # or any lesson: checks it out and pulls its data and model")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataops_kit.teach.course", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "verify", "publish"):
        command = commands.add_parser(name)
        command.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
        if name == "publish":
            command.add_argument("to", nargs="?", type=Path)
        if name == "verify":
            command.add_argument("--sandbox", choices=("on", "off"), default="off",
                                 help="on: in the sandbox, for a course you did not build")
    commands.add_parser("catch-up").add_argument("lesson", type=int)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.folder)
        elif args.command == "verify":
            rows = verify(args.folder, sandboxed=args.sandbox == "on")
            return 0 if all(r[3] is not False and r[4] for r in rows) else 1
        elif args.command == "publish":
            publish(args.folder, args.to or args.folder / "published")
        else:
            catch_up(args.lesson, Path.cwd())
    except CourseError as error:
        print(f"✗ {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
