"""What a change does, read from what DVC recorded, as a pull request would show it.

    make review BASE=main [REV=HEAD] [OUT=review]
    python -m dataops_kit.review BASE [REV] [--out review]

Writes OUT/review.md (markdown, for a forge's comment: its images are files
beside it, in OUT/plots/) and OUT/index.html (one file that opens offline:
the same tables, the images inlined, and a policy that lets nothing run).
Both come from DVC's own diffs of the two revisions: `dvc params diff`,
`dvc metrics diff`, `dvc diff` and `dvc plots diff`, which read git and DVC's
cache. Neither revision's code runs. DVC reads the two commits in a clone of
their own (the sandbox's review job, on a git bundle and the objects their
dvc.lock files name), and its answer comes back as bounded JSON. That clone
is in the sandbox when either revision is not in the history of HEAD, a
branch or a tag of yours (a classmate's experiment, a fetched branch), so
it is reviewed as safely as a branch of your own. The plots are drawn by
vl-convert (Vega-Lite, as `dvc plots show` draws them) without a browser.

Every value read from a revision (a parameter, a metric, a commit subject, a
plot's data) is data: control characters are removed, markdown and HTML see
it escaped, and a number that is not finite is shown as text, never plotted.
"""

import argparse
import base64
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class ReviewError(Exception):
    pass


def text(value) -> str:
    """A value as one line of plain text: JSON for what is not a string, no control characters."""
    if isinstance(value, float):
        value = str(float(format(value, ".6g"))) if math.isfinite(value) else json.dumps(value)  # Infinity, NaN
    elif not isinstance(value, str):
        value = "—" if value is None else json.dumps(value, allow_nan=True)
    return CONTROL.sub("", value).replace("\n", " ").replace("\r", " ")


def md(value) -> str:
    """A value inside a markdown table cell: nothing in it can end the cell, start HTML, format or link."""
    escaped = re.sub(r"([\\`*\[\]|~<>&]|:(?=//))|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])",
                     lambda m: "\\" + m.group(0) if m.group(1) not in ("<", ">", "&") else
                     html.escape(m.group(0)), text(value))
    return escaped or " "


def _dvc(args, repo: Path):
    result = subprocess.run(["dvc", *args, "--json"], cwd=repo, capture_output=True, text=True)
    if result.returncode:
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        said = [line for line in said if line.startswith("ERROR")] or said  # not DVC's "Having any troubles?"
        raise ReviewError(f"dvc {' '.join(args)} failed: {said[-1] if said else result.returncode}")
    return json.loads(result.stdout or "{}")


def resolve(repo: Path, rev: str) -> str:
    """REV as git names it: a branch, tag or commit as it is; an experiment's name (dvc exp list) as its ref."""
    if rev.startswith("-"):  # never an option of git's or DVC's
        raise ReviewError(f"{rev} is no commit, branch, tag or experiment here")
    if subprocess.run(["git", "rev-parse", "-q", "--verify", f"{rev}^{{commit}}"], cwd=repo,
                      capture_output=True).returncode == 0:
        return rev
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", f"refs/exps/*/*/{rev}"], cwd=repo,
                          capture_output=True, text=True).stdout.split()
    if len(refs) > 1:
        raise ReviewError(f"{len(refs)} experiments are named {rev}: name one by its ref ({refs[0]})")
    return refs[0] if refs else rev


def _commit(repo: Path, rev: str) -> str:
    result = subprocess.run(["git", "log", "-1", "--format=%h %s", rev, "--"], cwd=repo,
                            capture_output=True, text=True)
    if result.returncode:
        raise ReviewError(f"{rev} is no commit, branch, tag or experiment here: "
                          f"git log --oneline --all, dvc exp list --all-commits")
    return result.stdout.strip()


def diffs(repo: Path, base: str, rev: str) -> dict:
    """DVC's own diffs of the commits BASE and REV of REPO, as plain data: the review job's answer
    (run where `through_the_boundary` says)."""
    plotted = _dvc(["plots", "diff", base, rev], repo)
    return {"params": _dvc(["params", "diff", base, rev], repo), "metrics": _dvc(["metrics", "diff", base, rev], repo),
            "files": _dvc(["diff", "--show-hash", base, rev], repo),
            "plots": [[title, item.get("content")] for title, items in plotted.get("data", {}).items() for item in items
                      if item.get("type") == "vega"],
            "unread": sorted({error["source"] for error in plotted.get("errors", []) if "source" in error})[:20]}


