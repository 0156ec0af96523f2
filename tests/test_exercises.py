"""The graded exercises: every checker on the unsolved scene, on a plausible
wrong answer, and on the reference solution of docs/exercises.md, in scenes
set up by `make exercise N` from a built course. And the hand-out without
the solutions."""

import re
import shutil
import time

import pytest

from dataops_kit.teach.course import blocks, unmet
from dataops_kit.teach.exercises import EXERCISES, folder_of
from helpers import REPO, run

DOC = REPO / "docs" / "instructors" / "solutions.md"  # the solutions, checked by running them
STUDENTS_PAGE = REPO / "docs" / "exercises.md"
STUDENT = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "student@example.invalid",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "student@example.invalid"}

# What the unsolved scene fails on, then plausible wrong answers, and cheats,
# each with the criterion it must fail (and that criterion's hint).
CASES = {
    1: ("test accuracy fell by at least 0.05", [
        ("""sed -i 's/"accuracy": 1.0/"accuracy": 0.5/' reports/metrics.json""",
         "the data, model and metrics are what a fresh run of the pipeline makes"),
        # Cheat: a knob no stage reads, the metrics edited by hand, then recorded as if made.
        ("sed -i 's/cell_timeout: 600/cell_timeout: 601/' params.yaml && "
         """sed -i 's/"accuracy": 1.0/"accuracy": 0.5/' reports/metrics.json && dvc commit -f -q""",
         "the data, model and metrics are what a fresh run of the pipeline makes"),
        # Another way: a helper edited besides a knob (the result must come from the knobs).
        ("sed -i 's/n_estimators: 100/n_estimators: 99/' params.yaml && echo '# tuned' >> src/dataops/__init__.py && "
         "dvc repro -q", "notebooks, src/dataops and dvc.yaml are as the exercise set them")]),
    2: ("at least 3 experiments on top of the starting commit", [
        ("dvc exp run -q --temp -n forest -S train.model=random_forest && dvc exp apply forest && "
         "git commit -qam 'One try'", "at least 3 experiments on top of the starting commit"),
        # Cheat: three experiment refs forged onto an empty commit, no experiment run.
        ("start=$(git rev-parse HEAD) && git commit -q --allow-empty -m 'Best of the grid' && "
         "for n in 1 2 3; do git update-ref refs/exps/${start:0:2}/${start:2}/fake$n HEAD; done",
         "at least 3 experiments on top of the starting commit")]),
    3: ("../previous-model.skops exists", [
        ("cp models/model.skops ../previous-model.skops",
         "it is the model of the commit before the classmate's")]),
    4: ("a tag changed-training-data exists", [
        ("git tag changed-training-data HEAD",
         "in that commit, data/processed/train.csv differs from its parent's")]),
    5: ("notebooks/04_evaluate.ipynb is the last good version", [
        ("git checkout notebooks/04_evaluate.ipynb && dvc repro --force",
         "the failed run's notebook, with its error, is still in reports/failed/")]),
    6: ("every cached version has the md5 it is named after", [
        # Delete every cached file whose bytes do not match its name.
        ('for f in $(find .dvc/cache/files -type f); do d=$(basename "$(dirname "$f")")$(basename "$f"); '
         '[ "$(md5sum < "$f" | cut -c1-32)" = "$d" ] || rm -f "$f"; done',
         "every version a commit on main needs is in the cache")]),
    7: ("nothing is left that no commit needs", [
        ("dvc gc --workspace --force", "every version a commit needs is still in the cache")]),
    8: ("the classmate's clone is at your latest commit", [
        ("cd ../classmate && git pull -q && dvc pull", "the remote holds every file main's dvc.lock names")]),
    9: ("the merge of alice into main is committed", [
        ("git checkout --theirs dvc.lock && git add dvc.lock && git commit -q --no-edit",
         "dvc.lock, committed, describes the merged parameters and the files"),
        # Cheat: one side's lock recorded over the other side's files, no rerun.
        ("git checkout --ours dvc.lock && dvc commit -f -q && git add -A && git commit -q --no-edit",
         "dvc.lock, committed, describes the merged parameters and the files")]),
    10: ("dvc.yaml, committed, has a stage of yours", [
        ("dvc stage add -n copy_raw -d data/raw/dataset.csv -o data/features/raw.csv "
         "'mkdir -p data/features && cp data/raw/dataset.csv data/features/raw.csv' && dvc repro -q && "
         "git add -A && git commit -qm 'A stage of mine'", "it comes after process_data"),
        # Cheat: a stage whose command runs nothing, its output copied by hand and recorded.
        ("dvc stage add -q -n scale_features -d data/processed/train.csv -o data/features/train.csv 'echo done' && "
         "mkdir -p data/features && cp data/processed/train.csv data/features/train.csv && "
         "dvc commit -f -q scale_features && git add -A && git commit -qm 'Scaled'",
         "its command runs its own notebook"),
        # An existing stage changed on the way.
        ("sed -i 's|cmd: dataops-run notebooks/04_evaluate.ipynb|cmd: dataops-run  notebooks/04_evaluate.ipynb|' "
         "dvc.yaml && git commit -qam 'Mine'", "the notebooks, src/dataops and the stages in dvc.yaml are as the "
         "exercise set them")]),
    11: ("after the scene, prod was assigned the version with the best test accuracy", [
        # The latest version promoted, unread.
        ("gto assign classifier --version v2.1.0 --stage prod",
         "after the scene, prod was assigned the version with the best test accuracy"),
        # The best promoted, never rolled back.
        ("gto assign classifier --version v2.2.0 --stage prod", "then prod was rolled back"),
        # Cheat: v2.0.0's tag moved onto the best model's commit.
        ("git tag -f -a classifier@v2.0.0 -m moved HEAD",
         "the scene's versions v2.0.0, v2.1.0, v2.2.0 are registered and each reproduces")]),
    12: ("reviews.md, committed on main, has the line", [
        # Merged unread.
        ("git merge -q candidate && dvc checkout -q && echo 'candidate: merged 1.0 1.0' > reviews.md && "
         "git add reviews.md && git commit -qm review", "the verdict follows the test accuracy"),
        # The right verdict, numbers made up.
        ("echo 'candidate: rejected 0.99 0.5' > reviews.md && git add reviews.md && git commit -qm review",
         "the line gives both accuracies as the review shows them")]),
}


