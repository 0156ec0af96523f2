"""docs/walkthrough.md is executable: every `sh` block runs in order on a
fresh clone, and every Expect line is checked against what it printed."""

import re

from helpers import REPO, run

WALKTHROUGH = REPO / "docs" / "walkthrough.md"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Student", "GIT_AUTHOR_EMAIL": "student@example.invalid",
                "GIT_COMMITTER_NAME": "Student", "GIT_COMMITTER_EMAIL": "student@example.invalid"}


def blocks(text: str):
    """(line number, commands, [(kind, expected)]) for each `sh` block, in order."""
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


def test_every_walkthrough_block_states_what_to_expect():
    parsed = blocks(WALKTHROUGH.read_text())
    assert len(parsed) >= 15
    assert [line for line, _, expects in parsed if not expects] == []


def test_walkthrough_runs_top_to_bottom_on_a_fresh_clone(clone):
    for line, commands, expects in blocks(WALKTHROUGH.read_text()):
        result = run(["bash", "-eo", "pipefail", "-c", commands], cwd=clone, check=False, env=GIT_IDENTITY)
        output = result.stdout + result.stderr
        where = f"docs/walkthrough.md:{line}\n$ {commands}\n{output}"
        assert result.returncode == 0, where
        for kind, expected in expects:
            if kind == "line":
                assert expected in output, f"expected {expected!r} at {where}"
            else:
                assert re.search(expected, output, re.MULTILINE), f"expected /{expected}/ at {where}"
