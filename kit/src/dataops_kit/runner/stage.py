"""Run one stage notebook headless with papermill: ``dataops-run notebooks/02_process_data.ipynb``.

This is each stage's ``cmd`` in dvc.yaml. Around papermill it adds what a
class needs: params.yaml is checked before a kernel starts; every cell is
announced as it runs, and stopped after ``runner.cell_timeout`` seconds; the
executed notebook is kept in reports/ with papermill's timestamps removed, so
identical runs give an identical dvc.lock.

What DVC records must be what ran. The kernel runs the notebook's clean form
(what git stores), and before the runner exits it writes that clean form back
over the notebook, unless the file changed meanwhile: an editor's outputs go,
and DVC, which hashes the file after the command exits, records what a fresh
clone has. A notebook, helper module or parameter that changes while the
stage runs fails the stage. One saved in the moment between the runner's exit
and DVC's hash is caught afterwards (dataops_kit.runner.ran).

Whatever goes wrong where this code runs ends in one line that names the
file, key or cell, and the stage's last good outputs, as dvc.lock records
them, are put back from DVC's cache (DVC deleted them before the run). The
executed notebook of a run that failed in a cell goes to reports/failed/,
where that cell is marked and where ``dvc checkout`` will not overwrite it
(papermill writes it once, at the end: a run stopped by its time limit, a
dead kernel or Ctrl-C leaves none, and its line names the cell).
"""

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from dataops import STAGE, WorkspaceError, paths
from dataops.params import parse, read
from dataops_kit.facts import YAMLError, cache_dir, dvc_md5, lock_outs, read_lock, stages, stored
from dataops_kit.runner import ran
from dataops_kit.runner.kernel import KERNEL
from dataops_kit.runner.kernel import start as start_kernel
from dataops_kit.runner.kernel import stop as stop_kernel
from dataops_kit.notebook import dumps, strip, tidy_executed, trust

QUIET_SECONDS = 20  # a cell silent this long gets a line saying it still runs
RECOVERY = "The last commit's data and model, all of them: git checkout HEAD -- dvc.lock && dvc checkout --force"


class StageFailed(Exception):
    """What went wrong, in one line; `code` is the exit status (2: before any kernel started)."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def _say(text):
    print(text, flush=True)


def _os_error(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        return f"the disk is full{where}: free some space (dvc gc -w removes unused cache), then dvc repro"
    return f"could not read or write {error.filename or 'a file'}: {error.strerror or error}"


def _first_sentence(markdown):
    """The first sentence of a markdown cell's prose, without heading marks."""
    for line in markdown.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            sentence = re.split(r"(?<=[.:;!?])\s", line, maxsplit=1)[0].rstrip(".:;")
            return sentence if len(sentence) <= 70 else sentence[:69] + "…"
    return ""


def headlines(cells) -> list:
    """For each code cell, the line a student recognises it by: what the markdown
    cell just before it says it does, else its own first comment or line."""
    found, previous = [], None
    for cell in cells:
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "code":
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                found.append("parameters from params.yaml")
            elif previous and previous.get("cell_type") == "markdown" and _first_sentence("".join(previous["source"])):
                found.append(_first_sentence("".join(previous["source"])))
            else:
                line = next((l.strip() for l in source.splitlines() if l.strip()), "")
                found.append(line.lstrip("# ")[:70])
        previous = cell
    return found


def _stage(root: Path, notebook: Path):
    """This notebook's stage in dvc.yaml: (name, entry). Under DVC, the stage DVC names in $DVC_STAGE;
    run by hand, the stage whose command names the notebook; else the notebook counts as its own stage."""
    try:
        declared = stages(parse((root / "dvc.yaml").read_text()))
    except (OSError, YAMLError, ValueError):
        declared = {}
    if os.environ.get("DVC_STAGE") in declared:
        return os.environ["DVC_STAGE"], declared[os.environ["DVC_STAGE"]]
    for name, stage in declared.items():
        if notebook.as_posix() in str(stage.get("cmd", "")).split():
            return name, stage
    return notebook.stem.split("_", 1)[-1], {"deps": [notebook.as_posix()]}


def restore_last_good(root: Path, name: str):
    """Put the stage's outputs back as dvc.lock records them, from DVC's cache
    (DVC deleted them before the run). An output that cannot be put back (not
    in the cache, a full disk) is removed rather than left wrong or
    half-written. Returns the paths put back and the files removed."""
    restored, removed = [], []
    for path, checksum in lock_outs(stages(read_lock(root)).get(name)):
        if not isinstance(path, str):
            continue
        target = root / path
        if dvc_md5(target) == checksum:
            continue
        existed = target.exists()
        try:
            target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored(cache_dir(root), checksum), target)
            restored.append(path)
        except (OSError, ValueError):  # no md5, not in the cache, or no room: never leave a partial copy
            target.unlink(missing_ok=True)
            if existed:
                removed.append(path)
    return restored, removed


