"""Machine-local set-up that a clone cannot carry, run by `make`:

* the Jupyter kernel ``dataops``, inside the venv, which every notebook names,
  with the numerics pinned so every x86_64 CPU writes the same bytes, and
  which imports its own project's ``src/`` (IPython's ``exec_lines``);
* the venv's scripts folder first on PATH in every process of the venv's
  Python (a line in a ``.pth`` file, Python's site door): ``.venv/bin/dvc``
  and ``.venv/bin/python -m dvc``, the stock DVC pip installs, then find
  the stages' ``dataops-run`` with the venv activated or not;
* git's clean filter and diff driver for notebooks, written into .git/config
  with this venv's Python (``make`` writes it again in a copied or moved
  workspace, which gets its own venv); ``dvc exp run --queue``'s temporary
  copies share the config, and so the filter; and a pre-commit hook that
  refuses a commit whose dvc.lock records other sources than a stage's
  kernel ran (dataops_kit.runner.ran);
* the page `dvc plots show` renders into, with vega inlined so it works offline;
* JupyterLab settings inside the venv: notebooks are saved stripped, so a
  saved notebook leaves ``git status`` and ``dvc status`` clean; the executed
  notebooks in reports/ cannot be saved over; one kernel, the workspace's, is
  offered; no news or update pop-ups.
"""

import base64
import hashlib
import json
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from dataops_kit.runner.kernel import KERNEL, KERNEL_MARK, same_bytes_env


def _filter() -> str:
    # Quoted only where the path needs it: DVC's experiment copies parse .git/config
    # with a reader that refuses a quoted value. -I: git runs a filter in the work tree, which
    # `python -m` would put first on the import path, so a dataops_kit/ committed there (a
    # classmate's experiment, a submission) would be the filter; -I leaves it off, and PYTHON* too.
    return f"{shlex.quote(sys.executable)} -I -m dataops_kit.notebook clean"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def install_kernel(prefix: Path) -> None:
    _write_json(prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json", {
        # Quiet the kernel's own log: its per-start "running over TCP without
        # encryption" warning is noise on a loopback-only teaching machine.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python (dataops)",
        "language": "python",
        "metadata": {"debugger": True},
        # Set before the kernel's Python starts: OpenBLAS and glibc read them once, at load.
        "env": {**same_bytes_env(), KERNEL_MARK: "1"},
    })
    # Every kernel of the venv (JupyterLab's, nbval's, the runner's) imports its own project's src/:
    # IPython reads config from <prefix>/etc/ipython, and runs exec_lines before the first cell.
    _write_json(prefix / "etc" / "ipython" / "ipython_kernel_config.json", {
        "IPKernelApp": {"exec_lines": ["__import__('dataops_kit.runner').runner.put_src_first()"]},
    })


def install_jupyter_settings(prefix: Path) -> None:
    _write_json(prefix / "etc" / "jupyter" / "jupyter_server_config.json", {
        "FileContentsManager": {"pre_save_hook": "dataops_kit.notebook.pre_save_hook"},
        # The launcher and the kernel menu offer the workspace's kernel only, not ipykernel's bare "python3".
        "KernelSpecManager": {"allowed_kernelspecs": [KERNEL]},
    })
    _write_json(prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json", {
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    })


def install_git_filter(repo: Path) -> None:
    for key, value in {
        "filter.nbstrip.clean": _filter(),
        "filter.nbstrip.smudge": "cat",
        "diff.ipynb.textconv": _filter(),
    }.items():
        subprocess.run(["git", "config", "--local", key, value], cwd=repo, check=True)


HOOK_MARK = "# Written by `make` (dataops_kit.install)"
PRE_COMMIT = f"""#!/bin/sh
{HOOK_MARK}: refuse a commit while dvc.lock records other sources than a
# stage's kernel ran (a save in the moment after the stage ended). Not run by
# `dvc exp run`, which commits without hooks, nor by git commit --no-verify.
exec {{python}} -I -m dataops_kit.lockcheck --before-commit
"""


def install_pre_commit_hook(repo: Path) -> None:
    """The hook, unless the repository has a pre-commit hook of its own (left alone, and said)."""
    found = subprocess.run(["git", "rev-parse", "--git-path", "hooks/pre-commit"], cwd=repo,
                           capture_output=True, text=True, check=True).stdout.strip()
    hook = repo / found
    if hook.exists() and HOOK_MARK not in hook.read_text(errors="replace"):
        print(f"Note: {found} is not the workspace's: left as it is, so a commit does not check dvc.lock "
              f"against what the stages ran (make's closing line still does)")
        return
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(PRE_COMMIT.format(python=shlex.quote(sys.executable)))
    hook.chmod(0o755)