def solutions():
    """{exercise number: [(line, commands, expects)]} from docs/instructors/solutions.md."""
    text, found = DOC.read_text(), {}
    starts = [(m.start(), int(m.group(1))) for m in re.finditer(r"^## (\d+)\. ", text, re.MULTILINE)]
    for (begin, number), (end, _) in zip(starts, starts[1:] + [(len(text), None)]):
        offset = text[:begin].count("\n")
        found[number] = [(offset + line, commands, expects) for line, commands, expects in blocks(text[begin:end])]
    return found


def test_every_exercise_has_a_task_a_checked_solution_and_a_case():
    found = solutions()
    assert sorted(found) == sorted(EXERCISES) == sorted(CASES) and len(EXERCISES) >= 10
    for number, parsed in found.items():
        assert parsed and all(expects for _, _, expects in parsed), number


def grade(number, cwd, course_folder, exercises):
    result = run(["make", "--no-print-directory", "check", str(number), f"COURSE={course_folder}",
                  f"EXERCISES={exercises}"], cwd=cwd, check=False)
    return result.returncode, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(CASES))
def test_checker_fails_unsolved_and_wrong_and_passes_the_solution(number, course, tmp_path):
    workspace, folder = course
    exercises = tmp_path / "exercises"
    start = ["make", "--no-print-directory", "exercise", str(number), f"COURSE={folder}", f"EXERCISES={exercises}"]
    repo = folder_of(number, exercises) / "repo"
    unsolved_label, wrong_answers = CASES[number]

    began = time.perf_counter()
    assert str(repo) in run(start, cwd=workspace).stdout
    set_up = time.perf_counter() - began
    scene, pristine = repo.parent, tmp_path / "pristine"
    shutil.copytree(scene, pristine, symlinks=True)  # the scene as set up, for each answer
    code, unsolved = grade(number, workspace, folder, exercises)  # graded from the workspace
    assert code != 0 and f"✗ {unsolved_label}" in unsolved, unsolved
    assert "✓" in unsolved or number in (3, 4, 8, 9, 10), unsolved

    graded = []
    for wrong_answer, wrong_label in wrong_answers:
        shutil.rmtree(scene)
        shutil.copytree(pristine, scene, symlinks=True)
        run(wrong_answer, cwd=repo, check=False, env=STUDENT)
        code, wrong = grade(number, repo, folder, exercises)  # graded from inside the scene
        assert code != 0 and f"✗ {wrong_label}" in wrong, f"{wrong_answer}\n{wrong}"
        hint = wrong.split(f"✗ {wrong_label}", 1)[1].splitlines()[1]
        assert hint.startswith("    hint: "), wrong
        graded.append(wrong)

    if number == 1:  # set up again: the attempt is kept, and the solution holds in the new scene
        again = run(start, cwd=workspace).stdout
        assert f"{scene.name}.attempt-1/" in again and (scene.parent / f"{scene.name}.attempt-1").is_dir()
    else:  # the same scene, as it was set up (a second set-up costs seconds that prove nothing new)
        shutil.rmtree(scene)
        pristine.rename(scene)
    began = time.perf_counter()
    for line, commands, expects in solutions()[number]:
        result = run(["bash", "-eo", "pipefail", "-c", commands], cwd=repo, check=False,
                     env={**STUDENT, "HOME": str(tmp_path), "COLUMNS": "200"})
        where = f"docs/instructors/solutions.md:{line}\n$ {commands}\n{result.stdout}{result.stderr}"
        assert result.returncode == 0 and not unmet(result.stdout + result.stderr, expects), where
    solved_in = time.perf_counter() - began
    began = time.perf_counter()
    code, solved = grade(number, repo, folder, exercises)
    checked_in = time.perf_counter() - began
    assert code == 0 and "✗" not in solved and "Well done." in solved, solved
    print(f"exercise {number}: set-up {set_up:.1f} s, reference solution {solved_in:.1f} s, "
          f"make check {checked_in:.1f} s\nunsolved:\n{unsolved}\nwrong answers:\n{graded}\nsolution:\n{solved}")


def test_the_students_page_has_every_exercise_and_no_solution():
    student, solved = STUDENTS_PAGE.read_text(), DOC.read_text()
    assert "Solution" not in student and "solution" not in student.lower().replace("solutions", "") \
        and "Expect" not in student
    headings = [line for line in student.splitlines() if line.startswith("## ")]
    assert len(headings) >= 10
    assert headings[:len(EXERCISES)] == [line for line in solved.splitlines() if line.startswith("## ")]
    links = re.findall(r"\]\(([^)#]+)\)", student)
    assert links and all((STUDENTS_PAGE.parent / link).is_file() for link in links), links
