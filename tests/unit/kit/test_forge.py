"""The forge workflows of docs/how-to/review-on-a-forge.md: valid YAML, calling the tested `make review`."""

import re
from pathlib import Path

import pytest
import yaml

FORGE = Path(__file__).resolve().parents[3] / "docs/how-to/forge"
REVIEW = re.compile(r'make review BASE="\$BASE" REV=HEAD')


def _commands(workflow: dict) -> list:
    """Every shell line a GitHub job's steps or a GitLab job's script runs."""
    jobs = workflow.get("jobs", {}).values() if "jobs" in workflow else [
        job for job in workflow.values() if isinstance(job, dict) and "script" in job]
    lines = []
    for job in jobs:
        lines += [step["run"] for step in job.get("steps", []) if "run" in step] + list(job.get("script", []))
    return lines


@pytest.mark.parametrize("name, trigger", [("github-review.yml", "pull_request"),
                                           ("gitlab-review.yml", "merge_request_event")])
def test_each_forge_workflow_parses_and_runs_make_review_on_a_pull_request(name, trigger):
    text = (FORGE / name).read_text()
    workflow = yaml.safe_load(text)
    commands = _commands(workflow)
    assert any(REVIEW.search(line) for line in commands), commands
    assert any("dvc fetch" in line for line in commands), "both sides' outputs come from the remote"
    assert not any(re.search(r"dvc (repro|exp run)|papermill|dataops-run", line) for line in commands)
    assert trigger in text and "review/" in text, "runs on a pull request, keeps the images as an artifact"


def test_make_review_takes_the_arguments_the_workflows_pass():
    makefile = (FORGE.parents[2] / "Makefile").read_text()
    assert re.search(r"^review:.*\n\t.*\n\t@python -I -m dataops_kit.review \$\(BASE\) \$\(or \$\(REV\),HEAD\)",
                     makefile, re.M)
