"""What a stage's kernel ran, kept until dvc.lock is seen to record the same.

DVC hashes a stage's dependencies after its command exits, and nothing of
ours runs in between: a notebook, helper or parameter saved in that moment
would be recorded in dvc.lock as what ran. It cannot be prevented by public
means, only caught. So a run that ends well writes what it ran, in DVC's own
terms (md5s, parameter values), and what it wrote, to
``.dvc/tmp/dataops-ran/<stage>.json``. ``lies`` compares each record with
dvc.lock's entry for its stage, and is called by the next stage's runner,
by ``make``'s closing line and by the git pre-commit hook ``make`` installs.
"""

import json
from pathlib import Path

from dataops_kit.facts import dvc_md5, read_lock, stages


def folder(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "dataops-ran"


def _params(document, keys) -> dict:
    """{section: value} of the params.yaml sections a stage declares, as JSON text (one form for both sides)."""
    found = {}
    for key in [k for k in keys if isinstance(k, str)]:
        node = document
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        found[key] = json.dumps(node, sort_keys=True)
    return found


def sources(root: Path, stage: dict, params: dict) -> dict:
    """What a stage is made of, as DVC records it: each dependency's md5 and each declared params section."""
    deps = {str(dep): dvc_md5(root / str(dep)) for dep in stage.get("deps") or []}
    return {"deps": deps, "params": _params(params, stage.get("params") or [])}


def write(root: Path, name: str, ran: dict, stage: dict) -> None:
    """Record that stage NAME ran RAN (``sources``) and wrote its outputs as they are now."""
    outs = {str(out): dvc_md5(root / str(out)) for out in stage.get("outs") or []}
    folder(root).mkdir(parents=True, exist_ok=True)
    (folder(root) / f"{name}.json").write_text(json.dumps({**ran, "outs": outs}))


def _recorded(entry: dict) -> dict:
    deps = {dep.get("path"): dep.get("md5") for dep in entry.get("deps") or [] if isinstance(dep, dict)}
    outs = {out.get("path"): out.get("md5") for out in entry.get("outs") or [] if isinstance(out, dict)}
    params = (entry.get("params") or {}).get("params.yaml") or {}
    return {"deps": deps, "outs": outs, "params": _params(params, list(params))}


def _differences(record: dict, entry: dict) -> list:
    locked = _recorded(entry)
    differ = [path for path, digest in record["deps"].items() if locked["deps"].get(path) != digest]
    return differ + [f"params.yaml: {key}" for key, value in record["params"].items()
                     if locked["params"].get(key) != value]


def lies(root: Path, but: str = None) -> list:
    """One line for each stage (but BUT, about to run again) whose dvc.lock entry records other
    sources than its kernel ran.

    A record is settled, and removed, once dvc.lock records that run's outputs
    with the same sources, or records other outputs (time travel, the run
    cache, a DVC save that failed): then the entry describes another run."""
    entries, lines = stages(read_lock(root)), []
    for path in sorted(p for p in folder(root).glob("*.json") if p.stem != but):
        try:
            record = json.loads(path.read_text())
            entry = entries.get(path.stem)
            if entry is None:
                continue  # not recorded yet
            differ = _differences(record, entry) if _recorded(entry)["outs"] == record["outs"] else []
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            differ = []  # unreadable: it proves nothing
        if differ:
            lines.append(f"dvc.lock records {', '.join(differ)} of stage {path.stem} other than its kernel ran "
                         f"(saved in the moment after the stage ended?). Run it again: "
                         f"dvc repro --force --single-item {path.stem}")
        else:
            path.unlink(missing_ok=True)
    return lines