class Progress:
    """Announces each code cell as it starts, and a cell silent for QUIET_SECONDS."""

    def __init__(self, name, cells, timeout):
        self.name, self.titles, self.timeout = name, headlines(cells), timeout
        self.count, self.headline, self.since = 0, "", time.monotonic()
        self.quiet = float(os.environ.get("DATAOPS_QUIET_SECONDS") or QUIET_SECONDS)
        self.done = threading.Event()
        threading.Thread(target=self._say_what_still_runs, daemon=True).start()

    def on_cell_start(self, cell, cell_index):
        if cell.cell_type == "code":
            self.count += 1
            self.headline = self.titles[self.count - 1] if self.count <= len(self.titles) else ""
            self.since = time.monotonic()
            _say(f"  {self.name} [{self.count}/{len(self.titles)}] {self.headline}")

    def where(self):
        return f"cell [{self.count}] ({self.headline})"

    def _say_what_still_runs(self):
        said = (0, 0)  # (cell, times said)
        while not self.done.wait(min(1.0, self.quiet)):
            cell, running = self.count, time.monotonic() - self.since
            times = said[1] if said[0] == cell else 0
            if cell and running >= self.quiet * (times + 1):
                said = (cell, times + 1)
                _say(f"  {self.name} [{cell}/{len(self.titles)}] still running after {running:.0f} s: {self.headline}. "
                     f"Ctrl-C stops it; runner.cell_timeout in params.yaml ({self.timeout} s) stops it by itself")


def _papermill(kernel, clean: dict, executed: Path, cwd: Path, progress: Progress):
    """Run CLEAN into EXECUTED on KERNEL, each way it can fail as one line."""
    logging.getLogger("papermill").setLevel(logging.ERROR)
    import nbformat
    import papermill  # about 0.3 s, while the kernel boots
    from nbclient.exceptions import DeadKernelError

    try:
        papermill.execute_notebook(
            nbformat.from_dict(clean), os.path.relpath(executed), cwd=str(cwd), progress_bar=False,
            on_cell_start=progress.on_cell_start, km=kernel, kernel_name=kernel.kernel_name,
            execution_timeout=progress.timeout,
            # Written once, at the end or at a failing cell, not twice a cell while the kernel waits.
            request_save_on_cell_execute=False)
    except papermill.PapermillExecutionError as error:
        detail = error.evalue if error.ename == "WorkspaceError" else f"{error.ename}: {error.evalue}"
        raise StageFailed(f"failed in cell [{error.exec_count}]: {detail}") from None
    except TimeoutError:
        raise StageFailed(f"{progress.where()} ran longer than runner.cell_timeout = {progress.timeout} s "
                          f"(params.yaml) and was stopped: an endless loop? Raise the limit there "
                          f"if it really needs longer") from None
    except DeadKernelError:
        raise StageFailed(f"the kernel died in {progress.where()}: it crashed or ran out of memory") from None
    except RuntimeError as error:  # jupyter_client's words for a kernel that never answered
        raise StageFailed(f"the kernel '{kernel.kernel_name}' did not start ({error}); "
                          f"`dvc repro` tries again") from None


def _kernel_run(notebook: Path, kernel_name: str, clean: dict, executed: Path, cwd: Path, progress: Progress):
    """Start the kernel first, so that it boots while papermill is imported, then run the notebook on it."""
    from jupyter_client.kernelspec import NoSuchKernel

    try:
        try:
            kernel = start_kernel(kernel_name, cwd=cwd)
        except NoSuchKernel:
            raise StageFailed(f"{notebook} asks for the kernel '{kernel_name}', which is not installed: run "
                              f"`make`, which installs the workspace's kernel '{KERNEL}'") from None
        try:
            _papermill(kernel, clean, executed, cwd, progress)
        finally:
            stop_kernel(kernel)
    except KeyboardInterrupt:
        raise StageFailed(f"interrupted in {progress.where()}; `dvc repro` runs the stage again", code=130) from None
    except OSError as error:
        raise StageFailed(_os_error(error)) from None


def _read_inputs(where, notebook: Path, name: str):
    """(params, the notebook's bytes, the notebook as read): what the run starts from, or StageFailed (code 2)."""
    try:
        params = read(where.params)
    except WorkspaceError as error:
        raise StageFailed(str(error), code=2) from None
    try:
        original = (where.root / notebook).read_bytes()
        source = json.loads(original)
        source["cells"]
    except FileNotFoundError:
        raise StageFailed(f"{notebook} does not exist: check the stage's cmd in dvc.yaml", code=2) from None
    except (ValueError, KeyError, TypeError) as error:
        raise StageFailed(f"{notebook} is not a notebook (invalid JSON: {error}); "
                          f"git checkout {notebook} restores the committed one", code=2) from None
    lies = ran.lies(where.root, but=name)
    if lies:
        raise StageFailed(lies[0], code=2)
    return params, original, source


