"""The model file: skops instead of pickle, because loading a pickle runs
whatever code the file carries, while skops only rebuilds trusted types."""

import io
import json
import zipfile
from pathlib import Path

import skops.io as skops_io

from dataops import WorkspaceError

_EPOCH = (1980, 1, 1, 0, 0, 0)

# The models the workspace trains: the only estimators a model file may hold.
# skops trusts every scikit-learn estimator by default; the workspace narrows
# that, reading the types a file names from its schema (skops' documented
# format: a zip whose schema.json names each object's __module__ and __class__)
# before skops rebuilds anything.
MODELS = {
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.svm._classes.SVC",
}
# Beyond skops' defaults, the random forests' tree storage. skops leaves it out
# because a crafted Tree can make predict() read out of bounds; load_model
# trusts it only after checking every tree's structure.
TRUSTED = ["sklearn.tree._tree.Tree"]


def _renumber(node, ids, files):
    """Replace memory addresses (``__id__`` and array file names) by counters."""
    if isinstance(node, dict):
        if "__id__" in node:
            node["__id__"] = ids.setdefault(node["__id__"], len(ids))
        if isinstance(node.get("file"), str):
            node["file"] = files.setdefault(node["file"], f"{len(files)}.npy")
        for value in node.values():
            _renumber(value, ids, files)
    elif isinstance(node, list):
        for value in node:
            _renumber(value, ids, files)


def save_model(model, path: Path) -> None:
    """Write a skops file whose bytes depend only on the model, so identical
    runs give an identical md5 in dvc.lock. skops names objects and array
    files by memory address and stamps each zip entry with the current time;
    this numbers them in order of appearance and fixes the date."""
    buffer = io.BytesIO()
    skops_io.dump(model, buffer)
    with zipfile.ZipFile(buffer) as source:
        schema = json.loads(source.read("schema.json"))
        files = {}
        _renumber(schema, {}, files)
        entries = [("schema.json", json.dumps(schema, indent=2).encode())]
        entries += [(new, source.read(old)) for old, new in files.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as target:
        for name, data in entries:
            target.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), data)


def _tree_problem(tree, n_features: int, n_classes: int):
    """Why this tree could make compiled code read out of bounds, or give
    another answer than the one it was trained to, or None.

    scikit-learn's predict walks from node 0 to a leaf through the child
    indices, reading the feature each node names and then the leaf's class
    counts: every child must be a later node (so every walk ends), leaves have
    no children, every feature a split reads must exist, and the counts must
    have one column per class of the model."""
    import numpy as np

    n = tree.node_count
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    if not (len(left) == len(right) == len(feature) == len(tree.n_node_samples) == tree.value.shape[0] == n):
        return "its node arrays disagree in length"
    if tree.n_outputs != 1 or list(tree.n_classes) != [n_classes] or tree.value.shape[1:] != (1, n_classes):
        return f"its class counts do not have one column per class (the model has {n_classes})"
    split, ids = left != -1, np.arange(n)
    if np.any((right != -1) != split):
        return "a node has one child"
    for child in (left[split], right[split]):
        if np.any(child <= ids[split]) or np.any(child >= n):
            return "a child index points outside the tree"
    if np.any(feature[split] < 0) or np.any(feature[split] >= n_features) or np.any(feature[~split] != -2):
        return f"a split reads a feature that does not exist (the model has {n_features})"
    samples = tree.n_node_samples
    if np.any(samples < 1) or np.any(samples[left[split]] + samples[right[split]] != samples[split]):
        return "its sample counts do not add up"
    if np.any(tree.missing_go_to_left > 1):
        return "a node sends missing values neither left nor right"
    return None


def _svc_problem(model):
    """Why libsvm's predict could read out of bounds with this SVC, or None."""
    import numpy as np

    from dataops.params import SCHEMA

    kernels = SCHEMA["train"]["svc"]["kernel"].options
    if model.kernel not in kernels:  # "precomputed" reads the input by support_ index
        return f"its kernel {model.kernel!r} is none of {', '.join(kernels)}"
    vectors, counts, classes = model.support_vectors_, model._n_support, len(model.classes_)
    pairs = classes * (classes - 1) // 2
    if (len(counts) != classes or np.any(counts < 1) or counts.sum() != len(vectors)
            or vectors.shape[1:] != (model.n_features_in_,) or len(model.support_) != len(vectors)
            or model._dual_coef_.shape != (classes - 1, len(vectors)) or len(model._intercept_) != pairs):
        return "its support vectors, coefficients and classes disagree in size"
    rows = model.shape_fit_[0]
    if np.any(model.support_ < 0) or np.any(model.support_ >= rows):
        return f"a support vector index points outside the {rows} training rows"
    return None