def _dicts(value) -> dict:
    """VALUE if it is a dict, else {}: what came back from a clone is checked for shape before it is read."""
    return value if isinstance(value, dict) else {}


def tables(found: dict, names) -> dict:
    """{section: (header, rows)} from the diffs FOUND: every row a list of values as DVC gave them; NAMES
    (base, rev) head the two sides' columns."""
    base, rev = names

    def changes(kind):
        return [(path, key, change) for path, keys in sorted(_dicts(found.get(kind)).items())
                for key, change in sorted(_dicts(keys).items()) if isinstance(change, dict)]
    files = _dicts(found.get("files"))
    return {
        "Parameters": (["file", "parameter", base, rev],
                       [[path, key, change.get("old"), change.get("new")] for path, key, change in changes("params")]),
        "Metrics": (["file", "metric", base, rev, "change"], [
            [path, key, change.get("old"), change.get("new"), change.get("diff")]
            for path, key, change in changes("metrics")]),
        "Data and models": (["file", "change", f"md5 at {base}", f"md5 at {rev}"], [
            [entry.get("path"), kind, *_hashes(entry.get("hash"), kind)]
            for kind in ("added", "deleted", "modified", "renamed", "not in cache")
            for entry in (files.get(kind) if isinstance(files.get(kind), list) else []) if isinstance(entry, dict)]),
    }


def _hashes(value, kind):
    if isinstance(value, dict):
        return [value.get("old"), value.get("new")]
    return [None, value] if kind == "added" else [value, None]


def finite(spec):
    """The spec with every non-finite number in its data replaced by null (Vega-Lite skips it), and how many."""
    count = 0

    def clean(value):
        nonlocal count
        if isinstance(value, float) and not math.isfinite(value):
            count += 1
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(spec), count


def plots(found: dict) -> list:
    """[(title, png bytes, note)] for every plot the diffs FOUND hold, both revisions drawn together, as DVC
    overlays them."""
    try:
        import vl_convert
    except ImportError:
        raise ReviewError("the plots need vl-convert-python, which `make setup` installs: run make setup") from None
    drawn = []
    for item in found.get("plots") if isinstance(found.get("plots"), list) else []:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            continue
        title, (spec, dropped) = item[0], finite(item[1])
        note = f"{dropped} values that are not finite numbers are left out" if dropped else ""
        drawn.append((title, draw(vl_convert, title, spec), note))
    return drawn


def draw(vl_convert, title: str, spec: dict) -> bytes:
    """SPEC as a PNG, with its data inlined: vl-convert may fetch no URL (allowed_base_urls=[])."""
    try:
        return vl_convert.vegalite_to_png(spec, scale=1, allowed_base_urls=[])
    except ValueError as error:
        raise ReviewError(f"the plot {text(title)[:80]} cannot be drawn from its own data "
                          f"({text(str(error).splitlines()[-1] if str(error) else error)[:160]})") from None


def template_refusal(repo: Path, rev: str):
    """Why REV's dvc.yaml names a plot template the review will not draw with, or None. Only DVC's
    built-in templates and those in this clone's .dvc/plots, by name, are drawn: never a path the
    other side chose (one led DVC to a file in the cache that a student had pushed)."""
    from dvc_render.vega_templates import TEMPLATES

    from dataops_kit.facts import yaml_at

    data = yaml_at(repo, rev, "dvc.yaml")  # {} where it cannot be read: DVC's own diff says what is wrong
    builtin = {template.DEFAULT_NAME for template in TEMPLATES}
    ours = repo / ".dvc" / "plots"
    for name in _values(data, "template"):
        if isinstance(name, str) and (name in builtin or (re.fullmatch(r"\w[\w.-]*", name) and ".." not in name and (
                (ours / name).is_file() or (ours / f"{name}.json").is_file()))):
            continue
        return (f"{rev}'s dvc.yaml draws a plot with the template {text(name)[:80]!r}: only DVC's built-in "
                f"templates and those in .dvc/plots, by name, are drawn")
    return None


