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


def test_reproductions_share_a_cache_only_with_the_same_toolkit_packages_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAOPS_CACHE", str(tmp_path))
    for knob in sandbox.CPU_KNOBS:
        monkeypatch.delenv(knob, raising=False)
    here = sandbox.reproductions_cache()
    assert here.parent == tmp_path / "reproductions" and here == sandbox.reproductions_cache()
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Sandybridge")  # as on another CPU: runs of its own
    assert sandbox.reproductions_cache() not in (here, None)
