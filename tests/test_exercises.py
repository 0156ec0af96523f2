"""The exercises hand out without their solutions."""

from helpers import REPO, run


def test_student_edition_has_every_exercise_and_no_solution(clone):
    run("make student-edition", cwd=clone)
    full = (REPO / "docs/exercises.md").read_text()
    student = (clone / "student-edition/exercises.md").read_text()
    assert full.count("<!-- solution -->") == full.count("<!-- end solution -->") >= 3
    assert "Solution" not in student and "<!-- solution -->" not in student
    assert [line for line in student.splitlines() if line.startswith("## ")] == \
           [line for line in full.splitlines() if line.startswith("## ")]
