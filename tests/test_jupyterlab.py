"""JupyterLab as students use it: a real server on 127.0.0.1, a real headless
Chromium, every stage notebook opened, run and saved, and then git and DVC
both still clean. Screenshots go to tests/artifacts/."""

import json
import time
import urllib.error
import urllib.request

from helpers import ARTIFACTS, locked_md5, md5, run, save_through_jupyter, set_param

SHOWN = {
    "01_get_data.ipynb": "iris: 150 rows, 4 features",
    "02_process_data.ipynb": "train: 120 rows, test: 30 rows",
    "03_train_model.ipynb": "accuracy on the train split",
    "04_evaluate.ipynb": "accuracy 1.0, macro F1 1.0",
}


def session_ready(url, token, path, timeout=60):
    """The kernel-ready indicator shows before the kernel is connected: ask the
    server until this notebook's kernel is idle with a connection."""
    deadline, sessions = time.time() + timeout, []
    while time.time() < deadline:
        sessions = json.load(urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=5))
        for session in sessions:
            kernel = session["kernel"]
            if session["path"] == path and kernel["execution_state"] == "idle" and kernel["connections"] >= 1:
                return session
        time.sleep(0.2)
    raise AssertionError(f"{path}: kernel never became idle and connected: {sessions}")


def open_notebook(browser, url, token, notebook, height=1000):
    """A fresh page with the notebook open, current, and its kernel connected and idle."""
    path = f"notebooks/{notebook}"
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(f"{url}/lab/tree/{path}?token={token}")
    page.wait_for_function(
        "path => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return w && w.context && w.context.path === path && w.sessionContext.session"
        " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; }",
        arg=path, timeout=60000)
    return page, session_ready(url, token, path)


def run_all_and_save(browser, url, token, notebook, expected, shot, edit=None):
    """Run All and save, as a student does; `edit` is typed into the parameters cell first."""
    page, session = open_notebook(browser, url, token, notebook, height=3200 if "evaluate" in notebook else 1600)
    assert session["kernel"]["name"] == "dataops"
    if edit:
        page.evaluate("""line => { const cell = window.jupyterapp.shell.currentWidget.content.widgets
            .find(c => (c.model.getMetadata('tags') || []).includes('parameters'));
            cell.model.sharedModel.setSource(cell.model.sharedModel.getSource() + '\\n' + line); }""", edit)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.get_by_text(expected).first.wait_for(timeout=90000)
    session_ready(url, token, session["path"])
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("!window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30000)
    page.screenshot(path=ARTIFACTS / shot, full_page=True)
    request = urllib.request.Request(f"{url}/api/sessions/{session['id']}?token={token}", method="DELETE")
    urllib.request.urlopen(request, timeout=30)
    page.close()


def test_each_notebook_runs_and_saves_in_jupyterlab_leaving_git_and_dvc_clean(lab, browser):
    root, url, token = lab
    ARTIFACTS.mkdir(exist_ok=True)
    for notebook, expected in SHOWN.items():
        run_all_and_save(browser, url, token, notebook, expected, f"jupyterlab-{notebook}.png")
    assert run("git status --porcelain", cwd=root).stdout == ""
    assert "up to date" in run("dvc status", cwd=root).stdout
    assert (root / "scratch/models/model.skops").is_file(), "Run All writes under scratch/"

    # A value typed into the parameters cell: the run uses it, DVC's files stay the recorded ones,
    # and dvc status names the one thing that changed, the notebook, which git checkout puts back.
    run_all_and_save(browser, url, token, "02_process_data.ipynb", "train: 75 rows, test: 75 rows",
                     "jupyterlab-parameter-typed-in.png", edit="test_size = 0.5")
    assert len((root / "scratch/data/processed/test.csv").read_text().splitlines()) == 1 + 75
    for out in ("data/processed/train.csv", "data/processed/test.csv"):
        assert md5(root / out) == locked_md5(root, out), out
    status = run("dvc status", cwd=root).stdout
    assert "process_data" in status and "modified:           notebooks/02_process_data.ipynb" in status, status
    assert "data/processed" not in status, "no output changed behind DVC's back"
    run("git checkout notebooks/02_process_data.ipynb", cwd=root)
    assert "up to date" in run("dvc status", cwd=root).stdout


def test_jupyterlab_offers_one_kernel_and_will_not_save_over_a_report(lab, browser):
    root, url, token = lab
    specs = json.load(urllib.request.urlopen(f"{url}/api/kernelspecs?token={token}", timeout=10))
    assert list(specs["kernelspecs"]) == ["dataops"]

    report = "reports/04_evaluate.ipynb"
    before = md5(root / report)
    page = browser.new_page(viewport={"width": 1400, "height": 3200})
    page.goto(f"{url}/lab/tree/{report}?token={token}")
    page.locator(".jp-RenderedSVG, .jp-RenderedImage").first.wait_for(timeout=60000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "jupyterlab-report-04_evaluate.png")
    refused = page.evaluate("window.jupyterapp.commands.execute('docmanager:save').then(() => '', e => String(e))")
    page.get_by_text("is read-only").first.wait_for(timeout=30000)
    page.screenshot(path=ARTIFACTS / "jupyterlab-report-save-refused.png")
    page.close()
    assert "read-only" in refused
    assert md5(root / report) == before
    try:
        save_through_jupyter(url, token, report, json.loads((root / report).read_text()))
        raise AssertionError("a report was saved over")
    except urllib.error.HTTPError as error:
        assert error.code == 403
    assert md5(root / report) == before
    assert "up to date" in run("dvc status", cwd=root).stdout


def test_a_bad_value_shows_one_readable_line_in_the_page(lab, browser):
    root, url, token = lab
    set_param(root, "process.test_size", 1.5)
    message = "process.test_size = 1.5: must be a number between 0 and 1 (exclusive)"
    page, _ = open_notebook(browser, url, token, "02_process_data.ipynb")
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    error = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    error.filter(has_text=message).first.wait_for(timeout=60000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "jupyterlab-bad-parameter.png", full_page=True)
    assert "Traceback" not in error.first.inner_text()