def _values(tree, key: str, depth: int = 0) -> list:
    """Every value of KEY in a parsed YAML TREE (at most 20 levels down)."""
    if depth > 20:
        return []
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == key] + [x for v in tree.values() for x in _values(v, key, depth + 1)]
    if isinstance(tree, list):
        return [x for v in tree for x in _values(v, key, depth + 1)]
    return []


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "plot"


def markdown(heading: str, sides: list, sections: dict, drawn: list) -> str:
    lines = [f"# {md(heading)}", ""] + [f"- {md(name)}: {md(commit)}" for name, commit in sides]
    for title, (header, rows) in sections.items():
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("No change.")
            continue
        lines += ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md(v) for v in row) + " |" for row in rows]
    lines += ["", "## Plots", ""]
    for title, _png, note in drawn:
        lines += [f"![{md(title)}](plots/{_slug(title)}.png)", ""] + ([f"_{md(note)}_", ""] if note else [])
    return "\n".join(lines + [FOOTER]) + "\n"


def page(heading: str, sides: list, sections: dict, drawn: list) -> str:
    e = lambda value: html.escape(text(value))  # noqa: E731
    body = [f"<h1>{e(heading)}</h1>", "<ul>"] + [f"<li>{e(n)}: {e(c)}</li>" for n, c in sides] + ["</ul>"]
    for title, (header, rows) in sections.items():
        body.append(f"<h2>{e(title)}</h2>")
        if not rows:
            body.append("<p>No change.</p>")
            continue
        body.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows]
        body.append("</table>")
    body.append("<h2>Plots</h2>")
    for title, png, note in drawn:
        data = base64.b64encode(png).decode()
        body.append(f'<figure><img alt="{e(title)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{e(title)}{'. ' + e(note) if note else ''}</figcaption></figure>")
    body.append(f"<p>{e(FOOTER)}</p>")
    return PAGE.format(csp=CSP, title=e(heading), body="\n".join(body))


FOOTER = "Read from what DVC recorded for both revisions (git and DVC's cache): no code of either was run."
PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<!-- No script, frame, font or request of any kind: the tables and inlined images only. -->
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>{title}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }} img {{ max-width: 100%; }}</style>
</head>
<body>
{body}
</body>
</html>
"""


WALL_SECONDS = 300  # DVC's four diffs of two commits take seconds: a review that has not ended is stopped


def _git(args: list, repo: Path):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def yours(repo: Path, commit: str) -> bool:
    """COMMIT is in the history of HEAD, a local branch or a tag: made or checked out here, not fetched
    (an experiment, a remote's branch) from someone else."""
    from dataops_kit.facts import in_history

    return (in_history(repo, commit, "HEAD")
            or bool(_git(["for-each-ref", "--count=1", "--contains", commit, "refs/heads", "refs/tags"],
                         repo).stdout.strip()))


def _inputs(repo: Path, commits: list, inputs: Path, class_dir: Path = None) -> None:
    """INPUTS for the review job: a bundle of COMMITS (under refs of a moment's own, as git bundles refs
    only) and the objects their dvc.lock files name (md5s read through git's plumbing, within bounds),
    from this cache, else from the class store of CLASS_DIR by md5 with the instructor's key."""
    from dataops_kit.facts import cache_dir, outputs, stored, yaml_at
    from dataops_kit.teach import sandbox

    names = [f"refs/dataops-review/{os.getpid()}/{side}" for side in ("base", "rev")]
    try:
        for name, commit in zip(names, commits):
            _git(["update-ref", name, commit], repo)
        sandbox.bundle(repo, names, inputs)
    finally:
        for name in names:
            _git(["update-ref", "-d", name], repo)
    missing = []
    for digest in {d for commit in commits for d in outputs(yaml_at(repo, commit, "dvc.lock")).values()}:
        source, target = stored(cache_dir(repo), digest), inputs / "objects" / digest[:2] / digest[2:]
        if source.is_file() and not source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            missing.append(digest)
    if missing and class_dir and (Path(class_dir) / "gate.json").is_file():
        from dataops_kit.teach import classroom

        try:
            classroom.fetch_objects(Path(class_dir), missing, inputs / "objects")
        except (OSError, KeyError, ValueError):  # not the instructor's account: DVC's diff says what is missing
            pass


def through_the_boundary(repo: Path, base: str, rev: str, sandboxed=None, class_dir: Path = None) -> dict:
    """diffs() of BASE and REV, run by the sandbox's review job in a clone of their own: in the sandbox
    when either commit is not yours (or SANDBOXED says so), else here in a folder of its own."""
    from dataops_kit.teach import sandbox

    commits = [_git(["rev-parse", f"{side}^{{commit}}"], repo).stdout.strip() for side in (base, rev)]
    if sandboxed is None:
        sandboxed = not all(yours(repo, commit) for commit in commits)
    if sandboxed:
        try:
            sandbox.check()
        except sandbox.Unavailable as error:
            raise ReviewError(f"{rev} or {base} is not in the history of your branches, so DVC reads it in the "
                              f"sandbox only, and {error} (SANDBOX=off if it is your own work)") from None
    with tempfile.TemporaryDirectory(prefix="dataops-review-") as folder:
        _inputs(repo, commits, Path(folder), class_dir)
        answer = sandbox.run({"job": "review", "base": commits[0], "commit": commits[1]}, Path(folder),
                             sandboxed, WALL_SECONDS)
    if answer["code"]:
        raise ReviewError((answer["lines"] or ["the review job failed"])[0].removeprefix("ReviewError: "))
    return answer


def review(repo: Path, base: str, rev: str, out: Path, sandboxed=None, class_dir: Path = None) -> tuple:
    """Write OUT/review.md, OUT/plots/*.png and OUT/index.html; return the tables, and the files DVC could not
    read for want of their objects. SANDBOXED and CLASS_DIR: see `through_the_boundary`."""
    ref_base, ref_rev = resolve(repo, base), resolve(repo, rev)
    sides = [(base, _commit(repo, ref_base)), (rev, _commit(repo, ref_rev))]
    for side in (ref_base, ref_rev):
        refusal = template_refusal(repo, side)
        if refusal:
            raise ReviewError(refusal)
    found = through_the_boundary(repo, ref_base, ref_rev, sandboxed, class_dir)
    sections, drawn = tables(found, (base, rev)), plots(found)
    heading = f"Review of {rev} against {base}"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for old in (out / "plots").glob("*.png"):
        old.unlink()
    for title, png, _note in drawn:
        (out / "plots" / f"{_slug(title)}.png").write_bytes(png)
    (out / "review.md").write_text(markdown(heading, sides, sections, drawn))
    (out / "index.html").write_text(page(heading, sides, sections, drawn))
    unread = [row[0] for row in sections["Data and models"][1] if row[1] == "not in cache"]
    return sections, [*unread, *(name for name in found.get("unread", []) if isinstance(name, str))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make review", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="what the change is compared with: a branch, tag, commit or experiment")
    parser.add_argument("rev", nargs="?", default="HEAD", help="the change (default: HEAD)")
    parser.add_argument("--out", type=Path, default=Path("review"))
    parser.add_argument("--sandbox", choices=("on", "off"), help="read both revisions in the sandbox, or here "
                        "(default: in the sandbox when either is not in the history of your branches)")
    parser.add_argument("--class-dir", type=Path, help="the instructor's class folder: objects this cache lacks "
                        "are fetched from its store")
    args = parser.parse_args(argv)
    try:
        sections, missing = review(Path.cwd(), args.base, args.rev, args.out, args.sandbox and args.sandbox == "on",
                                   args.class_dir)
    except ReviewError as error:
        print(f"✗ review: {error}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{title.lower()} {len(rows)}" for title, (_header, rows) in sections.items())
    print(f"{args.rev} against {args.base}, what changed: {counts}")
    print(f"Wrote {args.out / 'review.md'} (open it, or paste it in a pull request) and {args.out / 'index.html'}")
    if missing:
        print(f"! not in DVC's cache, so not compared: {', '.join(text(name)[:80] for name in missing)}. Get them (dvc pull at that commit; "
              f"a class experiment's, on the instructor's machine: CLASS=<the class folder>), then make review again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
