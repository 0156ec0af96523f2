"""Run one stage notebook headless with papermill: ``dataops-run notebooks/02_process_data.ipynb``.

This is each stage's ``cmd`` in dvc.yaml. Around papermill it adds what a
class needs: params.yaml is checked before a kernel starts; every cell is
announced as it runs, and stopped after ``runner.cell_timeout`` seconds; the
executed notebook is kept in reports/ with papermill's timestamps removed, so
identical runs give an identical dvc.lock.

Whatever goes wrong ends in one line that names the file, key or cell, and
never in a dvc.lock that lies: a notebook, helper module or parameter that
changes while the stage runs fails the stage (DVC would otherwise record the
new version next to outputs of the old one), and after any failure the
stage's last good outputs, as dvc.lock records them, are put back from DVC's
cache. The executed notebook of a failed run goes to reports/failed/, where
the failing cell is marked and where ``dvc checkout`` will not overwrite it.
Under ``dvc``, a run that ends well leaves a record of the sources it ran
(``ran_record``): the workspace's dvc command checks them once DVC has hashed
them, which closes the window between ✓ and the lock write
(dataops_kit.runner.dvclock).

Students rerun stages all lesson long, so the runner also starts the kernel
itself, to boot while papermill is imported, and stops it as soon as the last
cell is done (``make bench`` measures the gain).
"""

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from ruamel.yaml import YAMLError

from dataops import STAGE, WorkspaceError, paths
from dataops.params import parse, read
from dataops_kit.facts import cache_dir, stored
from dataops_kit.runner.kernel import KERNEL, dvc_process
from dataops_kit.runner.kernel import start as start_kernel
from dataops_kit.runner.kernel import stop as stop_kernel
from dataops_kit.runner.notebook import clean_md5, dumps, strip, tidy_executed, trust

QUIET_SECONDS = 20  # a cell silent this long gets a line saying it still runs
RECOVERY = "The last commit's data and model, all of them: git checkout HEAD -- dvc.lock && dvc checkout --force"


class StageFailed(Exception):
    """What went wrong, in one line; `code` is the exit status."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def _name_source(report: dict, notebook: Path) -> dict:
    """Record in an executed notebook the notebook it ran (papermill recorded the clean copy's path)."""
    papermill = report.get("metadata", {}).get("papermill")
    if isinstance(papermill, dict):
        papermill["input_path"] = notebook.as_posix()
    return report


def _os_error(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        where = f" writing {error.filename}" if error.filename else ""
        return f"the disk is full{where}: free some space (dvc gc -w removes unused cache), then dvc repro"
    return f"could not read or write {error.filename or 'a file'}: {error.strerror or error}"


def _say(text):
    print(text, flush=True)


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
    """This notebook's stage in dvc.yaml: its name, its entry (deps, params,
    outs), and every path some stage writes (a stage's entry also says, as
    "feeds", whether another stage reads its outputs)."""
    try:
        stages = (parse((root / "dvc.yaml").read_text()) or {}).get("stages", {})
    except (OSError, YAMLError):
        stages = {}
    written = {str(out) for stage in stages.values() for out in stage.get("outs", [])}
    read = {str(dep) for stage in stages.values() for dep in stage.get("deps", [])}
    for name, stage in stages.items():
        if str(stage.get("cmd", "")).split()[-1:] == [notebook.as_posix()]:
            return name, {**stage, "feeds": bool(read & set(map(str, stage.get("outs", []))))}, written
    return notebook.stem.split("_", 1)[-1], {"deps": [notebook.as_posix()]}, written


def _digest(path: Path):
    """md5 of a file (of a notebook: of its clean form, as DVC counts it, see
    dataops_kit.runner.dvchash), or of every file in a folder but the ones .dvcignore lists."""
    if path.is_file():
        clean = clean_md5(path) if path.suffix == ".ipynb" else None
        return clean[0] if clean else hashlib.md5(path.read_bytes()).hexdigest()
    if not path.is_dir():
        return None
    digest = hashlib.md5()
    for file in sorted(path.rglob("*")):
        parts = file.relative_to(path).parts
        if file.is_file() and file.suffix != ".pyc" and not {"__pycache__", ".ipynb_checkpoints"} & set(parts):
            digest.update("/".join(parts).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def _sources(root: Path, stage: dict, written: set, params: dict) -> dict:
    """What the stage is made of and a student can edit while it runs: the deps
    no stage writes (the notebook, the helper modules) and its parameters."""
    state = {dep: _digest(root / dep) for dep in stage.get("deps", []) if dep not in written}
    for key in [k for k in stage.get("params", []) if isinstance(k, str)]:
        node = params
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        state[f"params.yaml: {key}"] = repr(node)
    return state


def _changed(root: Path, stage: dict, written: set, before: dict) -> list:
    try:
        params = parse((root / "params.yaml").read_text())
    except (OSError, YAMLError):  # unreadable now: every parameter counts as changed
        params = {}
    after = _sources(root, stage, written, params)
    return [name for name in before if after.get(name) != before[name]]


def ran_record(root: Path, name: str) -> Path:
    """Where a run under `dvc` records the sources it ran, for the dvc command to check."""
    return root / ".dvc" / "tmp" / "dataops-ran" / f"{name}.json"


def changed_since(root: Path, notebook: Path, before: dict) -> list:
    """The sources of NOTEBOOK's stage (its notebook, helpers, params) that differ from BEFORE."""
    _, stage, written = _stage(root, notebook)
    return _changed(root, stage, written, before)


def restore_last_good(root: Path, name: str):
    """Put the stage's outputs back as dvc.lock records them, from DVC's cache
    (DVC deleted them before the run). An output that cannot be put back (not
    in the cache, a full disk) is removed rather than left wrong or
    half-written. Returns the paths put back and the files removed."""
    try:
        outs = parse((root / "dvc.lock").read_text())["stages"][name]["outs"]
    except (OSError, YAMLError, KeyError, TypeError):
        return [], []
    restored, removed = [], []
    for out in outs:
        checksum, target = str(out.get("md5", "")), root / out["path"]
        if _digest(target) == checksum:
            continue
        existed = target.exists()
        try:
            target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored(cache_dir(root), checksum), target)
            restored.append(out["path"])
        except (OSError, ValueError):  # no md5, not in the cache, or no room: never leave a partial copy
            target.unlink(missing_ok=True)
            if existed:
                removed.append(out["path"])
    return restored, removed


def _own_code(root: Path) -> None:
    """Run this workspace's helper modules, whichever venv started us (a copied
    workspace whose venv still points at the original, DVC's experiment copies):
    dvc.lock hashes root/src, so that is the code that must run, here and in
    the kernel, which inherits PYTHONPATH."""
    import dataops

    src = root / "src"
    if Path(dataops.__file__).resolve().parent != (src / "dataops").resolve() and (src / "dataops").is_dir():
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "dataops_kit.runner.stage", *sys.argv[1:]])


