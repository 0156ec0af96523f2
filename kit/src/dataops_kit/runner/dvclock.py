"""DVC as `make` installs it: dvc.lock records what the kernel ran, or nothing.

The runner checks its sources (notebook, helper modules, parameters) before
and after the kernel runs, but DVC hashes them about half a second after ✓.
A save in that half second would be recorded as what ran. So a run that ends
well leaves a record of what it ran (dataops_kit.runner.stage.ran_record), and
the workspace's dvc command, once DVC has hashed the stage's dependencies and
before it writes anything (run cache, cache, dvc.lock), compares the sources
with that record. A difference fails the stage, naming the file.

And when a stage fails anywhere (that check, a full disk or a cache link
error after ✓, Ctrl-C, a command that is not found), DVC has already deleted
the old outputs and the new ones are not recorded: dvc.lock is put back as it was (DVC writes it in place, so a
full disk can leave it cut short), then the stage's outputs as that dvc.lock
records them, from the cache, and the user gets the recovery line. What is
on disk then matches dvc.lock, or the line names the files that do not.

Internals relied on, in DVC only (checked against the pinned version; any
other DVC runs stock, with a one-line note): ``dvc.stage.Stage.save_deps``
(hashes the dependencies of a stage that ran) and
``Stage.reproduce`` (deletes the outputs, runs the command, stores the
outputs) and ``Stage.dump`` (writes the stage's lock entry).
"""

import json
import os
import sys
from pathlib import Path


TESTED = "3.67.1"  # dvc, as pinned in requirements.txt


class ChangedAfterRun(Exception):
    pass


def _runner():
    """The stage runner's module, imported only once a stage has run (it imports
    jupyter_client: a no-op `dvc repro` should not pay for that)."""
    from dataops_kit.runner import stage

    return stage


def _forget(stage) -> None:
    _runner().ran_record(Path(stage.repo.root_dir), stage.name).unlink(missing_ok=True)


def _record(stage):
    """What this dvc command's run of STAGE recorded, or None (not run by the runner, or by another dvc)."""
    try:
        data = json.loads(_runner().ran_record(Path(stage.repo.root_dir), stage.name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("dvc") == os.getpid() else None


def _check(stage) -> None:
    record = _record(stage)
    if record:
        changed = _runner().changed_since(Path(stage.repo.root_dir), Path(record["notebook"]), record["sources"])
        if changed:
            raise ChangedAfterRun(f"{', '.join(changed)} changed after the stage ran, before DVC recorded it")


def _put_back(stage, lock: Path, before, error: BaseException, ran: bool) -> None:
    """After a failure: dvc.lock as it was, then the stage's outputs as it records them.
    Says so (✗, what came back, the recovery) unless there was nothing to do, as after
    a failure the runner has already reported and repaired."""
    root, runner = Path(stage.repo.root_dir), _runner()
    lines = []
    try:
        if before is not None and (not lock.exists() or lock.read_bytes() != before):
            lock.write_bytes(before)  # DVC writes dvc.lock in place: a full disk can leave it cut short
    except OSError:
        lines.append(f"  {lock.name} could not be put back: git checkout HEAD -- {lock.name}")
    restored, removed = runner.restore_last_good(root, stage.name)
    if restored:
        lines.append(f"  Put back this stage's last good outputs, as dvc.lock records them: {', '.join(restored)}")
    if removed:
        lines.append(f"  Removed, as they could not be put back: {', '.join(removed)}")
    if not (ran or lines):
        return
    reason = str(error) if isinstance(error, ChangedAfterRun) else f"{type(error).__name__}: {error}"
    reason = (reason.splitlines() or [""])[0]
    first = f"ran, but DVC could not record it ({reason})" if ran else f"failed ({reason})"
    print("\n".join([f"✗ {stage.name}: {first}", *lines, f"  {runner.RECOVERY}"]), flush=True)


def _lock(stage) -> Path:
    return Path(stage.repo.root_dir) / "dvc.lock"


def _read(lock: Path):
    try:
        return lock.read_bytes()
    except OSError:
        return None


def _outputs_missing(stage) -> bool:
    return any(not Path(out.fs_path).exists() for out in stage.outs)


def install() -> bool:
    import dvc

    if dvc.__version__ != TESTED:
        print(f"Note: DVC {dvc.__version__} is not the tested {TESTED}: a save in the second after ✓ is "
              f"not checked (make restores the pinned packages).", file=sys.stderr)
        return False
    from dvc.stage import Stage

    save_deps, reproduce, dump = Stage.save_deps, Stage.reproduce, Stage.dump

    def checked_save_deps(self, *args, **kwargs):
        save_deps(self, *args, **kwargs)
        _check(self)

    def guarded_reproduce(self, *args, **kwargs):
        # Run, hash, store: DVC deletes the outputs first, so a failure anywhere
        # after that (the runner's own failures it has already repaired) puts them back.
        before = _read(_lock(self))
        try:
            return reproduce(self, *args, **kwargs)
        except BaseException as error:
            ran = bool(_record(self))
            if self.cmd and (ran or _outputs_missing(self)):
                _put_back(self, _lock(self), before, error, ran)
            if ran:
                _forget(self)
            raise

    def guarded_dump(self, *args, **kwargs):
        # The lock write, after a run: DVC writes dvc.lock in place.
        before = _read(_lock(self))
        try:
            dump(self, *args, **kwargs)
        except BaseException as error:
            if _record(self):
                _put_back(self, _lock(self), before, error, ran=True)
            raise
        finally:
            if _record(self):
                _forget(self)

    Stage.save_deps, Stage.reproduce, Stage.dump = checked_save_deps, guarded_reproduce, guarded_dump
    return True
