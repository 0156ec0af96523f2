"""The one home of what the toolkit knows about DVC, git and the machine:
where DVC keeps a file, what a dvc.lock records, an md5, a file at a git
revision, a free port, and YAML read as DVC reads it, within bounds.
Every other module imports these; none writes its own. Nothing here imports
a project's own code (``src/``): a tree the toolkit reads may be anyone's."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

__all__ = ["YAMLError", "read_yaml", "md5", "dvc_md5", "stored", "stages", "lock_outs", "outputs",
           "declared_outputs", "read_lock", "locked_metrics", "git_show", "yaml_at", "in_history", "printable", "free_port",
           "workspace"]


YAML_CHARS, YAML_DEPTH, YAML_NODES = 1 << 20, 32, 50_000  # far beyond any params.yaml, dvc.yaml or dvc.lock


def read_yaml(text: str):
    """YAML as DVC reads it (ruamel.yaml's safe loader, YAML 1.2: ``on`` is a string, ``1e-3`` a number),
    bounded as text anyone wrote must be: its size, its nesting, and its nodes counted as aliases expand
    them (a "billion laughs" is refused before it is built). Raises YAMLError on text DVC refuses
    (a duplicated key too), ValueError past a bound."""
    if len(text) > YAML_CHARS:
        raise ValueError(f"YAML of {len(text)} characters: more than {YAML_CHARS} are not read")
    yaml = YAML(typ="safe")
    _within_bounds(yaml.compose(text))
    return yaml.load(text)


def _within_bounds(root) -> None:
    count, todo = 0, [(root, 0)] if root is not None else []
    while todo:
        node, depth = todo.pop()
        count += 1
        if depth > YAML_DEPTH or count > YAML_NODES:
            raise ValueError(f"YAML nested deeper than {YAML_DEPTH} or with more than {YAML_NODES} nodes "
                             f"(aliases expanded): not read")
        if isinstance(node.value, list):
            for item in node.value:
                todo += [(part, depth + 1) for part in (item if isinstance(item, tuple) else (item,))]


def md5(path) -> str:
    """The md5 DVC records for a plain file."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What .dvcignore leaves out of a folder DVC hashes (src/dataops): compiled files and editors' copies.
IGNORED_FOLDERS, IGNORED_SUFFIXES = {"__pycache__", ".ipynb_checkpoints"}, {".pyc"}


def dvc_md5(path):
    """The md5 DVC records for PATH, or None if there is none: a file's own md5;
    a folder's is the md5 of its listing (DVC's documented ``.dir`` format:
    a JSON list of ``{"md5", "relpath"}`` sorted by path) followed by ``.dir``."""
    path = Path(path)
    if path.is_file():
        return md5(path)
    if not path.is_dir():
        return None
    entries = []
    for file in path.rglob("*"):
        parts = file.relative_to(path).parts
        if file.is_file() and file.suffix not in IGNORED_SUFFIXES and not IGNORED_FOLDERS & set(parts):
            entries.append({"md5": md5(file), "relpath": "/".join(parts)})
    listing = json.dumps(sorted(entries, key=lambda entry: entry["relpath"]), sort_keys=True)
    return hashlib.md5(listing.encode()).hexdigest() + ".dir"


def is_md5(text) -> bool:
    return isinstance(text, str) and len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def stored(store: Path, digest: str) -> Path:
    """Where DVC 3 keeps a file of that md5, in a cache (.dvc/cache) or a local
    remote. Anything but an md5 is refused: a hostile dvc.lock must not name a path."""
    if not is_md5(digest):
        raise ValueError(f"not an md5: {digest!r}")
    return Path(store) / "files" / "md5" / digest[:2] / digest[2:]


def cache_dir(repo: Path) -> Path:
    """The repository's DVC cache as `make` and the course leave it (the default place)."""
    return Path(repo) / ".dvc" / "cache"


def read_lock(repo: Path) -> dict:
    """REPO's dvc.lock as read, or {} where there is none or it cannot be read."""
    try:
        lock = read_yaml((Path(repo) / "dvc.lock").read_text())
    except (OSError, YAMLError, ValueError):
        return {}
    return lock if isinstance(lock, dict) else {}


def stages(document) -> dict:
    """The stages of a dvc.yaml or dvc.lock as read: {name: entry}, leaving out anything that is not one."""
    found = document.get("stages") if isinstance(document, dict) else None
    return {name: entry for name, entry in found.items() if isinstance(entry, dict)} if isinstance(found, dict) else {}


def lock_outs(entry) -> list:
    """[(path, md5)] of a dvc.lock stage entry's outputs, as written (unchecked)."""
    outs = entry.get("outs") if isinstance(entry, dict) else None
    return [(out.get("path"), out.get("md5")) for out in (outs if isinstance(outs, list) else []) if isinstance(out, dict)]


def outputs(lock) -> dict:
    """{path: md5} of every output a dvc.lock records (entries without a valid md5 are left out)."""
    return {path: digest for entry in stages(lock).values() for path, digest in lock_outs(entry)
            if isinstance(path, str) and is_md5(digest)}


def declared_outputs(spec) -> list:
    """The output paths a dvc.yaml (as read) declares, in order."""
    found = []
    for entry in stages(spec).values():
        for out in entry.get("outs") or []:
            name = out if isinstance(out, str) else next(iter(out), None) if isinstance(out, dict) else None
            if isinstance(name, str):
                found.append(name)
    return found


def locked_metrics(repo: Path, lock: dict) -> dict:
    """reports/metrics.json as the run that LOCK records wrote it (from the
    cache), whatever the file on disk says now; {} when it cannot be read."""
    try:
        data = json.loads(stored(cache_dir(repo), outputs(lock)["reports/metrics.json"]).read_text())
    except (OSError, KeyError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


GIT_SHOW_BYTES = 1 << 20  # a text of someone else's commit read on the host: params, dvc.yaml, dvc.lock


def git_show(repo: Path, rev: str, path: str, limit: int = GIT_SHOW_BYTES):
    """The text of PATH at REV, or None where git has none (no such commit or file, not UTF-8, or
    over LIMIT bytes, which are never read). Git's plumbing, with the name on stdin: no filter or
    textconv runs, no link is followed (a link's blob is its target's name), and a REV that starts
    with '-' is no option."""
    with subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as batch:
        try:
            batch.stdin.write(f"{rev}:{path}\n".encode(errors="replace"))
            batch.stdin.close()
        except BrokenPipeError:  # git ended at once: not a repository
            return None
        header = batch.stdout.readline(200).split()
        if len(header) != 3 or header[1] != b"blob" or not header[2].isdigit() or int(header[2]) > limit:
            batch.kill()
            return None
        data = batch.stdout.read(int(header[2]))
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def yaml_at(repo: Path, rev: str, path: str) -> dict:
    """The mapping a YAML file holds at commit REV, read through git_show and read_yaml's bounds;
    {} where it holds none (missing, too large, not YAML, or not a mapping)."""
    try:
        data = read_yaml(git_show(repo, rev, path) or "")
    except (YAMLError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def in_history(repo: Path, rev: str, target: str) -> bool:
    """Whether REV's commit is TARGET's or one of its ancestors."""
    return subprocess.run(["git", "merge-base", "--is-ancestor", f"{rev}^{{commit}}", target], cwd=repo,
                          capture_output=True).returncode == 0


def printable(value, width: int = 60) -> str:
    """Text a student wrote, safe for a terminal: control and format characters
    (escape sequences, bidi overrides) become '?', and it is cut to WIDTH."""
    import unicodedata

    text = "".join("?" if unicodedata.category(c)[0] == "C" else c for c in str(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the caller must still cope with losing a race for it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def workspace() -> Path:
    """The workspace the toolkit serves: $DATAOPS_WORKSPACE (the Makefile sets it
    in a workspace), else the folder that holds the running venv."""
    named = os.environ.get("DATAOPS_WORKSPACE")
    return Path(named).resolve() if named else Path(sys.prefix).resolve().parent


def shell_env() -> dict:
    """This process's environment as a student's shell has it: none of the variables that point a
    process at another project (nbval's throw-away root, a stage's name, an import path)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATAOPS_ROOT", "DATAOPS_STAGE")}
