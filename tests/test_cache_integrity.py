"""A damaged file in DVC's cache: what a student sees, and how it heals.

`dvc checkout` trusts the cache (it names files by md5 but does not re-hash
them), so it copies the damaged bytes out without a word. `dvc status` is what
notices; because the pipeline is deterministic, `dvc repro` then rebuilds the
exact file, and that also repairs the cache."""

from helpers import locked_md5, md5, run


def test_damaged_cache_is_reported_by_status_and_healed_by_repro(workspace):
    good = locked_md5(workspace, "models/model.skops")
    cached = workspace / ".dvc/cache/files/md5" / good[:2] / good[2:]
    cached.chmod(0o644)
    cached.write_bytes(cached.read_bytes()[:-10] + b"corrupted!")
    (workspace / "models/model.skops").unlink()

    run("dvc checkout", cwd=workspace)
    assert md5(workspace / "models/model.skops") != good
    status = run("dvc status", cwd=workspace).stdout
    assert "not in cache:       models/model.skops" in status

    run("dvc repro", cwd=workspace)
    assert md5(workspace / "models/model.skops") == good
    assert md5(cached) == good
    assert "up to date" in run("dvc status", cwd=workspace).stdout
