"""Workspaces for the tests: real clones, reproduced with real DVC and kernels."""

import fcntl
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import CHROMIUM, free_port, make_clone, run, workspace_env


# What makes a test slow: it runs the pipeline (these fixtures all do), or, for
# nbval's items, the notebooks; a file may mark more (test_classroom: its store).
# `pytest -m "not slow"` skips those: the quick loop while changing a helper
# (about 15 s); `make test` runs all.
RUNS_THE_PIPELINE = {"reproduced", "workspace", "lab", "made", "course"}


def pytest_collection_modifyitems(items):
    for item in items:
        if RUNS_THE_PIPELINE & set(getattr(item, "fixturenames", ())) or item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


def run_folder(tmp_path_factory) -> Path:
    """The test run's folder: above each parallel worker's own."""
    basetemp = tmp_path_factory.getbasetemp()
    return basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp


@pytest.fixture(scope="session", autouse=True)
def reproductions_cache(tmp_path_factory):
    """One cache of reproductions for the run, as a student's machine has one (DATAOPS_CACHE): a
    stage that a check ran before with the same inputs is restored, in every test after."""
    os.environ["DATAOPS_CACHE"] = str(run_folder(tmp_path_factory) / "dataops-cache")


def built_once(tmp_path_factory, name, build):
    """What `build(folder)` makes, built once per test run: with parallel workers,
    by the first to ask, while the others wait for it (tests only read it)."""
    shared = run_folder(tmp_path_factory)
    folder = shared / name
    with open(shared / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f"{name}.built").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed for an earlier worker
            folder.mkdir()
            build(folder)
            (shared / f"{name}.built").touch()
    return folder


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory) -> Path:
    """A clone after `dvc repro`. Read-only: copy it (the `workspace` fixture) to change it.
    Reproduced once per run; each worker gets its own copy, so that no DVC command
    of one worker runs in a repository another worker is copying."""
    def build(folder):
        run("dvc repro", cwd=make_clone(folder / "ws"))
    root = tmp_path_factory.mktemp("reproduced") / "ws"
    shutil.copytree(built_once(tmp_path_factory, "reproduced", build) / "ws", root, symlinks=True)
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
    def build(folder):
        built = run(["make", "--no-print-directory", "course", f"COURSE={folder / 'dataops-course'}"],
                    cwd=make_clone(folder / "ws"))
        assert "Built" in built.stdout, built.stdout
    folder = built_once(tmp_path_factory, "course", build)
    return folder / "ws", folder / "dataops-course"


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
