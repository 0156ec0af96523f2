"""No module of the workspace (src/dataops, kit/) assigns to, wraps or replaces a name of another
package: libraries run as they ship, extended only through their documented doors."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = sorted([*(REPO / "src").rglob("*.py"), *(REPO / "kit" / "src").rglob("*.py"), *(REPO / "kit" / "bench").rglob("*.py")])


def loop_names(tree) -> set:
    """Loop variables: ``for module in sys.modules.values()`` reaches any module."""
    return {part.id for node in ast.walk(tree) if isinstance(node, (ast.For, ast.comprehension))
            for part in ast.walk(node.target) if isinstance(part, ast.Name)}


def imported_names(tree) -> set:
    """The names a module binds to other modules (import x, import x as y, from x import y)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def root_name(node):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def assigned(target):
    """The places one assignment target writes (each element of a tuple target)."""
    if isinstance(target, (ast.Tuple, ast.List)):
        return [place for element in target.elts for place in assigned(element)]
    return assigned(target.value) if isinstance(target, ast.Starred) else [target]


def patches(source: str) -> list:
    """Each place that writes into an imported module or object: `mod.name = ...`, `setattr(mod, ...)`,
    `sys.modules[...] = ...`. Writing os.environ (the process's environment) is no patch."""
    tree = ast.parse(source)
    modules, loops, found = imported_names(tree), loop_names(tree), []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            for part in assigned(target):
                if (isinstance(part, (ast.Attribute, ast.Subscript)) and root_name(part) in modules
                        or isinstance(part, ast.Attribute) and root_name(part) in loops):
                    text = ast.unparse(part)
                    if not text.startswith("os.environ"):
                        found.append(f"line {node.lineno}: {text} = ...")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and root_name(node.args[0]) in modules:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_finds_a_patch():
    assert patches("import sklearn.utils\nsklearn.utils.all_estimators = lambda: []") != []
    assert patches("from dvc.stage import Stage\nStage.dump = None") != []
    assert patches("import sys\nsys.modules['debugpy'] = None") != []
    assert patches("import dvc_data.hashfile.hash as h\nsetattr(h, 'hash_file', None)") != []
    assert patches("import sys\nfor module in list(sys.modules.values()):\n    module.hash_file = None") != []
    assert patches("import os\nos.environ['PATH'] = 'x'\nself_value = 1") == []


@pytest.mark.parametrize("module", MODULES, ids=lambda path: str(path.relative_to(REPO)))
def test_no_module_patches_another_package(module):
    assert patches(module.read_text()) == []