def _changed(root: Path, stage: dict, before: dict) -> list:
    """The sources (deps, params sections) that differ now from BEFORE."""
    try:
        params = parse((root / "params.yaml").read_text())
    except (OSError, YAMLError, ValueError):  # unreadable now: every parameter counts as changed
        params = {}
    after = ran.sources(root, stage, params)
    return ([path for path, digest in before["deps"].items() if after["deps"].get(path) != digest]
            + [f"params.yaml: {key}" for key, value in before["params"].items() if after["params"].get(key) != value])


def _write_clean(path: Path, original: bytes, clean: str) -> None:
    """The notebook as git stores it, in place of the editor's copy, unless it was saved since the run began."""
    data = clean.encode()
    if data != original and path.read_bytes() == original:
        partial = path.with_name(f".{path.name}.dataops-run")
        partial.write_bytes(data)
        os.replace(partial, path)


def _execute(where, notebook, name, stage, executed, failed) -> int:
    params, original, source = _read_inputs(where, notebook, name)
    clean = strip(json.loads(original))
    before = ran.sources(where.root, stage, params)
    kernel_name = (source.get("metadata", {}).get("kernelspec") or {}).get("name") or KERNEL
    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    os.environ[STAGE] = name  # the kernel writes the pipeline's files, not scratch/ (dataops.output_paths)
    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)  # from here on, an executed notebook is this run's
    failed.unlink(missing_ok=True)
    progress = Progress(name, clean["cells"], params["runner"]["cell_timeout"])
    _say(f"▶ {name}: {notebook} → {executed.relative_to(where.root)}")
    started = time.perf_counter()
    try:
        _kernel_run(notebook, kernel_name, clean, executed, where.root / notebook.parent, progress)
    finally:
        progress.done.set()
    changed = _changed(where.root, stage, before)
    if changed:
        raise StageFailed(f"{', '.join(changed)} changed while the stage ran, so its outputs may come from the "
                          f"old version; nothing was recorded. Run `dvc repro` again")
    try:
        report = tidy_executed(json.loads(executed.read_text()))
        report.get("metadata", {}).get("papermill", {})["input_path"] = notebook.as_posix()
        executed.write_text(dumps(report))
        _write_clean(where.root / notebook, original, dumps(clean))
        trust(report)
        if os.environ.get("DVC_STAGE"):  # DVC sets it for each stage's command: it will hash and record
            # What ran: the sources as they were at the start (unchanged since), the notebook in its clean form.
            before["deps"][notebook.as_posix()] = hashlib.md5(dumps(clean).encode()).hexdigest()
            ran.write(where.root, name, before, stage)
    except OSError as error:
        raise StageFailed(_os_error(error)) from None
    _say(f"✓ {name} in {time.perf_counter() - started:.1f} s")
    return 0


def _fail(where, notebook, name, error: StageFailed, executed: Path, failed: Path) -> int:
    """Say what went wrong, keep the executed notebook in reports/failed/, and put the last good outputs back."""
    ran_kernel = error.code != 2  # 2: stopped before any kernel started; reports/ holds no notebook of this run
    if ran_kernel and executed.exists():
        failed.parent.mkdir(parents=True, exist_ok=True)
        try:
            report = json.loads(executed.read_text())
            report.get("metadata", {}).get("papermill", {})["input_path"] = notebook.as_posix()
            failed.write_text(dumps(report))
            executed.unlink()
        except (OSError, ValueError, AttributeError):
            executed.replace(failed)
    _say(f"✗ {name}: {error}")
    if ran_kernel and failed.exists():
        _say(f"  The executed notebook, as far as it ran: {failed.relative_to(where.root)}")
    restored, removed = restore_last_good(where.root, name)
    if restored:
        _say(f"  Put back this stage's last good outputs, as dvc.lock records them: {', '.join(restored)}")
    if removed:
        _say(f"  Removed, as they could not be put back: {', '.join(removed)}")
    _say(f"  {RECOVERY}")
    return error.code


def run(notebook: Path) -> int:
    where = paths()
    notebook = Path(os.path.relpath(notebook.resolve(), where.root))
    name, stage = _stage(where.root, notebook)
    executed = where.reports / notebook.name
    failed = where.reports / "failed" / notebook.name
    try:
        return _execute(where, notebook, name, stage, executed, failed)
    except StageFailed as error:
        return _fail(where, notebook, name, error, executed, failed)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].endswith(".ipynb"):
        _say("usage: dataops-run notebooks/NN_stage.ipynb")
        return 2
    try:
        paths()
    except WorkspaceError as error:
        _say(f"✗ {error}")
        return 2
    return run(Path(argv[0]))


def cli():
    """`dataops-run`: main, then exit at once."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file is written and closed and the kernel is gone: skip tearing
    # down the interpreter (papermill's modules, zmq), 0.13 s per stage.
    os._exit(code)

