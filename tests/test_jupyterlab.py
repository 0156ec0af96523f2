"""JupyterLab as students use it: a real server on 127.0.0.1, a real headless
Chromium, every stage notebook opened, run and saved, and then git and DVC
both still clean. Screenshots go to tests/artifacts/."""

import json
import time
import urllib.request

from helpers import ARTIFACTS, run, set_param

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


def open_notebook(browser, url, token, notebook):
    """A fresh page with the notebook open, current, and its kernel connected and idle."""
    path = f"notebooks/{notebook}"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/lab/tree/{path}?token={token}")
    page.wait_for_function(
        "path => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return w && w.context && w.context.path === path && w.sessionContext.session"
        " && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'; }",
        arg=path, timeout=60000)
    return page, session_ready(url, token, path)


def run_all_and_save(browser, url, token, notebook, expected, shot):
    page, session = open_notebook(browser, url, token, notebook)
    assert session["kernel"]["name"] == "dataops"
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
