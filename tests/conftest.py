"""Workspaces for the tests: real clones, reproduced with real DVC and kernels."""

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import CHROMIUM, free_port, make_clone, run, workspace_env


# What makes a test slow: it runs the pipeline (these fixtures all do), or, for
# nbval's items, the notebooks. `pytest -m "not slow"` skips those: the quick
# loop while changing a helper (about half a minute); `make test` runs all.
RUNS_THE_PIPELINE = {"reproduced", "workspace", "lab", "made", "course"}


def pytest_collection_modifyitems(items):
    for item in items:
        if RUNS_THE_PIPELINE & set(getattr(item, "fixturenames", ())) or item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Path:
    """A clone after `dvc repro`. Read-only: copy it (the `workspace` fixture) to change it."""
    root = make_clone(tmp_path_factory.mktemp("reproduced") / "ws")
    run("dvc repro", cwd=root)
    return root


@pytest.fixture
def workspace(reproduced, tmp_path) -> Path:
    """A private copy of a reproduced clone, DVC cache included."""
    root = tmp_path / "ws"
    shutil.copytree(reproduced, root, symlinks=True)
    return root


@pytest.fixture(scope="session")
def course(tmp_path_factory):
    """(workspace, folder): a course built by `make course` from a clone of this
    workspace, in folder/repo. Tests copy or clone folder/repo, never change it."""
    workspace = make_clone(tmp_path_factory.mktemp("course-workspace") / "ws")
    folder = tmp_path_factory.mktemp("course") / "dataops-course"
    built = run(["make", "--no-print-directory", "course", f"COURSE={folder}"], cwd=workspace)
    assert "Built" in built.stdout, built.stdout
    return workspace, folder


@pytest.fixture
def clone(tmp_path) -> Path:
    """A clone that has not been reproduced yet."""
    return make_clone(tmp_path / "ws")


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        reason = "needs Debian's chromium: apt-get install chromium (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def lab(workspace, tmp_path):
    """`make lab`'s server, on a free port, with the app exposed to the test's scripts
    (run as root here: `make lab` itself must cope with that)."""
    port, token = free_port(), "test-token"
    server = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS=--port={port} --IdentityProvider.token={token} "
         f"--no-browser --LabApp.expose_app_in_browser=True --LabApp.workspaces_dir={tmp_path}"],
        # As on another student's CPU: the kernel must still write the bytes dvc.lock records.
        cwd=workspace, env={**os.environ, **workspace_env(workspace), "OPENBLAS_CORETYPE": "Sandybridge"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield workspace, url, token
    os.killpg(server.pid, 15)
    server.wait(timeout=30)
