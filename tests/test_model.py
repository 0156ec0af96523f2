"""The model file: what load_model refuses, checked in-process in a second."""

import re

import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from dataops import WorkspaceError
from dataops.model import load_model, save_model

X, y = load_iris(return_X_y=True)


@pytest.mark.parametrize("model", [RandomForestClassifier(n_estimators=3, random_state=0), SVC(),
                                   LogisticRegression(max_iter=300)], ids=lambda m: type(m).__name__)
def test_every_model_the_pipeline_trains_loads_back(model, tmp_path):
    save_model(model.fit(X, y), tmp_path / "m.skops")
    assert (load_model(tmp_path / "m.skops").predict(X) == model.predict(X)).all()


@pytest.mark.parametrize("array, index, value, problem", [
    ("children_left", 0, 50_000_000, "a child index points outside the tree"),
    ("children_right", 0, 0, "a child index points outside the tree"),
    ("children_left", 0, -1, "a node has one child"),
    ("feature", 0, 99, "a split reads a feature that does not exist (the model has 4)"),
])
def test_a_crafted_tree_is_refused_with_what_is_wrong(array, index, value, problem, tmp_path):
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    getattr(model.estimators_[1].tree_, array)[index] = value
    save_model(model, tmp_path / "m.skops")
    with pytest.raises(WorkspaceError, match=re.escape(f"is damaged or crafted ({problem}")):
        load_model(tmp_path / "m.skops")


def test_an_svc_whose_sizes_disagree_is_refused(tmp_path):
    model = SVC().fit(X, y)
    model._n_support[0] += 5
    save_model(model, tmp_path / "m.skops")
    with pytest.raises(WorkspaceError, match="support vectors, coefficients and classes disagree"):
        load_model(tmp_path / "m.skops")
