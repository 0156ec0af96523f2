"""dataops_kit.teach.sandbox's verdicts: what a fresh run's answer means, and the one store that keeps them."""

from dataops_kit.teach import sandbox

DATA, MODEL = "data/processed/train.csv", "models/model.skops"
WANTED = {DATA: "a" * 32, MODEL: "b" * 32}


def test_a_verdict_names_a_failure_a_forgery_and_another_cpu_apart():
    assert sandbox.verdict({"code": 0, "md5": dict(WANTED)}, WANTED) is None
    assert sandbox.verdict({"code": 1, "lines": ["✗ x"], "md5": {}}, WANTED) == "a fresh run fails: ✗ x"
    forged = sandbox.verdict({"code": 0, "md5": {**WANTED, DATA: "c" * 32, MODEL: "c" * 32}}, WANTED)
    assert forged.startswith(f"{DATA} is not what a fresh run makes") and sandbox.OTHER_CPU not in forged
    rounded = sandbox.verdict({"code": 0, "md5": {**WANTED, MODEL: "c" * 32}}, WANTED)
    assert rounded.startswith(f"{MODEL} differs from a fresh run's") and sandbox.OTHER_CPU in rounded


def test_verdicts_are_judged_once_kept_at_once_and_keyed_by_how(tmp_path):
    path, judged = tmp_path / "v.json", []
    store = sandbox.Verdicts(path)
    here, boxed = store.key("c0ffee", "reproduce", False), store.key("c0ffee", "reproduce", True)
    assert here != boxed and sandbox.toolkit_version() in here
    assert store.get(boxed, lambda: judged.append(1) or {"why": None}) == {"why": None}
    assert sandbox.Verdicts(path).get(boxed, lambda: judged.append(2)) == {"why": None} and judged == [1]
