"""Workspaces for the tests: real clones, reproduced with real DVC and kernels."""

import shutil
from pathlib import Path

import pytest

from helpers import make_clone, run


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
