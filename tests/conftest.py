"""Workspaces for the tests: real clones, reproduced with real DVC and kernels."""

import os
import shutil
from pathlib import Path

import pytest

from helpers import CHROMIUM, make_clone, run


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
