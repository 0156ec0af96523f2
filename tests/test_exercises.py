"""The exercises hand out without their solutions (which tests/test_course.py runs)."""

import re

from helpers import REPO, run


def test_student_edition_has_every_exercise_and_no_solution(clone):
    run("make student-edition", cwd=clone)
    full = (REPO / "docs/exercises.md").read_text()
    student_path = clone / "student-edition/exercises.md"
    student = student_path.read_text()
    assert full.count("<!-- solution -->") == full.count("<!-- end solution -->") >= 3
    assert "Solution" not in student and "solution -->" not in student
    assert "Instructors" not in student and "instructors -->" not in student
    assert [line for line in student.splitlines() if line.startswith("## ")] == \
           [line for line in full.splitlines() if line.startswith("## ")]
    links = re.findall(r"\]\(([^)#]+)\)", student)
    assert links and all((student_path.parent / link).is_file() for link in links), links