def run(notebook: Path) -> int:
    where = paths()
    notebook = Path(os.path.relpath(notebook.resolve(), where.root))
    name, stage, written = _stage(where.root, notebook)
    executed = where.reports / notebook.name
    failed = where.reports / "failed" / notebook.name
    try:
        return _execute(where, notebook, name, stage, written, executed, failed)
    except StageFailed as error:
        ran = error.code != 2  # 2: stopped before any kernel started; reports/ holds no notebook of this run
        if ran and executed.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            try:
                failed.write_text(dumps(_name_source(json.loads(executed.read_text()), notebook)))
                executed.unlink()
            except (OSError, ValueError):
                executed.replace(failed)
        _say(f"✗ {name}: {error}")
        if ran and failed.exists():
            _say(f"  The executed notebook, as far as it ran: {failed.relative_to(where.root)}")
        restored, removed = restore_last_good(where.root, name)
        if restored:
            _say(f"  Put back this stage's last good outputs, as dvc.lock records them: {', '.join(restored)}")
        if removed:
            _say(f"  Removed, as they could not be put back: {', '.join(removed)}")
        _say(f"  {RECOVERY}")
        return error.code


def _execute(where, notebook, name, stage, written, executed, failed) -> int:
    try:
        params = read(where.params)
    except WorkspaceError as error:
        raise StageFailed(str(error), code=2) from None
    try:
        source = json.loads((where.root / notebook).read_text())
        cells = source["cells"]
    except FileNotFoundError:
        raise StageFailed(f"{notebook} does not exist: check the stage's cmd in dvc.yaml", code=2) from None
    except (ValueError, KeyError, TypeError) as error:
        raise StageFailed(f"{notebook} is not a notebook (invalid JSON: {error}); "
                          f"git checkout {notebook} restores the committed one", code=2) from None
    before = _sources(where.root, stage, written, params)
    record = ran_record(where.root, name)
    record.unlink(missing_ok=True)
    kernel_name = (source.get("metadata", {}).get("kernelspec") or {}).get("name") or KERNEL
    timeout = params["runner"]["cell_timeout"]

    os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
    os.environ[STAGE] = name  # the kernel writes the pipeline's files, not scratch/ (dataops.output_paths)
    from jupyter_client.kernelspec import NoSuchKernel

    executed.parent.mkdir(parents=True, exist_ok=True)
    executed.unlink(missing_ok=True)  # from here on, an executed notebook is this run's
    failed.unlink(missing_ok=True)
    titles = headlines(cells)
    code_cells = len(titles)
    current = {"count": 0, "headline": "", "since": time.monotonic()}

    def announce(cell, cell_index):
        if cell.cell_type == "code":
            current["count"] += 1
            current["headline"] = titles[current["count"] - 1] if current["count"] <= code_cells else ""
            current["since"] = time.monotonic()
            _say(f"  {name} [{current['count']}/{code_cells}] {current['headline']}")

    quiet = float(os.environ.get("DATAOPS_QUIET_SECONDS") or QUIET_SECONDS)
    done = threading.Event()

    def say_what_still_runs():
        """A cell silent for `quiet` seconds gets a line, and another every `quiet` seconds after."""
        said = (0, 0)  # (cell, times said)
        while not done.wait(min(1.0, quiet)):
            cell, running = current["count"], time.monotonic() - current["since"]
            times = said[1] if said[0] == cell else 0
            if cell and running >= quiet * (times + 1):
                said = (cell, times + 1)
                _say(f"  {name} [{cell}/{code_cells}] still running after {running:.0f} s: {current['headline']}. "
                     f"Ctrl-C stops it; runner.cell_timeout in params.yaml ({timeout} s) stops it by itself")

    threading.Thread(target=say_what_still_runs, daemon=True).start()

    def where_in_notebook():
        return f"cell [{current['count']}] ({current['headline']})"

    _say(f"▶ {name}: {notebook} → {executed.relative_to(where.root)}")
    started = time.perf_counter()
    kernel = None
    scratch = Path(tempfile.mkdtemp(prefix="dataops-run-"))
    clean = scratch / notebook.name
    try:
        clean.write_text(dumps(strip(source)))
        kernel = start_kernel(kernel_name, cwd=where.root / notebook.parent, later_stages=stage.get("feeds", False))
        # The kernel boots (about 0.5 s) while papermill is imported (about 0.3 s).
        logging.getLogger("papermill").setLevel(logging.ERROR)
        import papermill
        from nbclient.exceptions import DeadKernelError

        def execute(km):
            papermill.execute_notebook(
                # The clean form (what git stores and DVC counts), so that the report is the
                # same from a fresh clone as from the editor's copy (cell ids, editor metadata).
                str(clean), os.path.relpath(executed), cwd=str(where.root / notebook.parent), progress_bar=False,
                on_cell_start=announce, km=km, kernel_name=kernel_name, execution_timeout=timeout,
            )

        try:
            try:
                execute(kernel)
            except RuntimeError as error:
                # jupyter_client picks free ports, then the kernel binds them: on a busy machine another
                # process can take one in between, and the kernel dies before it answers. Once more,
                # with new ports, as no cell has run.
                if "before replying to kernel_info" not in str(error) or current["count"]:
                    raise
                stop_kernel(kernel)
                kernel = start_kernel(kernel_name, cwd=where.root / notebook.parent, later_stages=False)
                execute(kernel)
        except papermill.PapermillExecutionError as error:
            detail = error.evalue if error.ename == "WorkspaceError" else f"{error.ename}: {error.evalue}"
            raise StageFailed(f"failed in cell [{error.exec_count}]: {detail}") from None
        except TimeoutError:
            raise StageFailed(f"{where_in_notebook()} ran longer than runner.cell_timeout = {timeout} s "
                              f"(params.yaml) and was stopped: an endless loop? Raise the limit there "
                              f"if it really needs longer") from None
        except DeadKernelError:
            raise StageFailed(f"the kernel died in {where_in_notebook()}: it crashed or ran out of "
                              f"memory") from None
        except RuntimeError as error:  # jupyter_client's words for a kernel that never answered
            raise StageFailed(f"the kernel '{kernel_name}' did not start ({error}); `dvc repro` tries again") from None
    except NoSuchKernel:
        raise StageFailed(f"{notebook} asks for the kernel '{kernel_name}', which is not installed: run `make`, "
                          f"which installs the workspace's kernel '{KERNEL}'") from None
    except KeyboardInterrupt:
        raise StageFailed(f"interrupted in {where_in_notebook()}; `dvc repro` runs the stage again", code=130) from None
    except OSError as error:
        raise StageFailed(_os_error(error)) from None
    finally:
        done.set()
        if kernel is not None:
            stop_kernel(kernel)
        shutil.rmtree(scratch, ignore_errors=True)

    changed = _changed(where.root, stage, written, before)
    if changed:
        raise StageFailed(f"{', '.join(changed)} changed while the stage ran, so its outputs may come from the "
                          f"old version; nothing was recorded. Run `dvc repro` again")
    report = _name_source(tidy_executed(json.loads(executed.read_text())), notebook)
    executed.write_text(dumps(report))
    trust(report)
    dvc = dvc_process()
    if dvc:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"dvc": dvc, "notebook": notebook.as_posix(), "sources": before}))
        except OSError as error:
            record.unlink(missing_ok=True)
            raise StageFailed(_os_error(error)) from None
    _say(f"✓ {name} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].endswith(".ipynb"):
        _say("usage: dataops-run notebooks/NN_stage.ipynb")
        return 2
    try:
        root = paths().root
    except WorkspaceError as error:
        _say(f"✗ {error}")
        return 2
    _own_code(root)
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


if __name__ == "__main__":
    cli()
