"""The course (docs/lessons/, dataops_kit.teach.course): built from an empty
folder by running the lesson pages, every tag reproduced in a fresh clone,
catch-up that loses nothing, and what an instructor publishes for a class."""

import re
import shutil

import pytest
import yaml

from dataops_kit.teach.course import blocks, lessons, tags
from helpers import REPO, locked_md5, md5, run

LESSONS = lessons(REPO / "docs" / "lessons")


REGISTRY = ["classifier#dev#1", "classifier#prod#2", "classifier#prod#3", "classifier#prod#4",
            "classifier@v1.0.0", "classifier@v1.1.0"]  # lesson 9's, as `git tag` sorts them


def test_every_lesson_page_says_what_to_type_what_to_expect_and_why():
    assert len(LESSONS) >= 8
    assert [lesson.number for lesson in LESSONS] == list(range(len(LESSONS)))
    for lesson in LESSONS:
        parsed = blocks(lesson.text)
        assert parsed, lesson
        assert [line for line, _, expects in parsed if not expects] == [], lesson
        why = re.search(r"^\*\*Why\.\*\* (.+?)(?:\n\n|\Z)", lesson.text, re.MULTILINE | re.DOTALL)
        assert why and 2 <= len(re.findall(r"[.!?](?:\s|$)", why.group(1))) <= 3, lesson
        if lesson.number:
            assert f"`make catch-up LESSON={lesson.number}`" in lesson.text, lesson
        # The student types the tag that catch-up and the exercises find (the build checks it is made).
        assert parsed[-1][1].startswith(f"git tag -a {lesson.tag} -m "), lesson
    # `git tag` sorts by name: the names must sort in lesson order.
    assert sorted(lesson.tag for lesson in LESSONS) == [lesson.tag for lesson in LESSONS]
    # The lessons' index leads to every lesson, under its tag.
    index = (REPO / "docs" / "lessons" / "README.md").read_text()
    for lesson in LESSONS:
        assert f"({lesson.path.name}) | `{lesson.tag}` |" in index, lesson


def test_the_lessons_run_the_tutorials_whole_command_tour():
    run_by_the_build = "\n".join(commands for lesson in LESSONS for _, commands, _ in blocks(lesson.text))
    for command in ["git init", "dvc init", "dvc stage add", "dvc repro", "dvc dag", "dvc list . --dvc-only -R",
                    "dvc cache dir", "dvc diff\n", "dvc diff HEAD~1 HEAD", "dvc params diff", "dvc metrics diff",
                    "dvc metrics show", "dvc plots show", "git checkout -q HEAD~1\ndvc checkout", "dvc exp run",
                    "dvc exp apply", "dvc remote add", "dvc push", "dvc pull", "dvc gc --all-commits"]:
        assert command in run_by_the_build, command


@pytest.mark.slow
def test_the_lessons_build_the_workspace_pipeline(course):
    workspace, folder = course
    repo = folder / "repo"
    assert list(tags(repo).values()) == [lesson.tag for lesson in LESSONS]
    assert run("git tag", cwd=repo).stdout.split() == REGISTRY + [lesson.tag for lesson in LESSONS]
    # Lesson 9's registry, as gto reads it: prod rolled back to v1.0.0, which is lesson 8's model.
    shown = run("gto show", cwd=repo).stdout
    assert re.search(r"│ classifier\s+│ v1\.1\.0\s+│ v1\.0\.0\s+│ v1\.0\.0\s+│", shown), shown
    v1 = run("git show classifier@v1.0.0:dvc.lock", cwd=repo).stdout
    assert locked_md5(repo, "models/model.skops", v1) == locked_md5(
        repo, "models/model.skops", run("git show lesson-08-share-and-clean-up:dvc.lock", cwd=repo).stdout)
    for lesson in LESSONS:  # annotated, with the page's title
        assert run(f"git cat-file -t {lesson.tag}", cwd=repo).stdout.strip() == "tag"
        assert lesson.title in run(f"git tag -n1 {lesson.tag}", cwd=repo).stdout
    # The stages students typed are the workspace's, key for key (its desc lines
    # aside; `dvc stage add` sorts deps and outs).
    ours, theirs = (yaml.safe_load((root / "dvc.yaml").read_text()) for root in (workspace, repo))
    for spec in (ours, theirs):
        for stage in spec["stages"].values():
            stage.pop("desc", None)
            stage.update({key: sorted(value) for key, value in stage.items() if isinstance(value, list)})
    assert theirs == ours
    # One source: the course's notebooks, helpers and parameters are the workspace's
    # (parameters as lesson 1 copied them: lesson 7 commits an experiment's).
    for name in run("git ls-files notebooks src", cwd=repo).stdout.split():
        assert run(f"git show HEAD:{name}", cwd=repo).stdout == run(f"git show HEAD:{name}", cwd=workspace).stdout, name
    assert run("git show lesson-01-get-data:params.yaml", cwd=repo).stdout == (workspace / "params.yaml").read_text()
    log = run("git log --format=%s", cwd=repo).stdout.splitlines()
    assert log[-1] == "Start a DVC project" and len(log) == len(LESSONS) + 2  # lesson 9 commits twice


