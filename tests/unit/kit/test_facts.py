"""dataops_kit.facts: what a dvc.lock may make the toolkit read, on synthetic repositories."""

import hashlib
import subprocess

import pytest

from dataops_kit.facts import YAMLError, git_show, locked_metrics, md5, outputs, read_yaml, stored

DIGEST = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("digest", ["../../etc/passwd", "0" * 31, DIGEST.upper(), "", None, 7])
def test_stored_refuses_anything_but_an_md5(digest, tmp_path):
    with pytest.raises(ValueError, match="not an md5"):
        stored(tmp_path, digest)


def test_stored_is_where_dvc_3_keeps_the_file(tmp_path):
    assert stored(tmp_path, DIGEST) == tmp_path / "files/md5/01/23456789abcdef0123456789abcdef"


@pytest.mark.parametrize("lock", [None, [], "stages", {"stages": []}, {"stages": {"a": None}},
                                  {"stages": {"a": {"outs": "x"}}}, {"stages": {"a": {"outs": [None, 3]}}},
                                  {"stages": {"a": {"outs": [{"path": 5, "md5": DIGEST}]}}},
                                  {"stages": {"a": {"outs": [{"path": "x", "md5": "../y"}]}}}])
def test_a_hostile_lock_yields_no_outputs(lock):
    assert outputs(lock) == {}


def test_outputs_lists_each_path_with_its_md5():
    lock = {"stages": {"a": {"outs": [{"path": "m", "md5": DIGEST}]}, "b": {"deps": [{"path": "d", "md5": DIGEST}]}}}
    assert outputs(lock) == {"m": DIGEST}


def test_locked_metrics_are_read_from_the_cache_not_the_file_on_disk(tmp_path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/metrics.json").write_text('{"accuracy": 1.0}')  # hand-edited
    locked = tmp_path / "locked.json"
    locked.write_text('{"accuracy": 0.9}')
    digest = md5(locked)
    cached = stored(tmp_path / ".dvc/cache", digest)
    cached.parent.mkdir(parents=True)
    locked.rename(cached)
    lock = {"stages": {"evaluate": {"outs": [{"path": "reports/metrics.json", "md5": digest}]}}}
    assert locked_metrics(tmp_path, lock) == {"accuracy": 0.9}
    cached.write_bytes(b"\xff\xfe")  # not UTF-8, not JSON: nothing, never a traceback
    assert locked_metrics(tmp_path, lock) == {}
    assert locked_metrics(tmp_path, {"stages": {}}) == {}


def test_yaml_is_read_by_dvcs_rules():
    assert read_yaml("a: on\nb: 1e-3\n") == {"a": "on", "b": 0.001}
    with pytest.raises((YAMLError, ValueError)):
        read_yaml("a: 1\na: 2\n")
    with pytest.raises(YAMLError):
        read_yaml("a: [\n")


def test_git_show_is_none_where_git_has_nothing(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "ok.txt").write_text("ok\n")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\n")
    (tmp_path / "big.yaml").write_text("a: 1\n" * 300_000)  # 1.2 MB: never read
    (tmp_path / "linked").symlink_to("/etc")  # a link is its target's name, never followed
    subprocess.run("git add . && git -c user.name=t -c user.email=t@t commit -qm x", shell=True, cwd=tmp_path, check=True)
    assert git_show(tmp_path, "HEAD", "ok.txt") == "ok\n"
    assert git_show(tmp_path, "HEAD", "big.yaml") is None and git_show(tmp_path, "HEAD", "big.yaml", 2 << 20)
    assert git_show(tmp_path, "HEAD", "linked") == "/etc" and git_show(tmp_path, "HEAD", "linked/passwd") is None
    assert git_show(tmp_path, "--output=x", "ok.txt") is None and not (tmp_path / "x").exists()
    nowhere = tmp_path.parent / f"{tmp_path.name}-not-a-repository"  # tmp_path is one
    nowhere.mkdir()
    assert all(git_show(nowhere, "HEAD", "ok.txt") is None for _ in range(50))  # git ends before it is asked
    assert git_show(tmp_path, "HEAD", "bin.txt") is None
    assert git_show(tmp_path, "HEAD", "missing") is None
    assert git_show(tmp_path, "no-such-rev", "ok.txt") is None


def test_md5_is_what_dvc_records(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "big").write_bytes(b"a" * (3 << 20))  # read in blocks
    assert md5(tmp_path / "empty") == "d41d8cd98f00b204e9800998ecf8427e"
    assert md5(tmp_path / "big") == hashlib.md5(b"a" * (3 << 20)).hexdigest()


def test_yaml_anyone_wrote_is_read_within_bounds_and_as_dvc_reads_it():
    assert read_yaml("a: 1e-3\nb: on\nc: &x [1]\nd: *x\n") == {"a": 0.001, "b": "on", "c": [1], "d": [1]}
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
    deep = "[" * 100 + "]" * 100
    for text in (laughs, deep, "a: &a [*a]\n", "x" * (2 << 20)):
        with pytest.raises(ValueError, match="not read"):
            read_yaml(text)
    with pytest.raises(YAMLError):
        read_yaml("a: 1\na: 2\n")
