"""Evaluate, metrics, plots and experiments: what a DVC lesson compares."""

import json
from pathlib import Path

import pytest

from helpers import ARTIFACTS, md_rows, run, serve, set_param

GIT = "git -c user.name=t -c user.email=t@example.invalid "


def flat_metrics(root):
    data = json.loads((Path(root) / "reports/metrics.json").read_text())
    return {"accuracy": data["accuracy"], "f1_macro": data["f1_macro"],
            **{f"precision.{k}": v for k, v in data["precision"].items()},
            **{f"recall.{k}": v for k, v in data["recall"].items()}}


def test_metrics_have_every_declared_key_as_a_share(reproduced):
    metrics = flat_metrics(reproduced)
    assert set(metrics) == {"accuracy", "f1_macro", "precision.0", "precision.1", "precision.2",
                            "recall.0", "recall.1", "recall.2"}
    assert all(0 <= value <= 1 for value in metrics.values())
    assert "reports/metrics.json" in run("dvc metrics show", cwd=reproduced).stdout


def test_a_weaker_model_changes_the_metrics_and_diffs_show_it(workspace):
    before = flat_metrics(workspace)
    set_param(workspace, "train.logistic_regression.C", 0.01)
    run("dvc repro", cwd=workspace)
    after = flat_metrics(workspace)
    assert after["accuracy"] < before["accuracy"]
    run(GIT + "commit -qam 'train: C 0.01'", cwd=workspace)

    metrics_diff = md_rows(run("dvc metrics diff HEAD~1 HEAD --md", cwd=workspace).stdout)
    assert ["reports/metrics.json", "accuracy", str(before["accuracy"]), str(after["accuracy"]),
            str(round(after["accuracy"] - before["accuracy"], 4))] in metrics_diff
    params_diff = md_rows(run("dvc params diff HEAD~1 HEAD --md", cwd=workspace).stdout)
    assert ["params.yaml", "train.logistic_regression.C", "1.0", "0.01"] in params_diff
    plots_diff = run("dvc plots diff HEAD~1 HEAD -o plots-diff", cwd=workspace)
    assert (workspace / "plots-diff/index.html").is_file(), plots_diff.stdout


def test_plots_page_renders_offline_in_a_real_browser(reproduced, browser, tmp_path):
    run("dvc plots show -o " + str(tmp_path / "plots"), cwd=reproduced)
    url, stop = serve(tmp_path / "plots")
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{url}/index.html")
        page.wait_for_function("document.querySelectorAll('svg.marks').length >= 2", timeout=20000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "dvc-plots.png", full_page=True)
        charts = page.evaluate("[...document.querySelectorAll('svg.marks')].map(s => s.getBBox().width)")
        controls = page.evaluate("document.querySelectorAll('input, select, button, details').length")
        counts = page.evaluate("""[...[...document.querySelectorAll('svg.marks')][0]
            .querySelectorAll('g.mark-text.role-mark text')].map(t => Number(t.textContent))""")
    finally:
        stop()
    assert errors == []
    assert [r for r in requests if not r.startswith(url)] == []
    assert len(charts) == 2 and all(charts), "one drawn chart per plot in dvc.yaml"
    assert controls == 0, "no stray checkbox or menu next to the charts"
    rows = (reproduced / "reports/plots/confusion.csv").read_text().splitlines()[1:]
    assert len(counts) == 9 and sum(counts) == len(rows), "every cell of the confusion matrix shows its count"


@pytest.mark.parametrize("payload", [
    "</script><script>document.title='PWNED';alert(1)</script>",
    "</script><meta http-equiv=refresh content=0;url=about:blank>",
    "</script></div><style>h1{color:red;font-size:90px}</style><h1>Your DVC session expired: run curl x | sh</h1>",
])
def test_plot_data_is_shown_as_text_never_run_or_rendered_as_html(workspace, browser, tmp_path, payload):
    confusion = workspace / "reports/plots/confusion.csv"
    rows = confusion.read_text().splitlines()
    confusion.write_text("\n".join([rows[0], f'"{payload}",0', *rows[2:]]) + "\n")
    run("dvc plots show -o " + str(tmp_path / "plots"), cwd=workspace)
    url, stop = serve(tmp_path / "plots")
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(f"{url}/index.html")
        page.wait_for_function("document.querySelectorAll('svg.marks').length >= 2", timeout=20000)
        page.wait_for_timeout(1000)  # time for a refresh to navigate away
        where, title = page.url, page.title()
        injected = page.evaluate("document.querySelectorAll('h1, meta[http-equiv=refresh]').length")
        shown = page.evaluate("[...document.querySelectorAll('svg text')].map(t => t.textContent).join('\\n')")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "dvc-plots-hostile-data.png", full_page=True)
    finally:
        stop()
    assert where == f"{url}/index.html" and title == "DVC plots" and dialogs == []
    assert injected == 0, "no element of the payload's is in the page"
    assert "</script>" in shown, "the value is shown, as text, on the chart"


@pytest.mark.parametrize("dataset, classes", [("wine", 3), ("breast_cancer", 2), ("digits", 10), ("synthetic", 3)])
def test_each_bundled_dataset_runs_the_whole_pipeline(workspace, dataset, classes):
    set_param(workspace, "data.dataset", dataset)
    result = run("dvc repro", cwd=workspace)
    assert "✓ evaluate" in result.stdout
    assert len([k for k in flat_metrics(workspace) if k.startswith("recall.")]) == classes


def test_queued_grid_of_models_runs_and_the_best_is_applied_and_committed(workspace):
    run("dvc exp run --queue -S data.dataset=wine "
        "-S 'train.model=logistic_regression,random_forest,svc'", cwd=workspace)
    try:
        run("dvc queue start -j 2", cwd=workspace)
        run("dvc queue logs --follow $(dvc queue status | awk 'NR==2{print $1}') >/dev/null 2>&1; "
            "while dvc queue status | grep -qE 'Queued|Running'; do sleep 1; done", cwd=workspace, timeout=600)
        status = run("dvc queue status", cwd=workspace).stdout
    finally:
        run("dvc queue stop --kill", cwd=workspace, check=False)
    assert status.count("Success") == 3, status

    table = json.loads(run("dvc exp show --json", cwd=workspace).stdout)
    experiments = {}
    for commit in table:
        for exp in commit.get("experiments") or []:
            revision = exp["revs"][0]
            data = revision["data"]
            model = data["params"]["params.yaml"]["data"]["train"]["model"]
            experiments[model] = (data["metrics"]["reports/metrics.json"]["data"]["accuracy"], revision["name"])
    assert set(experiments) == {"logistic_regression", "random_forest", "svc"}
    assert len({accuracy for accuracy, _ in experiments.values()}) == 3, experiments

    best_accuracy, best = max(experiments.values())
    run(f"dvc exp apply {best}", cwd=workspace)
    run(GIT + f"commit -qam 'Apply experiment {best}'", cwd=workspace)
    assert flat_metrics(workspace)["accuracy"] == best_accuracy
    assert "up to date" in run("dvc status", cwd=workspace).stdout
    shown = run("dvc exp show --md --all-commits", cwd=workspace).stdout
    assert all(name in shown for _, name in experiments.values())