@pytest.mark.slow
def test_every_tag_reproduces_its_dvc_lock_in_a_fresh_clone(course):
    workspace, folder = course
    result = run(["make", "--no-print-directory", "course-verify", f"COURSE={folder}"], cwd=workspace)
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("lesson-")]
    assert [row[0] for row in rows] == [lesson.tag for lesson in LESSONS]
    for row in rows[1:]:
        assert row[3:5] == ["yes", "yes"], row  # dvc.lock identical, git and DVC clean
    assert rows[0][3:] [:3] == ["(no", "dvc.lock)", "yes"]
    assert sum(int(row[1]) for row in rows) >= 4  # every stage really ran at least once
    # The model version that is no lesson's commit (lesson 9's v1.0.0) is reproduced too.
    versions = [line.split() for line in result.stdout.splitlines() if line.startswith("classifier@")]
    assert [row[0] for row in versions] == ["classifier@v1.0.0"] and versions[0][3:5] == ["yes", "yes"], versions


def student_clone(folder, destination):
    """A student's clone of the built course, DVC cache included, sharing the workspace venv."""
    shutil.copytree(folder / "repo", destination, symlinks=True)
    return destination


@pytest.mark.slow
def test_catch_up_keeps_commits_changes_and_unsaved_outputs(course, tmp_path):
    workspace, folder = course
    repo = student_clone(folder, folder / "student")
    env = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.invalid",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.invalid"}
    run("sed -i 's/n_estimators: 100/n_estimators: 20/' params.yaml && dvc repro -q && "
        "git commit -qam 'My smaller forest'", cwd=repo, env=env)
    run("sed -i 's/max_depth: 3/max_depth: 2/' params.yaml && echo 'my notes' > notes.txt && "
        "echo '9,9,9,9,0' >> data/raw/dataset.csv", cwd=repo)
    edited_data = (repo / "data/raw/dataset.csv").read_text()

    caught = run("make --no-print-directory catch-up LESSON=3", cwd=repo, env=env)
    print(caught.stdout)
    assert run("git rev-parse HEAD", cwd=repo).stdout == run("git rev-parse lesson-02-process-data^{}", cwd=repo).stdout
    assert run("git branch --show-current", cwd=repo).stdout.strip() == "main"
    # The commit: on the branch the command named.
    assert "branch my-work-before-lesson-03" in caught.stdout
    assert run("git log -1 --format=%s my-work-before-lesson-03", cwd=repo).stdout.strip() == "My smaller forest"
    # The uncommitted change and the new file: in the stash it named.
    assert 'stash@{0} "catch-up to lesson 3: uncommitted work"' in caught.stdout
    assert "max_depth: 2" in run("git stash show -p stash@{0}", cwd=repo).stdout
    assert run("git show 'stash@{0}^3:notes.txt'", cwd=repo).stdout == "my notes\n"
    # The hand-edited data, which DVC never saved: copied where it said.
    assert "saved-work/before-lesson-03/" in caught.stdout
    assert (repo / "saved-work/before-lesson-03/data/raw/dataset.csv").read_text() == edited_data
    # And the lesson's start, exactly as its tag records it.
    assert run("git status --porcelain", cwd=repo).stdout == ""
    assert "up to date" in run("dvc status", cwd=repo).stdout
    for out in ("data/raw/dataset.csv", "data/processed/train.csv"):
        assert md5(repo / out) == locked_md5(repo, out)
    # Exactly lesson 3's start: no later lesson's outputs left behind (DVC's cache holds them).
    assert not (repo / "models").exists() and not (repo / "reports/04_evaluate.ipynb").exists()
    # Nor lesson 9's registry, which retyping lesson 9 makes again: set aside, and said.
    assert "registry tags of later lessons (classifier" in caught.stdout
    assert run("git tag --list 'classifier*'", cwd=repo).stdout == ""
    assert len(run("git for-each-ref refs/kept-tags/before-lesson-03", cwd=repo).stdout.splitlines()) == 6

    # Forward again, to the end of the course: nothing of the student's is in the way now.
    again = run(f"make --no-print-directory catch-up LESSON={len(LESSONS)}", cwd=repo, env=env)
    assert "Nothing of yours needed keeping" in again.stdout
    assert "registry tags put back, as this lesson has them: classifier" in again.stdout
    assert run("git tag --list 'classifier*'", cwd=repo).stdout.split() == REGISTRY
    assert md5(repo / "models/model.skops") == locked_md5(repo, "models/model.skops")
    # The student's work comes back.
    run("git checkout -q my-work-before-lesson-03 && git stash pop -q && dvc checkout -q", cwd=repo)
    assert "max_depth: 2" in (repo / "params.yaml").read_text() and (repo / "notes.txt").exists()

    for lesson, message in [(0, "lesson 0 starts from an empty folder"), (99, "this course has lessons 1 to")]:
        refused = run(f"make --no-print-directory catch-up LESSON={lesson}", cwd=repo, check=False)
        assert refused.returncode and message in refused.stderr and "Traceback" not in refused.stderr


