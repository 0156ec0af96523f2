"""Machine-local set-up that a clone cannot carry, run by `make`:

* the Jupyter kernel ``dataops``, inside the venv, which every notebook names;
* git's clean filter and diff driver for notebooks, written into .git/config
  with a path relative to the repository (git runs filters from its top
  folder), so the entry stays right wherever the clone lives;
* JupyterLab settings inside the venv: notebooks are saved stripped, so a
  saved notebook leaves ``git status`` and ``dvc status`` clean, and no news
  or update pop-ups.
"""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

KERNEL = "dataops"
FILTER = ".venv/bin/python -m dataops.notebook clean"


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
    })


def install_jupyter_settings(prefix: Path) -> None:
    _write_json(prefix / "etc" / "jupyter" / "jupyter_server_config.json", {
        "FileContentsManager": {"pre_save_hook": "dataops.notebook.pre_save_hook"},
    })
    _write_json(prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json", {
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    })


def install_git_filter(repo: Path) -> None:
    for key, value in {
        "filter.nbstrip.clean": FILTER,
        "filter.nbstrip.smudge": "cat",
        "diff.ipynb.textconv": FILTER,
    }.items():
        subprocess.run(["git", "config", "--local", key, value], cwd=repo, check=True)


def install_import_path(src: Path) -> None:
    """Make ``import dataops`` work in the venv (kernels, papermill, the git filter)."""
    Path(sysconfig.get_paths()["purelib"], "dataops.pth").write_text(f"{src}\n")


def main() -> int:
    src = Path(__file__).resolve().parents[1]
    repo = src.parent
    prefix = Path(sys.prefix)
    install_import_path(src)
    install_kernel(prefix)
    install_jupyter_settings(prefix)
    if (repo / ".git").exists():
        install_git_filter(repo)
    print(f"installed: kernel '{KERNEL}', JupyterLab settings, git notebook filter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