PLOTS_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<!-- Only this page's own scripts may run, never one DVC writes with the plot data inside. -->
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src {hashes} 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:">
<title>DVC plots</title>
<!-- vega, vega-lite and vega-embed, inlined from .dvc/plots/vendor/ so the page
     renders offline (DVC's own page loads them from a CDN). -->
{scripts}
</head>
<body>
<!-- What DVC writes (each plot's data, unescaped) comes last, inside <plaintext>:
     the parser reads everything after it as text, to the end of the file, as no
     end tag closes it. No value can end an element, start one, or navigate away. -->
<plaintext hidden>{{plot_divs}}"""

# DVC writes each plot as <div id="..."><script>var spec = {...}; vegaEmbed('#...', spec);</script></div>.
# This script reads that as text, takes each spec as JSON, and draws it with the
# DOM's own methods, as SVG: nothing in the data is ever parsed as HTML or run.
DRAW_PLOTS = """
document.addEventListener("DOMContentLoaded", function () {
  var raw = document.querySelector("plaintext"), text = raw ? raw.textContent : "";
  if (raw) { raw.remove(); }
  text.split(/<div id\\s*=\\s*"/).slice(1).forEach(function (chunk) {
    var begin = chunk.indexOf("var spec = "), end = -1, found, call = /;\\s*vegaEmbed\\(/g;
    while ((found = call.exec(chunk))) { end = found.index; }  // the last call: a value may hold the words
    var div = document.createElement("div"), spec = null;
    document.body.appendChild(div);
    try { spec = begin >= 0 && end > begin ? JSON.parse(chunk.slice(begin + 11, end)) : null; }
    catch (error) { spec = null; }
    if (spec) { vegaEmbed(div, spec, {renderer: "svg", actions: false}); }
    else { div.textContent = "This plot's data could not be read as data, so it is not drawn."; }
  });
});
"""


def install_plots_page(repo: Path) -> None:
    """Build the page `dvc plots show` fills (plots.html_template in .dvc/config)."""
    vendor = repo / ".dvc" / "plots" / "vendor"
    bodies = []
    for name in ("vega@", "vega-lite@", "vega-embed@"):
        (path,) = vendor.glob(f"{name}*.min.js")
        code = "\n".join(l for l in path.read_text().splitlines() if not l.startswith("//# sourceMappingURL"))
        bodies.append(f"/* {path.name}, license: {path.name.split('@')[0]}.LICENSE */\n{code}\n")
    bodies.append(DRAW_PLOTS)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)
    scripts = "\n".join(f"<script>{body}</script>" for body in bodies)
    (repo / ".dvc" / "plots" / "offline.html").write_text(PLOTS_PAGE.format(scripts=scripts, hashes=hashes))


# A .pth line that starts with "import" runs at every start of the venv's Python.
ON_PATH = ("import os, sys; s = os.path.dirname(sys.executable); "
           "os.environ['PATH'].split(os.pathsep)[:1] == [s] or "
           "os.environ.__setitem__('PATH', os.pathsep.join([s, os.environ.get('PATH', '')]))")


def install_scripts_path() -> None:
    """Put the venv's scripts first on PATH, for the stage commands DVC starts. It names no folder:
    only the runner and the kernel import a project's src/ (dataops_kit.runner.put_src_first)."""
    Path(sysconfig.get_paths()["purelib"], "dataops.pth").write_text(f"{ON_PATH}\n")


def install_workspace(repo: Path) -> None:
    """What lives in the clone itself (.git/config and .dvc/), not in the venv."""
    install_plots_page(repo)
    if (repo / ".git").exists():
        install_git_filter(repo)
        install_pre_commit_hook(repo)


def main() -> int:
    root = Path.cwd()  # make runs this in the workspace, or in a course repository
    if (root / ".venv").is_symlink():
        # Another workspace's venv, shared on purpose (the tests do it): its kernel,
        # dvc command and import path name that workspace; only this clone's own part here.
        install_workspace(root)
        print("installed: offline plots page, git notebook filter and hook (.venv is another workspace's, left alone)")
        return 0
    prefix = Path(sys.prefix)
    install_scripts_path()
    install_kernel(prefix)
    install_jupyter_settings(prefix)
    install_workspace(root)
    print(f"installed: kernel '{KERNEL}', JupyterLab settings, offline plots page, git notebook filter and hook")
    return 0


if __name__ == "__main__":
    sys.exit(main())
