"""Graded exercises: scenarios set up from the course, answers checked from
real git and DVC state.

    make exercise 3        # python -m dataops_kit.teach.exercises start 3
    make check 3           # python -m dataops_kit.teach.exercises check 3

``start`` clones the built course (make course) at the exercise's lesson tag
into a folder of its own, EXERCISES/NN-name/repo (default
../dataops-exercises), with a copy of the course's DVC cache, then sets the
scene with real commands: commits, `dvc repro`, a hidden data change, a failed
stage, a damaged cache file, a merge with conflicting dvc.lock files. It
never touches the student's other work: a scenario already there is moved
aside, not deleted, and it says where.

``check`` reads the scenario's state (dvc.lock of named commits, the cache,
`git log`, the files on disk) and prints one line per criterion, ✓ or ✗ with
a hint that never gives the answer away, and exits 0 or 1, so an autograder
can run it. The task texts and reference solutions are in docs/exercises.md;
tests/test_exercises.py runs each checker on the unsolved scene, a wrong
answer and the reference solution.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dataops_kit.facts import (YAMLError, cache_dir, git_show, locked_metrics, md5, outputs, read_yaml,
                               stored)
from dataops_kit.teach.course import (AUTHOR, DEFAULT_FOLDER, WORKSPACE, CourseError, later_registry_tags,
                                     student_env, tags)

DEFAULT_EXERCISES = WORKSPACE.parent / "dataops-exercises"
MARKER = "dataops-exercise.json"  # in .git/: invisible to git status
RUNNER = re.compile(r"dataops-run notebooks/[\w.-]+\.ipynb")  # the one command a graded stage may have
REPRO_SECONDS = 600
CLASSMATE = {**AUTHOR, "GIT_AUTHOR_NAME": "Classmate", "GIT_COMMITTER_NAME": "Classmate",
             "GIT_AUTHOR_EMAIL": "classmate@example.invalid", "GIT_COMMITTER_EMAIL": "classmate@example.invalid"}


class Scene:
    """A scenario repository, and the questions a checker asks of it."""

    def __init__(self, repo: Path, env: dict = None):
        """Someone else's scene is graded inside the sandbox, whole (dataops_kit.teach.sandbox)."""
        self.repo, self.env = repo, env or student_env(WORKSPACE)
        self._reproduced, self._clone, self.grading = {}, None, False

    def sh(self, commands: str, check=True, cwd=None, env=None, timeout=None) -> subprocess.CompletedProcess:
        try:
            result = subprocess.run(["bash", "-eo", "pipefail", "-c", commands], cwd=cwd or self.repo,
                                    env={**self.env, **(env or {})}, capture_output=True, text=True,
                                    timeout=timeout)
        except (OSError, UnicodeDecodeError) as error:  # no such folder, output that is not text
            result = subprocess.CompletedProcess(commands, 127, "", str(error))
        if check and result.returncode:
            raise CourseError(f"$ {commands}\n{result.stdout}{result.stderr}")
        return result

    def git(self, args: str, check=None, cwd=None) -> str:
        """git's output; a failure raises while setting up, and is empty output while grading."""
        return self.sh(f"git {args}", check=not self.grading if check is None else check, cwd=cwd).stdout.strip()

    def text(self, path: Path) -> str:
        """A file's text, or "" where there is none to read (deleted, a folder, a loop, not UTF-8)."""
        try:
            return Path(path).read_text()
        except (OSError, UnicodeDecodeError):
            return ""

    @staticmethod
    def digest(path: Path):
        """A file's md5, or None where there is no file to read."""
        try:
            return md5(path) if Path(path).is_file() else None
        except OSError:
            return None

    def rev(self, name: str):
        return self.git(f"rev-parse -q --verify '{name}^{{commit}}'", check=False) or None

    def show(self, rev: str, path: str) -> str:
        return git_show(self.repo, rev, path)

    def _yaml(self, name: str, rev: str = None) -> dict:
        """A YAML file of the working tree (or of commit REV), or {} when it cannot be read as one."""
        try:
            text = (self.repo / name).read_text() if rev is None else self.show(rev, name)
            data = read_yaml(text or "")
        except (OSError, UnicodeDecodeError, YAMLError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def lock(self, rev: str = None) -> dict:
        return self._yaml("dvc.lock", rev)

    def params(self, rev: str = None) -> dict:
        return self._yaml("params.yaml", rev)

    outs = staticmethod(outputs)

    def cached(self, digest: str) -> Path:
        return stored(cache_dir(self.repo), digest)

    def metrics(self, rev: str = None) -> dict:
        """reports/metrics.json as the pipeline wrote it for commit REV (the working
        tree's dvc.lock by default), whatever the file on disk now says."""
        return locked_metrics(self.repo, self.lock(rev))

    def dvc_clean(self, cwd=None) -> bool:
        if not (Path(cwd or self.repo) / ".dvc").is_dir():
            return False  # not a DVC project (and DVC would take a second to say so)
        return "up to date" in self.sh("dvc status", check=False, cwd=cwd).stdout

    def stale(self):
        """A hint when DVC itself says the working tree is not what dvc.lock records, else None."""
        return None if self.dvc_clean() else "dvc status lists what is stale or edited (dvc repro brings it up to date)"

    def git_clean(self, cwd=None) -> bool:
        status = self.sh("git status --porcelain", check=False, cwd=cwd)
        return status.returncode == 0 and status.stdout.strip() == ""

    def on_disk(self, rev: str = None, root: Path = None) -> bool:
        """Every output of REV's dvc.lock (the working tree's by default) on disk, byte for byte."""
        root = root or self.repo
        return all(self.digest(root / path) == digest
                   for path, digest in self.outs(self.lock(rev)).items())

    def history(self, ref: str = "main") -> list:
        return self.git(f"rev-list {ref}").split()

    def start(self) -> str:
        """The commit the scene was set up at (recorded by `start`)."""
        return json.loads((self.repo / ".git" / MARKER).read_text())["start"]

    def reproduces(self, rev: str = None):
        """Why REV (the working tree by default) does not reproduce, or None when it does.

        As DVC proves things, and trusting nothing the student can write: a
        fresh clone of the commit (for the working tree, its tracked and new
        files copied over it) runs every stage, with none of the student's cache
        or record of what ran, and each output must have the bytes REV's
        dvc.lock names. A stage that ran before with the same inputs, here or
        in an earlier check, is restored from those runs
        (sandbox.reproductions_cache). Every stage must be a notebook run by the workspace's
        runner. Results are kept per commit for this check."""
        key = rev or "working tree"
        if key not in self._reproduced:
            try:
                self._reproduced[key] = self._reproduce(rev)
            except (CourseError, OSError, subprocess.SubprocessError) as error:
                self._reproduced[key] = f"it could not be reproduced: {str(error).splitlines()[0]}"
        return self._reproduced[key]

    def _reproduce(self, rev):
        lock = self.lock(rev)
        wanted = self.outs(lock)
        if not wanted:
            return "dvc.lock names no outputs: dvc repro writes it"
        spec = self._yaml("dvc.yaml", rev)
        stages = spec.get("stages") if isinstance(spec.get("stages"), dict) else {}
        if not stages:
            return "dvc.yaml has no stages"
        for name, stage in stages.items():
            cmd = stage.get("cmd") if isinstance(stage, dict) else None
            if not (isinstance(cmd, str) and RUNNER.fullmatch(cmd.strip())):
                return (f"stage {name} runs {cmd!r}: every stage runs a notebook, "
                        f"as `dataops-run notebooks/NAME.ipynb`")
        if self._clone is None:
            self._clone = Path(tempfile.mkdtemp(prefix="dataops-grade-")) / "repo"
            self.git(f"clone -q --no-checkout {self.repo} {self._clone}", check=True, cwd=self.repo.parent)
            self.git("fetch -q origin '+refs/exps/*:refs/exps/*' '+refs/heads/*:refs/remotes/origin/*'",
                     cwd=self._clone, check=False)
            (self._clone / ".venv").symlink_to(Path(sys.prefix))
        clone, commit = self._clone, self.rev(rev or "HEAD")  # named in the student's repository, not the clone's
        if not commit or self.sh(f"git checkout -q -f --detach {commit} && git clean -qfd -e .venv", check=False,
                                 cwd=clone).returncode:
            return f"{rev or 'HEAD'} cannot be checked out in a fresh clone"
        from dataops_kit.install import install_git_filter

        install_git_filter(clone)  # as make sets up a clone: notebooks count by their clean form
        if rev is None:  # the working tree: what git tracks or would add, as the student has it now
            files = self.git("ls-files -z --cached --others --exclude-standard").split("\0")
            for name in filter(None, files):
                source, target = self.repo / name, clone / name
                target.unlink(missing_ok=True)
                if source.is_file() and not source.is_symlink():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
        # Never the student's record of what ran: each stage runs, or is restored from a run of ours.
        (clone / "dvc.lock").unlink(missing_ok=True)
        from dataops_kit.teach.sandbox import fresh_run, reproductions_cache, verdict

        return verdict(fresh_run(clone, sorted(wanted), timeout=REPRO_SECONDS, cache=reproductions_cache()), wanted)

    def reproduced_metrics(self, rev: str = None) -> dict:
        """reports/metrics.json of REV, only if REV reproduces."""
        return self.metrics(rev) if self.reproduces(rev) is None else {}

    def cleanup(self) -> None:
        if self._clone is not None:
            shutil.rmtree(self._clone.parent, ignore_errors=True)


def edit_cell(notebook: Path, old: str, new: str) -> None:
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        if old in text:
            cell["source"] = text.replace(old, new)
            notebook.write_text(json.dumps(nb, indent=1) + "\n")
            return
    raise CourseError(f"{old!r} is not in {notebook}")


def dig(data, *keys):
    """data[k1][k2]..., or None where any level is missing or not a mapping."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def accuracy(metrics: dict):
    """The test accuracy a metrics file records, or None where it records no number."""
    value = metrics.get("accuracy")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def criterion(ok, label: str, hint) -> tuple:
    return bool(ok), label, hint or "git status and dvc status say what is off"


# ---------------------------------------------------------------------------
# The exercises. Each: a number, a folder name, its title, the lesson tag it
# starts from, what `start` does after the clone, and the checker's criteria.

EXERCISES = {}


def exercise(number: int, slug: str, title: str, lesson: int = 8, adds_a_stage: bool = False):
    """ADDS_A_STAGE: the exercise asks for a new notebook and stage, so those may be added (never changed)."""
    def register(functions):
        setup, check = functions()
        EXERCISES[number] = dict(number=number, slug=slug, title=title, lesson=lesson, setup=setup, check=check,
                                 adds_a_stage=adds_a_stage)
        return functions
    return register


KEPT = ("notebooks", "src/dataops", "dvc.yaml")  # the way: what no exercise asks a student to change


def the_way(s, adds_a_stage: bool) -> tuple:
    """The notebooks, src/dataops and dvc.yaml, in the working tree (through git's notebook filter), are as
    the scene set them: the result must come from the knobs and commands the exercise is about."""
    start = s.start()
    changed = s.git(f"diff --name-only {'--diff-filter=DMRT ' if adds_a_stage else ''}{start} -- {' '.join(KEPT)}",
                    check=False).split()
    if adds_a_stage:  # dvc.yaml may gain stages; the scene's stay as they were
        theirs, yours = (s._yaml("dvc.yaml", rev).get("stages") for rev in (start, None))
        theirs, yours = (stages if isinstance(stages, dict) else {} for stages in (theirs, yours))
        changed = [path for path in changed if path != "dvc.yaml"] + [
            f"dvc.yaml's stage {name}" for name in theirs if yours.get(name) != theirs[name]]
    what = "the notebooks, src/dataops and the stages in dvc.yaml" if adds_a_stage else "notebooks, src/dataops and dvc.yaml"
    return criterion(s.rev("HEAD") and not changed, f"{what} are as the exercise set them",
                     f"changed: {', '.join(changed[:3])}; this exercise is about other things: "
                     f"git diff {start[:7]} -- PATH shows the change, git checkout {start[:7]} -- PATH undoes it")


def graded(number: int, s) -> list:
    """Exercise NUMBER's criteria on scene S, the way last."""
    spec = EXERCISES[number]
    return spec["check"](s) + [the_way(s, spec["adds_a_stage"])]


@exercise(1, "worse-on-purpose", "Make the model worse on purpose, and see it")
def _():
    def setup(s):
        s.sh("sed -i -e 's/^  model: .*/  model: logistic_regression/' params.yaml && dvc repro -q && "
             "git commit -qam 'Back to logistic regression'")

    def check(s):
        start = s.start()
        why = s.reproduces()
        before, now = accuracy(s.metrics(start)), accuracy(s.reproduced_metrics())
        return [
            criterion(s.params() != s.params(start), "params.yaml sets another value than the last commit",
                      "change a knob in params.yaml (dvc params diff shows what you changed)"),
            criterion(why is None and s.dvc_clean(), "the data, model and metrics are what a fresh run of the "
                      "pipeline makes with those parameters", s.stale() or why),
            criterion(now is not None and before is not None and now <= before - 0.05,
                      "test accuracy fell by at least 0.05", "dvc metrics diff shows the change so far; "
                      "which knob of the model in use limits what it can learn?"),
        ]
    return setup, check


@exercise(2, "experiment-grid", "An experiment grid: keep the best", lesson=8)
def _():
    def setup(s):
        s.sh("sed -i -e 's/^  dataset: iris/  dataset: wine/' -e 's/^  model: .*/  model: svc/' params.yaml && "
             "dvc repro -q && git commit -qam 'Move to the wine data set, with an SVM'")

    def check(s):
        start = s.start()
        refs = s.git("for-each-ref --format='%(refname)' refs/exps").split()
        grid, seen = [], [s.params(start)]
        for ref in refs:  # an experiment: a commit on the start with parameters of its own that reproduces
            if (ref.startswith(f"refs/exps/{start[:2]}/{start[2:]}/") and s.git(f"log -1 --format=%P {ref}",
                    check=False) == start and s.params(ref) not in seen and s.reproduces(ref) is None):
                grid.append(ref)
                seen.append(s.params(ref))
        scores = {ref: accuracy(s.metrics(ref)) or -1.0 for ref in grid}
        head = s.rev("HEAD")
        applied = [ref for ref in grid if s.params(ref) == s.params("HEAD")]
        best = max(scores.values(), default=None)
        return [
            criterion(len(grid) >= 3, "at least 3 experiments on top of the starting commit, each with "
                      "parameters of its own, each reproducing its results",
                      "each dvc exp run -S ... is one experiment (a grid: --queue); dvc exp show lists them"),
            criterion(head != start and start in s.history("HEAD") and s.git_clean(),
                      "a new commit on main, nothing left uncommitted", "commit what you applied"),
            criterion(applied, "that commit's parameters are one experiment's",
                      "dvc exp apply puts an experiment's parameters and results in the workspace"),
            criterion(applied and accuracy(s.metrics("HEAD")) == best and best is not None,
                      "it is the experiment with the best test accuracy", "compare them: dvc exp show"),
            criterion(s.reproduces("HEAD") is None and s.dvc_clean() and s.on_disk(),
                      "the commit reproduces, and the files on disk are the ones its dvc.lock names",
                      s.stale() or s.reproduces("HEAD")),
        ]
    return setup, check


@exercise(3, "recover-a-model", "Recover last week's model")
def _():
    def setup(s):
        s.sh("sed -i -e 's/^  model: .*/  model: logistic_regression/' "
             "-e '/logistic_regression:/,/max_iter/ s/C: [0-9.e-]*/C: 0.0001/' params.yaml && dvc repro -q && "
             "git commit -qam 'Simpler model (classmate)'", env=CLASSMATE)

    def check(s):
        start, saved = s.start(), s.repo.parent / "previous-model.skops"
        wanted = s.outs(s.lock(f"{start}~1")).get("models/model.skops")
        theirs = s.outs(s.lock(start)).get("models/model.skops")
        got = s.digest(saved)
        return [
            criterion(got, "../previous-model.skops exists (beside the repository)", "save the model there"),
            criterion(got == wanted, "it is the model of the commit before the classmate's, byte for byte",
                      "that is the classmate's model: which commit's dvc.lock names the one you want?"
                      if got == theirs else "compare its md5 with the one that commit's dvc.lock records"),
            criterion(s.rev("main") and start in s.history("main") and s.outs(s.lock("main")).get(
                "models/model.skops") == theirs, "the classmate's commit is still on main",
                "get the old file without undoing their commit"),
            criterion(s.dvc_clean() and s.git_clean() and s.on_disk(), "the working tree is main's, unchanged",
                      "git status and dvc status say what moved"),
        ]
    return setup, check


@exercise(4, "find-the-commit", "Which commit changed the training data?")
def _():
    def setup(s):
        for edit, message in [("s/n_estimators: 100/n_estimators: 60/", "Fewer trees: faster training"),
                              ("/^process:/,/^$/ s/random_state: 42/random_state: 7/", "Tidy up params.yaml"),
                              ("s/max_depth: 3/max_depth: 4/", "Deeper trees")]:
            s.sh(f"sed -i '{edit}' params.yaml && dvc repro -q && git commit -qam '{message}'", env=CLASSMATE)

    def check(s):
        start, tagged = s.start(), s.rev("changed-training-data")
        recent = s.history(start)[:3]

        def changes_train(commit):
            return s.outs(s.lock(commit)).get("data/processed/train.csv") != \
                s.outs(s.lock(f"{commit}~1")).get("data/processed/train.csv")
        return [
            criterion(tagged, "a tag changed-training-data exists", "git tag NAME COMMIT"),
            criterion(tagged in recent, "it names one of the last three commits",
                      "git log --oneline -3 lists them"),
            criterion(tagged in recent and changes_train(tagged),
                      "in that commit, data/processed/train.csv differs from its parent's",
                      "dvc diff C~1 C --targets data/processed/train.csv says whether commit C changed it"),
        ]
    return setup, check


BUG = ("predicted = model.predict(X)", "predicted = model.predict(X.drop(columns=X.columns[0]))")


@exercise(5, "failed-stage", "Recover from a failed stage, and keep the evidence")
def _():
    def setup(s):
        edit_cell(s.repo / "notebooks" / "04_evaluate.ipynb", *BUG)
        failed = s.sh("dvc repro", check=False)
        if failed.returncode == 0 or not (s.repo / "reports/failed/04_evaluate.ipynb").exists():
            raise CourseError(f"the broken evaluate stage did not fail:\n{failed.stdout}{failed.stderr}")

    def check(s):
        failed = s.repo / "reports" / "failed" / "04_evaluate.ipynb"
        committed = s.show("HEAD", "notebooks/04_evaluate.ipynb") or ""
        return [
            criterion("ValueError" in s.text(failed),
                      "the failed run's notebook, with its error, is still in reports/failed/",
                      "the runner keeps it there until a run of that stage succeeds: what deleted it?"),
            criterion(s.text(s.repo / "notebooks/04_evaluate.ipynb") and BUG[1] not in s.text(
                s.repo / "notebooks/04_evaluate.ipynb") and BUG[1] not in committed,
                      "notebooks/04_evaluate.ipynb is the last good version", "git can put a file back as a "
                      "commit had it"),
            criterion(s.reproduces() is None and s.dvc_clean() and s.on_disk() and s.git_clean(),
                      "the pipeline's files are the last good version (git status and dvc status clean)",
                      s.stale() or s.reproduces()),
        ]
    return setup, check


@exercise(6, "damaged-cache", "Find and repair a damaged cache file")
def _():
    def setup(s):
        old = s.outs(s.lock("lesson-05-change-a-parameter"))["models/model.skops"]
        cached = s.cached(old)
        cached.chmod(0o644)
        cached.write_bytes(cached.read_bytes()[:-16] + b"\0" * 16)

    def check(s):
        needed = {digest for commit in s.history("main") for digest in s.outs(s.lock(commit)).values()}
        missing = [d for d in needed if not s.cached(d).is_file()]
        damaged = [d for d in needed if s.cached(d).is_file() and s.digest(s.cached(d)) != d]
        return [
            criterion(not missing, "every version a commit on main needs is in the cache",
                      f"{len(missing)} version(s) missing: deleting a damaged file loses that version; "
                      "the pipeline can make it again"),
            criterion(not damaged, "every cached version has the md5 it is named after",
                      f"{len(damaged)} cached file(s) damaged: dvc status, at the commit that uses it, notices"),
            criterion(s.git("branch --show-current") == "main" and s.dvc_clean() and s.git_clean(),
                      "back on main, with its files", "git checkout main, then dvc checkout"),
        ]
    return setup, check


@exercise(7, "safe-gc", "Clean the cache, keep every committed version")
def _():
    def setup(s):
        s.sh("sed -i 's/n_estimators: 100/n_estimators: 10/' params.yaml && dvc repro -q && "
             "git checkout -q HEAD -- params.yaml dvc.lock && dvc checkout -q")

    def check(s):
        needed = {digest for commit in s.history("--all") for digest in s.outs(s.lock(commit)).values()}
        stored = {p.parent.name + p.name for p in (cache_dir(s.repo) / "files" / "md5").glob("*/*")}
        return [
            criterion(needed <= stored, "every version a commit needs is still in the cache",
                      f"{len(needed - stored)} version(s) gone: gc's flags decide what counts as used "
                      "(dvc pull gets pushed ones back)"),
            criterion(not stored - needed, "nothing is left that no commit needs",
                      f"{len(stored - needed)} cached file(s) no commit uses"),
            criterion(s.dvc_clean() and s.on_disk(), "the working tree's files are all there",
                      "dvc status says what is missing"),
        ]
    return setup, check


@exercise(8, "share-with-a-classmate", "Push to a remote, pull into a classmate's clone")
def _():
    def setup(s):
        s.sh("dvc push -q && git clone -q . ../classmate && cd ../classmate && dvc pull -q")
        s.sh("sed -i 's/n_estimators: 100/n_estimators: 50/' params.yaml && dvc repro -q && "
             "git commit -qam 'Fifty trees'")

    def check(s):
        remote, classmate = s.repo.parent / "storage", s.repo.parent / "classmate"
        wanted = s.outs(s.lock("main"))
        return [
            criterion(all(stored(remote, d).is_file() for d in wanted.values()),
                      "the remote holds every file main's dvc.lock names",
                      "your cache has them; the remote does not yet"),
            criterion(s.git("rev-parse HEAD", cwd=classmate) == s.rev("main"),
                      "the classmate's clone is at your latest commit", "git, in their clone, can fetch it"),
            criterion(s.on_disk("HEAD", root=classmate) and s.dvc_clean(cwd=classmate),
                      "the classmate has that commit's data and model, byte for byte",
                      "dvc status, in their clone, says what they lack"),
        ]
    return setup, check


@exercise(9, "merge-conflict", "Resolve a dvc.lock merge conflict")
def _():
    def setup(s):
        s.sh("git checkout -q -b alice && sed -i 's/test_size: 0.2 /test_size: 0.25/' params.yaml && "
             "dvc repro -q && git commit -qam 'Hold out a quarter'", env=CLASSMATE)
        s.sh("git checkout -q main && dvc checkout -q && "
             "sed -i 's/n_estimators: 100/n_estimators: 50/' params.yaml && dvc repro -q && "
             "git commit -qam 'Fifty trees'")
        merge = s.sh("git merge alice", check=False)
        if "CONFLICT (content): Merge conflict in dvc.lock" not in merge.stdout:
            raise CourseError(f"the merge did not conflict in dvc.lock:\n{merge.stdout}{merge.stderr}")

    def check(s):
        parents = s.git("log -1 --format=%P HEAD").split()
        params = s.params()
        return [
            criterion(sorted(parents) == sorted([s.start(), s.rev("alice") or ""]),
                      "the merge of alice into main is committed", "git commit ends a merge"),
            criterion(dig(params, "process", "test_size") == 0.25
                      and dig(params, "train", "random_forest", "n_estimators") == 50,
                      "params.yaml has both changes", "git merged params.yaml cleanly: keep both"),
            criterion(s.reproduces("HEAD") is None and s.dvc_clean() and s.on_disk() and s.git_clean(),
                      "dvc.lock, committed, describes the merged parameters and the files",
                      "neither side's dvc.lock was made with the merged parameters: a fresh run of the merge "
                      "does not make what it records"),
        ]
    return setup, check


@exercise(10, "add-a-stage", "Add a stage of your own", adds_a_stage=True)
def _():
    def setup(s):
        pass

    def check(s):
        spec = s._yaml("dvc.yaml", "HEAD")
        ours = {"get_data", "process_data", "train_model", "evaluate"}
        stages = spec.get("stages") if isinstance(spec.get("stages"), dict) else {}
        new = {name: stage for name, stage in stages.items() if name not in ours and isinstance(stage, dict)}
        split = {"data/processed/train.csv", "data/processed/test.csv"}

        def paths(stage, key):
            return {str(p) for p in stage.get(key) or [] if isinstance(p, str)}

        def notebook(stage):
            cmd = stage.get("cmd")
            return cmd.split()[-1] if isinstance(cmd, str) and RUNNER.fullmatch(cmd.strip()) else None

        between = [n for n, st in new.items() if paths(st, "deps") & split]
        runs = [n for n, st in new.items() if notebook(st) and notebook(st) in paths(st, "deps")]
        reports = [n for n, st in new.items() if notebook(st)
                   and f"reports/{Path(notebook(st)).name}" in paths(st, "outs")
                   and paths(st, "outs") - {f"reports/{Path(notebook(st)).name}"}]
        locked = s.lock("HEAD").get("stages", {})
        why = s.reproduces("HEAD")
        return [
            criterion(new, "dvc.yaml, committed, has a stage of yours", "dvc stage add, then commit"),
            criterion(between, "it comes after process_data: it reads the processed training or test set",
                      "a stage's -d lists what it reads"),
            criterion(runs, "its command runs its own notebook: dataops-run notebooks/NAME.ipynb, "
                      "with the notebook as a dependency", "as every stage in dvc.yaml does"),
            criterion(reports, "it declares its executed notebook in reports/ and an output of its own",
                      "a stage's -o lists what it writes; dataops-run writes reports/NAME.ipynb"),
            criterion(new and all(name in locked for name in new) and why is None and s.dvc_clean()
                      and s.on_disk("HEAD") and s.git_clean(),
                      "it ran, and dvc.lock, committed, records what a fresh run makes",
                      s.stale() or why or "commit what dvc repro recorded"),
        ]
    return setup, check


def registry(s, artifact: str = "classifier") -> tuple:
    """({version: commit}, {n: (stage, commit)}) of ARTIFACT, read from GTO's tags (lesson 9)."""
    versions, stages = {}, {}
    refs = s.git("for-each-ref --format='%(refname:strip=2) %(*objectname) %(objectname)' refs/tags", check=False)
    for line in refs.splitlines():
        name, *objects = line.split()
        commit = objects[0]  # the peeled commit of an annotated tag, else the tag's own object
        version = re.fullmatch(rf"{re.escape(artifact)}@(v[\w.+-]+)", name)
        stage = re.fullmatch(rf"{re.escape(artifact)}#([\w-]+)#(\d+)", name)
        if version:
            versions[version.group(1)] = commit
        elif stage:
            stages[int(stage.group(2))] = (stage.group(1), commit)
    return versions, stages


SCENE_VERSIONS = ["v2.0.0", "v2.1.0", "v2.2.0"]


@exercise(11, "promote-the-best", "Promote the best of three versions to prod, then roll back", lesson=9)
def _():
    def setup(s):
        for bump, edit, message in [
                ("--bump-major", "s/^  model: .*/  model: logistic_regression/; "
                 "/logistic_regression:/,/max_iter/ s/C: [0-9.e-]*/C: 0.01/", "Logistic regression, C 0.01"),
                ("--bump-minor", "s/^  model: .*/  model: svc/; s/kernel: rbf/kernel: sigmoid/",
                 "An SVM, sigmoid kernel"),
                ("--bump-minor", "s/kernel: sigmoid/kernel: rbf/", "An SVM, RBF kernel")]:
            s.sh(f"sed -i -e '{edit}' params.yaml && dvc repro -q && git commit -qam '{message}' && "
                 f"gto register classifier {bump}")
        s.sh(f"gto assign classifier --version {SCENE_VERSIONS[0]} --stage prod")

    def check(s):
        versions, stages = registry(s)
        prod = sorted((n, commit) for n, (stage, commit) in stages.items() if stage == "prod")
        scene_n = min((n for n, commit in prod if commit == versions.get(SCENE_VERSIONS[0])), default=None)
        ours = [(n, commit) for n, commit in prod if scene_n is not None and n > scene_n]
        scores = {v: accuracy(s.reproduced_metrics(versions[v])) for v in SCENE_VERSIONS if v in versions}
        best = max((a for a in scores.values() if a is not None), default=None)
        promoted = [n for n, commit in ours if commit != versions.get(SCENE_VERSIONS[0]) and best is not None
                    and scores.get(next((v for v, c in versions.items() if c == commit), ""), None) == best]
        return [
            criterion(all(versions.get(v) == s.rev(f"{s.start()}~{2 - i}") for i, v in enumerate(SCENE_VERSIONS))
                      and all(a is not None for a in scores.values()),
                      f"the scene's versions {', '.join(SCENE_VERSIONS)} are registered and each reproduces",
                      "gto show lists them; a version's tag must stay on the commit that made it"),
            criterion(promoted, "after the scene, prod was assigned the version with the best test accuracy",
                      "compare the versions' metrics: dvc metrics diff TAG1 TAG2 (a version's tag is a git tag)"),
            criterion(promoted and ours and ours[-1][1] == versions.get(SCENE_VERSIONS[0]) and ours[-1][0] >
                      promoted[0], f"then prod was rolled back: its latest assignment is {SCENE_VERSIONS[0]} again",
                      "a rollback is one more gto assign (with --force where GTO asks for it)"),
            criterion(s.dvc_clean() and s.git_clean(), "the working tree is clean and DVC up to date",
                      s.stale()),
        ]
    return setup, check


@exercise(12, "review-a-branch", "Review a branch, and record the verdict", lesson=10)
def _():
    def setup(s):
        s.sh("git checkout -q -b candidate && sed -i -e 's/^  model: .*/  model: svc/' "
             "-e 's/kernel: rbf/kernel: sigmoid/' params.yaml && "
             "dvc repro -q && git commit -qam 'An SVM with a sigmoid kernel: a smaller model than a forest' && "
             "git checkout -q main && dvc checkout -q", env=CLASSMATE)

    def check(s):
        start, candidate = s.start(), s.rev("candidate")
        line = re.search(r"^candidate: (merged|rejected)\b(.*)$", s.show("HEAD", "reviews.md") or "", re.M)
        base, theirs = accuracy(s.reproduced_metrics(start)), accuracy(s.reproduced_metrics(candidate or start))
        right = None if base is None or theirs is None else ("merged" if theirs >= base else "rejected")
        merged = bool(candidate) and s.sh(f"git merge-base --is-ancestor {candidate} HEAD", check=False).returncode == 0
        numbers = re.findall(r"\d+\.\d+|\b[01]\b", line.group(2)) if line else []
        shown = {str(float(format(a, ".6g"))) for a in (base, theirs) if a is not None}
        return [
            criterion(candidate and candidate != start and s.reproduces(candidate) is None,
                      "the branch candidate is still there, and reproduces", "git log candidate"),
            criterion(line and start in s.history("HEAD"), "reviews.md, committed on main, has the line "
                      "candidate: merged (or rejected), then the test accuracy of main and of candidate",
                      "the task says what the line looks like"),
            criterion(line and line.group(1) == right, "the verdict follows the test accuracy",
                      "make review BASE=main REV=candidate shows what the branch does to it"),
            criterion(line and shown and shown <= {str(float(n)) for n in numbers},
                      "the line gives both accuracies as the review shows them", "copy them from the report"),
            criterion(line and merged == (line.group(1) == "merged"), "main holds candidate's commit only "
                      "if the verdict is merged", "git merge candidate merges it; a rejected branch stays out"),
            criterion(s.dvc_clean() and s.git_clean() and s.on_disk(), "the working tree is main's, committed, "
                      "and DVC up to date", s.stale()),
        ]
    return setup, check


# ---------------------------------------------------------------------------

def folder_of(number: int, exercises: Path) -> Path:
    spec = EXERCISES[number]
    return exercises / f"{number:02d}-{spec['slug']}"


def start(number: int, course: Path = DEFAULT_FOLDER, exercises: Path = DEFAULT_EXERCISES, say=print) -> Path:
    spec = EXERCISES[number]
    source = course.resolve() / "repo"
    if not (source / ".git").is_dir() or not tags(source):
        raise CourseError(f"no course in {course}: build it first (make course, about 75 s)")
    folder = folder_of(number, exercises.resolve())
    if folder.exists():
        n = 1
        while folder.with_name(f"{folder.name}.attempt-{n}").exists():
            n += 1
        folder.rename(folder.with_name(f"{folder.name}.attempt-{n}"))
        say(f"Your earlier attempt is kept, untouched, in {folder.name}.attempt-{n}/")
    repo = folder / "repo"
    tag = tags(source)[spec["lesson"]]
    s = Scene(repo, {**student_env(WORKSPACE), **AUTHOR})
    s.git(f"clone -q --branch {tag} {source} {repo}", cwd=source)
    s.git("checkout -q -B main && git remote remove origin")
    # The course's cache, copied (never linked: exercise 6 damages a file in it).
    shutil.copytree(source / ".dvc" / "cache" / "files", repo / ".dvc" / "cache" / "files")
    if (source / ".dvc" / "cache" / "runs").is_dir():
        shutil.copytree(source / ".dvc" / "cache" / "runs", repo / ".dvc" / "cache" / "runs")
    (repo / ".venv").symlink_to(Path(sys.prefix))
    from dataops_kit.install import install_workspace

    install_workspace(repo)
    s.sh("dvc checkout -q")
    for tag in later_registry_tags(repo, "HEAD"):  # a later lesson's registry (lesson 9) is not this scene's
        s.git(f"tag -d '{tag}'")
    spec["setup"](s)
    (repo / ".git" / MARKER).write_text(json.dumps({"exercise": number, "start": s.rev("HEAD")}) + "\n")
    say(f"Exercise {number}, {spec['title']}: set up in {repo}")
    say(f"  cd {repo}   # the task: docs/exercises.md, exercise {number}")
    say(f"  make check {number}   # when you think you are done (from there or from the workspace)")
    return repo


def _recorded(repo: Path):
    """The exercise number the scenario's marker records, or None (missing, damaged, another kind of file)."""
    try:
        data = json.loads((repo / ".git" / MARKER).read_text())
        return data["exercise"] if isinstance(data, dict) and isinstance(data.get("start"), str) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def results(number: int, repo: Path) -> list:
    """Exercise NUMBER's criteria on the scenario in REPO, as (ok, label, hint), never a traceback."""
    if _recorded(repo) != number:
        raise CourseError(f"{repo} is not exercise {number}'s scenario (or its record in .git is damaged): "
                          f"set it up with make exercise {number}")
    scene = Scene(repo)
    scene.grading = True
    try:
        return graded(number, scene)
    except Exception as error:  # a state no criterion foresaw: a line, never a traceback
        return [criterion(False, "the scenario can be read",
                          f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                          f"(git status and dvc status say what is wrong)")]
    finally:
        scene.cleanup()


def report(number: int, found: list) -> list:
    """The ✓ and ✗ lines (with hints) of FOUND, and the closing line."""
    lines = [f"✓ {label}" if ok else f"✗ {label}\n    hint: {hint}" for ok, label, hint in found]
    passed = sum(ok for ok, _, _ in found)
    return lines + [f"Exercise {number}: {passed} of {len(found)} criteria met." +
                    (" Well done." if passed == len(found) else "")]


def check(number: int, repo: Path, say=print) -> bool:
    """Grade the scenario in REPO: one ✓ or ✗ line per criterion, never a traceback."""
    found = results(number, repo)
    for line in report(number, found):
        say(line)
    return all(ok for ok, _, _ in found)


def criteria(number: int) -> list:
    """The labels of exercise NUMBER's criteria, as its page lists them (read off a scene with nothing in it)."""
    with tempfile.TemporaryDirectory() as empty:
        scene = Scene(Path(empty))
        scene.grading, scene.start = True, lambda: "0" * 40
        try:
            return [label for _, label, _ in graded(number, scene)]
        finally:
            scene.cleanup()


def where(number: int, exercises: Path) -> Path:
    """The scenario to check: the current repository if it is exercise NUMBER's, else its usual folder."""
    here = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True).stdout.strip()
                or ".")
    if _recorded(here) == number:
        return here
    return folder_of(number, exercises.resolve()) / "repo"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataops_kit.teach.exercises", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "check", "list"])
    parser.add_argument("number", nargs="?", type=int)
    parser.add_argument("--course", type=Path, default=Path(os.environ.get("COURSE") or DEFAULT_FOLDER))
    parser.add_argument("--exercises", type=Path, default=Path(os.environ.get("EXERCISES") or DEFAULT_EXERCISES))
    args = parser.parse_args(argv)
    if args.command == "list" or args.number not in EXERCISES:
        if args.command != "list":
            print(f"✗ which exercise? one of {min(EXERCISES)} to {max(EXERCISES)}: make {args.command} 3",
                  file=sys.stderr)
        for number, spec in EXERCISES.items():
            print(f"{number:>2}. {spec['title']}")
        return 0 if args.command == "list" else 1
    try:
        if args.command == "start":
            start(args.number, args.course, args.exercises)
            return 0
        return 0 if check(args.number, where(args.number, args.exercises)) else 1
    except CourseError as error:
        print(f"✗ {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
