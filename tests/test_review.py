"""`make review`: what a branch changes, read from what DVC recorded, as a pull request shows it."""

import json
import re

import pytest

from helpers import ARTIFACTS, locked_md5, md_rows, run, serve, set_param

GIT = "git -c user.name=t -c user.email=t@example.invalid "


@pytest.fixture
def branch(workspace):
    """A branch `weaker` with a smaller C, reproduced and committed: the change to review."""
    run(GIT + "checkout -q -b weaker", cwd=workspace)
    set_param(workspace, "train.logistic_regression.C", 0.01)
    run("dvc repro -q && " + GIT + "commit -qam 'train: C 0.01'", cwd=workspace)
    return workspace


def test_a_review_shows_params_metrics_files_and_plots_and_runs_no_code(branch):
    ws = branch
    # A commit whose notebook would leave a mark if anything ran it; its dvc.lock is the last one's.
    marker = ws / "ran.txt"
    notebook = ws / "notebooks/01_get_data.ipynb"
    nb = json.loads(notebook.read_text())
    nb["cells"][1]["source"] = f"open({str(marker)!r}, 'w').write('ran')\n" + "".join(nb["cells"][1]["source"])
    notebook.write_text(json.dumps(nb, indent=1) + "\n")
    for planted in ("src/sitecustomize.py", "dataops_kit/__init__.py", "dataops_kit/review.py"):  # nor its helpers
        (ws / planted).parent.mkdir(exist_ok=True)
        (ws / planted).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    run(GIT + "add -A && " + GIT + "commit -qm 'would write ran.txt'", cwd=ws)

    result = run("make review BASE=main", cwd=ws)
    assert "what changed: parameters 1, metrics " in result.stdout, result.stdout
    report = (ws / "review/review.md").read_text()
    rows = md_rows(report)
    assert ["params.yaml", "train.logistic_regression.C", "1.0", "0.01"] in rows, report
    accuracy = [row for row in rows if row[:2] == ["reports/metrics.json", "accuracy"]]
    assert accuracy and float(accuracy[0][3]) < float(accuracy[0][2])
    model = [row for row in rows if row[0] == "models/model.skops"]
    assert model == [["models/model.skops", "modified",
                      locked_md5(ws, "models/model.skops", run("git show main:dvc.lock", cwd=ws).stdout),
                      locked_md5(ws, "models/model.skops")]]
    images = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", report)
    assert len(images) == 2 and all((ws / "review" / i).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not marker.exists(), "the review ran a revision's notebook"
    assert run("git status --porcelain", cwd=ws).stdout == "", "the review is ignored by git and changes nothing"


def test_an_unknown_revision_is_one_line(workspace):
    result = run("make review BASE=no-such-branch", cwd=workspace, check=False)
    assert result.returncode != 0
    assert "✗ review: no-such-branch is no commit, branch, tag or experiment here" in result.stderr


HOSTILE = "<script>document.title='PWNED';alert(1)</script> | **bold** [x](http://evil.example) \x1b[31mred\x1b[0m"


def test_hostile_values_are_text_in_the_markdown_and_the_page(branch, browser):
    """Values a classmate commits (params, metrics, plot data, a commit subject) never break or run in the report."""
    ws = branch
    params = ws / "params.yaml"
    params.write_text(params.read_text().replace("train:", f"train:\n  note: {json.dumps(HOSTILE)}", 1))
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    metrics["accuracy"], metrics[HOSTILE] = float("inf"), 1
    (ws / "reports/metrics.json").write_text(json.dumps(metrics))
    roc = ws / "reports/plots/roc.csv"
    lines = roc.read_text().splitlines()
    roc.write_text("\n".join([lines[0], "0,inf,0.5", *lines[1:]]) + "\n")
    run("dvc commit -f -q", cwd=ws)
    run(GIT.split() + ["commit", "-qam", HOSTILE], cwd=ws)

    run("make review BASE=main", cwd=ws)
    report = (ws / "review/review.md").read_text()
    assert "<script" not in report and "\x1b" not in report and "](http://" not in report
    assert "&lt;script&gt;" in report and "\\*\\*bold\\*\\*" in report and "Infinity" in report
    table = [line for line in report.split("## Parameters")[1].split("##")[0].splitlines() if line.startswith("|")]
    assert all(len(re.split(r"(?<!\\)\|", line.strip()[1:-1])) == 4 for line in table), "no value ends a cell"

    page, dialogs, requests = browser.new_page(), [], []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    url, stop = serve(ws / "review")
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(f"{url}/index.html")
        page.wait_for_timeout(500)
        title, body = page.title(), page.inner_text("body")
        injected = page.evaluate("document.querySelectorAll('script, a, strong').length")
        widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "review-hostile-data.png", full_page=True)
    finally:
        stop()
    assert title == "Review of HEAD against main" and dialogs == [] and injected == 0
    assert "<script>document.title='PWNED'" in body, "the value is shown as text"
    assert requests == [f"{url}/index.html"], "the page asks for nothing else"
    assert len(widths) == 2 and all(widths)


def test_a_number_that_is_not_finite_is_left_out_of_a_plot_and_said(tmp_path):
    """Vega-Lite cannot read Infinity (DVC writes it into a spec for a JSON or YAML plot file that holds it)."""
    from dataops_kit.review import finite

    spec = {"data": {"values": [{"x": 1.0, "y": float("inf")}, {"x": float("nan"), "y": "inf"}]}, "mark": "line"}
    assert finite(spec) == ({"data": {"values": [{"x": 1.0, "y": None}, {"x": None, "y": "inf"}]}, "mark": "line"}, 2)
