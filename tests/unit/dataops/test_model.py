"""The model file: what load_model refuses, checked in-process."""

import io
import json
import zipfile

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from dataops import WorkspaceError
from dataops.model import load_model, save_model

X, y = load_iris(return_X_y=True)

# Every type the train stage can write (params: train.model), and the tree a forest is made of.
MODELS = [LogisticRegression(max_iter=300), RandomForestClassifier(n_estimators=2, random_state=0), SVC(),
          DecisionTreeClassifier(random_state=0)]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_every_model_the_pipeline_trains_loads_back(model, tmp_path):
    save_model(model.fit(X, y), tmp_path / "m.skops")
    assert (load_model(tmp_path / "m.skops").predict(X) == model.predict(X)).all()


def _array_paths(node, path="", found=None):
    """{file in the zip: where in the model it sits}, from skops' schema.json."""
    found = {} if found is None else found
    if isinstance(node, dict):
        if isinstance(node.get("file"), str):
            found[node["file"]] = path
        for key, value in node.items():
            _array_paths(value, path if key in ("content", "attrs") else f"{path}/{key}", found)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _array_paths(value, f"{path}[{i}]", found)
    return found


def _crafted(source: bytes):
    """Every integer in every integer array of a saved model, first and last element,
    set in turn to -1 and to its type's extremes: (what was changed, the crafted file)."""
    with zipfile.ZipFile(io.BytesIO(source)) as original:
        entries = {name: original.read(name) for name in original.namelist()}
    paths = _array_paths(json.loads(entries["schema.json"]))
    for name, data in entries.items():
        if not name.endswith(".npy"):
            continue
        array = np.load(io.BytesIO(data), allow_pickle=False)
        fields = array.dtype.names or [None]
        for field in fields:
            column = array[field] if field else array
            if column.dtype.kind not in "iu":
                continue
            info = np.iinfo(column.dtype)
            values = {-1 % (info.max + 1) if column.dtype.kind == "u" else -1, info.min, info.max}
            for position in sorted({0, column.size - 1}):
                for value in sorted(values):
                    crafted = array.copy()
                    target = (crafted[field] if field else crafted).reshape(-1)
                    if target[position] == value:
                        continue
                    target[position] = value
                    if field:
                        crafted[field] = target.reshape(crafted.shape)
                    else:
                        crafted = target.reshape(crafted.shape)
                    buffer = io.BytesIO()
                    np.save(buffer, crafted, allow_pickle=False)
                    out = io.BytesIO()
                    with zipfile.ZipFile(out, "w") as zipped:
                        for other, content in entries.items():
                            zipped.writestr(other, buffer.getvalue() if other == name else content)
                    where = paths.get(name, name) + (f".{field}" if field else "")
                    yield f"{where}[{position}] = {value}", out.getvalue()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_every_out_of_range_integer_in_a_saved_model_is_refused_in_one_line(model, tmp_path):
    """A crafted file must not crash predict() nor give another answer: refused, with one line."""
    save_model(model.fit(X, y), tmp_path / "good.skops")
    cases = list(_crafted((tmp_path / "good.skops").read_bytes()))
    assert len(cases) >= 6, "the fuzz found too few integers to change"
    accepted = []
    for what, data in cases:
        (tmp_path / "m.skops").write_bytes(data)
        try:
            load_model(tmp_path / "m.skops")
        except WorkspaceError as error:
            assert "\n" not in str(error) and "refused" in str(error), (what, str(error))
        else:
            accepted.append(what)
    assert not accepted, f"loaded without complaint: {accepted}"


@pytest.mark.parametrize("support", [50_000_000, 200])
def test_an_svc_that_would_send_libsvm_out_of_bounds_is_refused(support, tmp_path):
    """A precomputed-kernel SVC whose support_ points past its training rows: SIGSEGV, or a silently wrong
    accuracy, in libsvm. No workspace stage writes that kernel; its indices are checked too."""
    model = SVC(kernel="precomputed").fit(X @ X.T, y)
    model.support_[:] = support
    model.support_vectors_ = np.zeros((len(model.support_), 4))
    model.shape_fit_ = (4, 4)
    save_model(model, tmp_path / "m.skops")
    with pytest.raises(WorkspaceError, match="refused to use it"):
        load_model(tmp_path / "m.skops")
    model.kernel, model.n_features_in_ = "rbf", 4
    save_model(model, tmp_path / "m.skops")
    with pytest.raises(WorkspaceError, match="support vector index points outside the 4 training rows"):
        load_model(tmp_path / "m.skops")


def test_a_scikit_learn_estimator_skops_trusts_but_the_workspace_never_trains_is_refused(tmp_path):
    """skops trusts every scikit-learn estimator by default; a model file may hold only the workspace's."""
    from sklearn.naive_bayes import GaussianNB
    import skops.io

    skops.io.dump(GaussianNB().fit(X, y), tmp_path / "m.skops")
    assert skops.io.get_untrusted_types(file=tmp_path / "m.skops") == [], "skops itself would load it"
    with pytest.raises(WorkspaceError, match="GaussianNB, which is none of the workspace's models"):
        load_model(tmp_path / "m.skops")


def test_a_file_without_a_schema_is_no_model(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.skops", "w") as archive:
        archive.writestr("other.json", "{}")
    with pytest.raises(WorkspaceError, match="is not a skops file"):
        load_model(tmp_path / "m.skops")
