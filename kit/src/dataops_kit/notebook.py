"""Notebook normal forms, in plain JSON so they cost milliseconds.

* ``strip``: the form notebooks are committed in. Outputs and execution
  counts go, except in cells tagged ``keep_output`` (the cells nbval
  compares), which keep their outputs and the count that "Restart and Run
  All" gives them. Only the metadata that means something stays. This is what
  ``nbstripout --keep-count`` calls clean, and the tests hold it to that.
* ``tidy_executed``: an executed notebook (reports/) keeps its outputs but
  loses papermill's timestamps and the kernel's Python version, so identical
  runs give identical bytes on every machine.

The same ``strip`` serves as git's clean filter, as JupyterLab's pre-save
hook and as the check in CI, so the file on disk, git's view and DVC's hash
all agree.
"""

import json
import sys
from pathlib import Path

NOTEBOOK_METADATA = ("kernelspec",)
CELL_METADATA = ("tags",)
TIMING = ("start_time", "end_time", "duration")


def _lines(text):
    return text.splitlines(True) if isinstance(text, str) else text


def _split_output(output):
    """Store multi-line output text as a list of lines, as nbformat writes it."""
    if output.get("output_type") == "stream":
        output["text"] = _lines(output.get("text", ""))
    for mime, value in output.get("data", {}).items():
        if mime != "application/json" and not mime.endswith("+json"):
            output["data"][mime] = _lines(value)
    output.pop("transient", None)
    return output


def strip(nb: dict) -> dict:
    nb["metadata"] = {k: nb["metadata"][k] for k in NOTEBOOK_METADATA if k in nb.get("metadata", {})}
    code_cells = 0
    for index, cell in enumerate(nb.get("cells", [])):
        cell["id"] = str(index)
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA and v}
        cell["source"] = _lines(cell.get("source", ""))
        if cell["cell_type"] != "code":
            continue
        code_cells += 1
        if "keep_output" in cell["metadata"].get("tags", []):
            cell["execution_count"] = code_cells
            cell["outputs"] = [_split_output(o) for o in cell.get("outputs", [])]
            for output in cell["outputs"]:
                if "execution_count" in output:
                    output["execution_count"] = code_cells
        else:
            cell["execution_count"] = None
            cell["outputs"] = []
    return nb


def tidy_executed(nb: dict) -> dict:
    # The kernel's Python version (3.11.7, 3.12.1...) would make the same run's
    # report differ from one student's machine to the next.
    nb.get("metadata", {}).get("language_info", {}).pop("version", None)
    for key in TIMING:
        nb.get("metadata", {}).get("papermill", {}).pop(key, None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
        for key in TIMING:
            cell.get("metadata", {}).get("papermill", {}).pop(key, None)
    return nb


def trust(nb: dict) -> None:
    """Record in this user's Jupyter trust database that this executed notebook
    is the pipeline's own run, as JupyterLab does for a notebook it ran: opened
    from reports/, it then shows its charts (JupyterLab shows no SVG of an
    untrusted notebook). Nothing in the file changes; where the database cannot
    be written, the charts show as text only."""
    import sqlite3

    import nbformat
    from nbformat.sign import NotebookNotary

    try:
        NotebookNotary().sign(nbformat.from_dict(nb))
    except (OSError, sqlite3.Error):
        pass


def dumps(nb: dict) -> str:
    """Serialise exactly as nbformat (and so JupyterLab) writes a notebook."""
    return json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"


def _in_reports(path: Path) -> bool:
    """Is this file under the reports/ folder of the workspace that holds it?"""
    for folder in path.parents:
        if (folder / "dvc.yaml").is_file():
            return folder / "reports" in path.parents
    return False


def clean(text):
    """A notebook's clean form, the text git stores for it; None if `text` is not a notebook."""
    try:
        return dumps(strip(json.loads(text)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def pre_save_hook(model, path="", contents_manager=None, **kwargs):
    """jupyter_server's FileContentsManager.pre_save_hook: save notebooks
    stripped, and refuse to save over reports/, which `dvc repro` writes and
    DVC records (a stripped report would no longer match dvc.lock)."""
    root = getattr(contents_manager, "root_dir", ".")
    if _in_reports(Path(root, path.strip("/")).resolve()):
        from tornado.web import HTTPError

        raise HTTPError(403, "reports/ holds what dvc repro ran, and is read-only: edit the notebook in notebooks/")
    if model.get("type") == "notebook":
        strip(model["content"])


def bless(notebook: Path, executed: Path) -> None:
    """Store the outputs of an executed run in the notebook's ``keep_output``
    cells: they become what nbval expects. Review the diff before committing.
    Raises ValueError with one readable line when that cannot be done."""
    try:
        nb, ran = json.loads(notebook.read_text()), json.loads(executed.read_text())
    except FileNotFoundError as error:
        raise ValueError(f"{error.filename} does not exist: bless takes a stage notebook, "
                         f"after `dvc repro` has run it into {executed.parent}/") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not a notebook (invalid JSON): {error}") from None
    sources = {"".join(c["source"]): c for c in ran.get("cells", [])}
    for cell in nb.get("cells", []):
        if "keep_output" in cell.get("metadata", {}).get("tags", []):
            if "".join(cell["source"]) not in sources:
                raise ValueError(f"{executed} ran another version of {notebook}: `dvc repro` it first, then bless")
            cell["outputs"] = sources["".join(cell["source"])]["outputs"]
    notebook.write_text(dumps(strip(nb)))


def clean_filter() -> int:
    """git's clean filter and diff textconv: stdin (or a path) in, stripped notebook out.
    Input that is not a notebook passes through untouched, so git never loses content."""
    raw = open(sys.argv[2], encoding="utf-8").read() if len(sys.argv) > 2 else sys.stdin.read()
    text = clean(raw)
    sys.stdout.write(raw if text is None else text)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["clean"]:
        sys.exit(clean_filter())
    if sys.argv[1:2] == ["bless"] and len(sys.argv) == 3 and sys.argv[2].endswith(".ipynb"):
        try:
            bless(Path(sys.argv[2]), Path("reports") / Path(sys.argv[2]).name)
        except ValueError as error:
            sys.exit(f"✗ bless: {error}")
        sys.exit(0)
    sys.exit("usage: python -m dataops_kit.notebook clean [PATH] | bless notebooks/NN_stage.ipynb")