def _check_structure(model):
    """Check every number compiled code or the answer depends on, before
    predict() runs: the classes are 0, 1, 2, ... (as read_dataset requires of
    the labels), iteration counts are within the model's limit, and each tree
    or SVC is whole. Returns what is wrong, or None."""
    import numpy as np

    classes = model.classes_
    if classes.dtype.kind not in "iu" or not np.array_equal(classes, np.arange(len(classes))) or len(classes) < 2:
        return "its classes are not 0, 1, 2, ..."
    n_iter = np.atleast_1d(getattr(model, "n_iter_", 0))
    limit = getattr(model, "max_iter", -1)
    if limit <= 0 and hasattr(model, "support_vectors_"):  # libsvm's own cap on an unlimited run (svm.cpp)
        limit = max(10_000_000, 100 * int(model.shape_fit_[0]))
    if np.any(n_iter < 0) or (limit > 0 and np.any(n_iter > limit)):
        return f"its iteration count is outside 0 to {limit if limit > 0 else 'any'}"
    estimators = [model] if hasattr(model, "tree_") else []
    estimators += [e for e in getattr(model, "estimators_", []) if hasattr(e, "tree_")]
    problems = [_tree_problem(e.tree_, model.n_features_in_, len(classes)) for e in estimators]
    problems += ["a tree's class count disagrees with the model's" for e in estimators
                 if e.n_classes_ != len(classes)]
    if hasattr(model, "support_vectors_"):
        problems.append(_svc_problem(model))
    return next((problem for problem in problems if problem), None)


def _types(node, found: set) -> set:
    """Every ``module.class`` the skops schema NODE names, nested ones included."""
    if isinstance(node, dict):
        if isinstance(node.get("__module__"), str) and isinstance(node.get("__class__"), str):
            found.add(f"{node['__module__']}.{node['__class__']}")
        for value in node.values():
            _types(value, found)
    elif isinstance(node, list):
        for value in node:
            _types(value, found)
    return found


def _foreign_estimators(path: Path) -> list:
    """The scikit-learn types in the file that are none of MODELS or TRUSTED."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (KeyError, UnicodeDecodeError, ValueError) as error:  # no schema, or not JSON
        raise zipfile.BadZipFile(str(error)) from None
    return sorted(t for t in _types(schema, set()) if t.startswith("sklearn.") and t not in MODELS | set(TRUSTED))


def load_model(path: Path):
    """Load a model, refusing any scikit-learn type but the workspace's models,
    any other type skops does not trust, and any tree or SVC whose structure
    would send compiled code out of bounds."""
    try:
        foreign = _foreign_estimators(path)
        if foreign:
            raise WorkspaceError(f"{path} holds {', '.join(foreign)}, which is none of the workspace's models: "
                                 f"refused to load it. `dvc repro` trains a model again")
        model = skops_io.load(path, trusted=TRUSTED)
    except FileNotFoundError:
        raise WorkspaceError(f"{path} does not exist: run the train_model stage first (dvc repro)") from None
    except zipfile.BadZipFile:
        raise WorkspaceError(f"{path} is not a skops file (a pickle, or a damaged download?): refused to load it") from None
    except skops_io.exceptions.UntrustedTypesFoundException as error:
        raise WorkspaceError(f"{path} contains types that are not trusted, refused to load it: {error}") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, MemoryError) as error:
        # scikit-learn's own checks while rebuilding (a tree whose arrays do not fit, ...)
        raise WorkspaceError(f"{path} is damaged or crafted ({type(error).__name__}: {error}): refused to use it. "
                             f"`dvc repro` trains a model again") from None
    try:
        problem = _check_structure(model)
    except (AttributeError, TypeError, ValueError, IndexError) as error:  # a trusted type holding the wrong things
        problem = f"{type(error).__name__}: {error}"
    if problem:
        raise WorkspaceError(f"{path} is damaged or crafted ({problem}): refused to use it. "
                             f"`dvc repro` trains a model again")
    return model
