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
    for path in [*REPO.glob("src/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("bench/*.py"),
                 REPO / "notebooks" / "conftest.py"]:
        yield path, path.read_text()
    for path in REPO.glob("notebooks/*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        yield path, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


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
                modules.setdefault(name.split(".")[0], path.relative_to(REPO))
    return modules


def test_every_imported_package_is_a_direct_requirement():
    direct = {_normal(line.split()[0]) for line in (REPO / "requirements.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    owners = packages_distributions()
    local = {"dataops", "helpers", "conftest"}
    missing = {}
    for module, where in _imported().items():
        if module in sys.stdlib_module_names or module in local:
            continue
        assert module in owners, f"{where} imports {module}, which no installed package provides"
        if not direct & {_normal(owner) for owner in owners[module]}:
            missing[module] = str(where)
    assert not missing, f"imported but pinned only through other packages (add to requirements.in, make lock): {missing}"


def test_requirements_pin_every_direct_one_for_every_python():
    text = (REPO / "requirements.txt").read_text()
    assert "make lock" in text.splitlines()[1], "requirements.txt is written by `make lock`, not by hand"
    pinned = {_normal(line.split("==")[0]) for line in text.splitlines() if "==" in line and not line.startswith(" ")}
    direct = {_normal(line.split()[0]) for line in (REPO / "requirements.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert direct <= pinned, f"not pinned: {direct - pinned}"
    # A universal resolution: packages needed on one OS or Python only carry a marker.
    assert "sys_platform == 'win32'" in text
