"""What a change does, read from what DVC recorded, as a pull request would show it.

    make review BASE=main [REV=HEAD] [OUT=review]
    python -m dataops_kit.review BASE [REV] [--out review]

Writes OUT/review.md (markdown, for a forge's comment: its images are files
beside it, in OUT/plots/) and OUT/index.html (one file that opens offline:
the same tables, the images inlined, and a policy that lets nothing run).
Both come from DVC's own diffs of the two revisions: `dvc params diff`,
`dvc metrics diff`, `dvc diff` and `dvc plots diff`, which read git and DVC's
cache. Neither revision's code runs: a classmate's experiment can be
reviewed as safely as a branch of your own. The plots are drawn by
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
import re
import subprocess
import sys
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
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise ReviewError(f"dvc {' '.join(args)} failed: {last[-1] if last else result.returncode}")
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


def tables(repo: Path, base: str, rev: str, names=None) -> dict:
    """{section: (header, rows)}: every row a list of values as DVC gave them; NAMES head the two sides' columns."""
    params = _dvc(["params", "diff", base, rev], repo)
    metrics = _dvc(["metrics", "diff", base, rev], repo)
    files = _dvc(["diff", "--show-hash", base, rev], repo)
    base, rev = names or (base, rev)
    return {
        "Parameters": (["file", "parameter", base, rev], [
            [path, key, change.get("old"), change.get("new")]
            for path, keys in sorted(params.items()) for key, change in sorted(keys.items())]),
        "Metrics": (["file", "metric", base, rev, "change"], [
            [path, key, change.get("old"), change.get("new"), change.get("diff")]
            for path, keys in sorted(metrics.items()) for key, change in sorted(keys.items())]),
        "Data and models": (["file", "change", f"md5 at {base}", f"md5 at {rev}"], [
            [entry["path"], kind, *_hashes(entry.get("hash"), kind)]
            for kind in ("added", "deleted", "modified", "renamed", "not in cache")
            for entry in files.get(kind, [])]),
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


def plots(repo: Path, base: str, rev: str) -> list:
    """[(title, png bytes, note)] for every plot in dvc.yaml, both revisions drawn together, as DVC overlays them."""
    try:
        import vl_convert
    except ImportError:
        raise ReviewError("the plots need vl-convert-python, which `make setup` installs: run make setup") from None
    drawn = []
    for title, items in _dvc(["plots", "diff", base, rev], repo).get("data", {}).items():
        for item in items:
            if item.get("type") != "vega":
                continue
            spec, dropped = finite(item["content"])
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


def review(repo: Path, base: str, rev: str, out: Path) -> dict:
    """Write OUT/review.md, OUT/plots/*.png and OUT/index.html; return the tables."""
    ref_base, ref_rev = resolve(repo, base), resolve(repo, rev)
    sides = [(base, _commit(repo, ref_base)), (rev, _commit(repo, ref_rev))]
    for side in (ref_base, ref_rev):
        refusal = template_refusal(repo, side)
        if refusal:
            raise ReviewError(refusal)
    sections, drawn = tables(repo, ref_base, ref_rev, (base, rev)), plots(repo, ref_base, ref_rev)
    heading = f"Review of {rev} against {base}"
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for old in (out / "plots").glob("*.png"):
        old.unlink()
    for title, png, _note in drawn:
        (out / "plots" / f"{_slug(title)}.png").write_bytes(png)
    (out / "review.md").write_text(markdown(heading, sides, sections, drawn))
    (out / "index.html").write_text(page(heading, sides, sections, drawn))
    return sections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make review", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="what the change is compared with: a branch, tag, commit or experiment")
    parser.add_argument("rev", nargs="?", default="HEAD", help="the change (default: HEAD)")
    parser.add_argument("--out", type=Path, default=Path("review"))
    args = parser.parse_args(argv)
    try:
        sections = review(Path.cwd(), args.base, args.rev, args.out)
    except ReviewError as error:
        print(f"✗ review: {error}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{title.lower()} {len(rows)}" for title, (_header, rows) in sections.items())
    print(f"{args.rev} against {args.base}, what changed: {counts}")
    print(f"Wrote {args.out / 'review.md'} (open it, or paste it in a pull request) and {args.out / 'index.html'}")
    missing = [row[0] for row in sections["Data and models"][1] if row[1] == "not in cache"]
    if missing:
        print(f"! not in DVC's cache, so not compared: {', '.join(missing)}. Get them (dvc pull at that commit, "
              f"or dvc exp pull REMOTE NAME for an experiment), then make review again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
