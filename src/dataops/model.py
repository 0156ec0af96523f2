"""The model file: skops instead of pickle, because loading a pickle runs
whatever code the file carries, while skops only rebuilds trusted types."""

import io
import json
import zipfile
from pathlib import Path

import skops.io

from dataops import WorkspaceError

_EPOCH = (1980, 1, 1, 0, 0, 0)

# Beyond the types skops trusts by default, the workspace's own models need one:
# the tree storage of random forests. skops leaves it out because a crafted Tree
# can make predict() read out of bounds; we accept that for files this pipeline
# wrote, and refuse every other unknown type.
TRUSTED = ["sklearn.tree._tree.Tree"]


def _renumber(node, ids, files):
    """Replace memory addresses (``__id__`` and array file names) by counters."""
    if isinstance(node, dict):
        if "__id__" in node:
            node["__id__"] = ids.setdefault(node["__id__"], len(ids))
        if isinstance(node.get("file"), str):
            node["file"] = files.setdefault(node["file"], f"{len(files)}.npy")
        for value in node.values():
            _renumber(value, ids, files)
    elif isinstance(node, list):
        for value in node:
            _renumber(value, ids, files)


def save_model(model, path: Path) -> None:
    """Write a skops file whose bytes depend only on the model, so identical
    runs give an identical md5 in dvc.lock. skops names objects and array
    files by memory address and stamps each zip entry with the current time;
    this numbers them in order of appearance and fixes the date."""
    buffer = io.BytesIO()
    skops.io.dump(model, buffer)
    with zipfile.ZipFile(buffer) as source:
        schema = json.loads(source.read("schema.json"))
        files = {}
        _renumber(schema, {}, files)
        entries = [("schema.json", json.dumps(schema, indent=2).encode())]
        entries += [(new, source.read(old)) for old, new in files.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as target:
        for name, data in entries:
            target.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), data)


def load_model(path: Path):
    """Load a model, refusing any type that is neither trusted by skops nor in TRUSTED."""
    try:
        return skops.io.load(path, trusted=TRUSTED)
    except FileNotFoundError:
        raise WorkspaceError(f"{path} does not exist: run the train_model stage first (dvc repro)") from None
    except zipfile.BadZipFile:
        raise WorkspaceError(f"{path} is not a skops file (a pickle, or a damaged download?): refused to load it") from None
    except skops.io.exceptions.UntrustedTypesFoundException as error:
        raise WorkspaceError(f"{path} contains types that are not trusted, refused to load it: {error}") from None