HOSTILE = {  # a state catch-up must refuse before it moves anything, and the line that names it
    "a merge in progress, dvc.yaml in conflict": (
        "git checkout -q -b theirs && echo '# theirs' >> dvc.yaml && git commit -qam theirs && "
        "git checkout -q main && echo '# mine' >> dvc.yaml && git commit -qam mine && "
        "! git merge -q theirs", "a merge is in progress"),
    "params.yaml in conflict (a stash popped)": (
        "sed -i 's/n_estimators: 100/n_estimators: 20/' params.yaml && git stash -q && "
        "sed -i 's/n_estimators: 100/n_estimators: 30/' params.yaml && git commit -qam thirty && "
        "! git stash pop -q", "params.yaml has merge conflicts"),
    "an immutable model file": ("chattr +i models/model.skops", "models/model.skops cannot be replaced"),
}


@pytest.mark.slow
@pytest.mark.parametrize("state", HOSTILE)
def test_catch_up_refuses_a_state_it_would_leave_mixed_and_moves_nothing(course, tmp_path, state):
    _, folder = course
    repo = student_clone(folder, tmp_path / "student")
    env = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "s@example.invalid",
           "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "s@example.invalid"}
    make_state, message = HOSTILE[state]
    if run(make_state, cwd=repo, env=env, check=False).returncode:
        pytest.skip(f"cannot make this state here: {make_state}")
    head, status = run("git rev-parse HEAD", cwd=repo).stdout, run("git status --porcelain", cwd=repo).stdout
    try:
        refused = run("make --no-print-directory catch-up LESSON=5", cwd=repo, env=env, check=False)
    finally:
        run("chattr -i models/model.skops", cwd=repo, check=False)
    assert refused.returncode and message in refused.stderr and "Nothing was moved" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr and refused.stderr.count("✗ ") == 1
    assert run("git rev-parse HEAD", cwd=repo).stdout == head
    assert run("git status --porcelain", cwd=repo).stdout == status


@pytest.mark.slow
def test_a_class_clones_the_published_course_and_pulls_any_lesson(course, tmp_path):
    workspace, folder = course
    published = tmp_path / "published"
    result = run(["make", "--no-print-directory", "course-publish", f"COURSE={folder}"], cwd=workspace)
    assert "Published" in result.stdout
    shutil.move(folder / "published", published)  # where the class finds it: the instructor's share
    student = tmp_path / "student"
    run(f"git clone -q {published / 'course.git'} {student}", cwd=tmp_path)
    (student / ".venv").symlink_to(workspace / ".venv")
    run(f"make --no-print-directory setup && dvc remote add --local -d class {published / 'storage'}", cwd=student)
    for lesson in LESSONS[1:]:
        run(f"git checkout -q {lesson.tag} && dvc pull -q", cwd=student)
        assert "up to date" in run("dvc status", cwd=student).stdout, lesson
        assert run("git status --porcelain", cwd=student).stdout == "", lesson
        lock = yaml.safe_load((student / "dvc.lock").read_text())
        for stage in lock["stages"].values():
            for out in stage["outs"]:
                assert md5(student / out["path"]) == out["md5"], (lesson, out["path"])
    # The registry travels with the course: its tags, and every version's model on the class remote.
    assert run("git tag --list 'classifier*'", cwd=student).stdout.split() == REGISTRY
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    run(f"dvc artifacts get {student} classifier --rev v1.1.0", cwd=deploy)
    assert md5(deploy / "model.skops") == locked_md5(
        student, "models/model.skops", run("git show classifier@v1.1.0:dvc.lock", cwd=student).stdout)
    # catch-up, in a class clone, gets a lesson's files from the class remote.
    (student / "data/raw/dataset.csv").unlink()
    shutil.rmtree(student / ".dvc" / "cache")
    caught = run("make --no-print-directory catch-up LESSON=5", cwd=student)
    assert "At the start of lesson 5" in caught.stdout
    assert md5(student / "models/model.skops") == locked_md5(student, "models/model.skops")

