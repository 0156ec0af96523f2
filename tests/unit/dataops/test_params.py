"""Every problem in params.yaml becomes one line naming the key and what is allowed."""

import copy

import pytest
import yaml

from dataops import WorkspaceError
from dataops.params import parse, problems, read
from helpers import DEFAULTS as GOOD, REPO

def with_value(dotted, value):
    data = copy.deepcopy(GOOD)
    *parents, key = dotted.split(".")
    node = data
    for name in parents:
        node = node[name]
    node[key] = value
    return data


def test_the_workspace_params_yaml_is_valid():
    # Whatever values a student has set: only validity is checked here.
    assert read(REPO / "params.yaml").keys() == GOOD.keys()


def test_the_defaults_are_valid():
    assert problems(GOOD) == []


def test_params_are_read_by_dvcs_yaml_rules(tmp_path):
    from dvc.utils.serialize import parse_yaml

    text = "process:\n  test_size: 2e-1\n  random_state: 0x2A\nflag: yes\n"
    assert parse(text) == parse_yaml(text, "params.yaml") == {
        "process": {"test_size": 0.2, "random_state": 42}, "flag": "yes"}


def test_a_duplicated_key_is_refused_as_dvc_refuses_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  model: svc\n  model: random_forest\n")
    with pytest.raises(WorkspaceError, match=r"params.yaml is not valid YAML at line 3, column 3: "
                                             r"found duplicate key \"model\""):
        read(path)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1, "abc", None, True, float("nan"), [0.2]])
def test_test_size_outside_zero_one_is_refused(value):
    assert problems(with_value("process.test_size", value)) == [
        f"process.test_size = {value!r}: must be a number between 0 and 1 (exclusive)"]


@pytest.mark.parametrize("value", [0, -1, 2.5, "200", False])
def test_max_iter_must_be_a_positive_whole_number(value):
    assert problems(with_value("train.logistic_regression.max_iter", value)) == [
        f"train.logistic_regression.max_iter = {value!r}: must be a whole number >= 1"]


@pytest.mark.parametrize("key, value, allowed", [
    ("data.dataset", "mnist", "iris, wine, breast_cancer, digits, synthetic"),
    ("train.model", "xgboost", "logistic_regression, random_forest, svc"),
    ("train.svc.kernel", "gaussian", "linear, poly, rbf, sigmoid"),
])
def test_unknown_choice_lists_the_choices(key, value, allowed):
    assert problems(with_value(key, value)) == [f"{key} = {value!r}: must be one of {allowed}"]


def test_structure_problems_are_each_named():
    assert problems(None) == ["params.yaml is empty: it needs the sections data, process, train, runner"]
    assert problems(["a"]) == ["params.yaml must be a mapping of sections (data, process, train, runner), not list"]
    assert problems({k: v for k, v in GOOD.items() if k != "data"}) == [
        "data: missing section; it needs the keys dataset, n_samples"]
    assert problems({**GOOD, "trian": {}}) == [
        "trian: unknown section (did you mean train?); allowed: data, process, train, runner"]
    assert problems(with_value("process.test_szie", 0.3)) == [
        "process.test_szie: unknown key (did you mean test_size?); allowed: test_size, random_state"]
    svc = copy.deepcopy(GOOD)
    del svc["train"]["svc"]["kernel"]
    assert problems(svc) == ["train.svc.kernel: missing; it must be one of linear, poly, rbf, sigmoid"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("process:\n  test_size: 0.2\n   random_state: 42\n")
    with pytest.raises(WorkspaceError, match=r"params.yaml is not valid YAML at line 3"):
        read(path)


def test_a_misspelt_key_is_named_once_with_the_right_spelling():
    renamed = copy.deepcopy(GOOD)
    renamed["train"]["logistic_regression"]["max_itr"] = renamed["train"]["logistic_regression"].pop("max_iter")
    assert problems(renamed) == ["train.logistic_regression.max_itr: unknown key (did you mean max_iter?); "
                                 "allowed: C, max_iter"]
    renamed = copy.deepcopy(GOOD)
    renamed["procces"] = renamed.pop("process")
    assert problems(renamed) == ["procces: unknown section (did you mean process?); allowed: data, process, train, runner"]


CASES = [
    ("process.test_size", "1.5", "process.test_size = 1.5: must be a number between 0 and 1 (exclusive)"),
    ("process.test_size", '"abc"', "process.test_size = 'abc': must be a number between 0 and 1"),
    ("process.test_size", "true", "process.test_size = True: must be a number"),
    ("train.logistic_regression.max_iter", "-1", "train.logistic_regression.max_iter = -1: must be a whole number >= 1"),
    ("train.logistic_regression.max_iter", "2.5", "train.logistic_regression.max_iter = 2.5: must be a whole number"),
    ("train.model", "xgboost", "train.model = 'xgboost': must be one of logistic_regression, random_forest, svc"),
    ("data.dataset", "mnist", "data.dataset = 'mnist': must be one of iris, wine, breast_cancer, digits, synthetic"),
    ("process.random_state", '"a b; touch INJECTED"', "process.random_state = 'a b; touch INJECTED'"),
    ("process.random_state", '"$(touch INJECTED)"', "process.random_state = '$(touch INJECTED)'"),
    ("train.svc.kernel", '"rbf`touch INJECTED`"', "train.svc.kernel = 'rbf`touch INJECTED`': must be one of"),
    ("data.dataset", '"iris\\n touch INJECTED"', "data.dataset = 'iris\\n touch INJECTED': must be one of"),
]


def _params_with(key, value):
    """The defaults with KEY set to VALUE, as YAML text reads."""
    return with_value(key, yaml.safe_load(value))


@pytest.mark.parametrize("key, value, message", CASES, ids=[f"{k}={v}" for k, v in [c[:2] for c in CASES]])
def test_bad_parameter_is_named_in_one_line(key, value, message):
    """The message of each case, checked in process; the runner prints exactly these lines."""
    found = problems(_params_with(key, value))
    assert len(found) == 1 and found[0].startswith(message), found


def test_unknown_key_is_named_with_what_is_allowed():
    params = _params_with("train.logistic_regression.max_iter", "300")
    params["train"]["learning_rate"] = 0.1
    assert problems(params) == ["train.learning_rate: unknown key; allowed: model, random_state, "
                                "logistic_regression, random_forest, svc"]
