"""How fast is the notebook pipeline, against the same code as plain scripts?

    make bench                      # 5 runs of everything, 3 per size in the sweep
    .venv/bin/python kit/bench/bench.py --repeat 1 --sweep-repeat 1 --json out.json
    .venv/bin/python kit/bench/bench.py --setup   # also time `make` on a fresh clone (needs PyPI)
    .venv/bin/python kit/bench/bench.py --native  # without the kernel's same-bytes pins, to see their cost

Everything runs in temporary clones, never in this workspace. The scripts are
generated from the notebooks' code cells, not written by hand, and run under
DVC through a copy of dvc.yaml whose commands call them instead of papermill.
A scale sweep reruns both pipelines on the synthetic data set (`--sizes`).
Notebook and script runs alternate, so a slow patch of a shared machine hits
both. Prints a table (median, min, max in seconds; peak memory in MB) and
writes it as JSON.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]  # the workspace (this file is kit/bench/)
sys.path.insert(0, str(REPO / "tests"))
from helpers import make_clone, set_param, workspace_env  # noqa: E402  (the tests' helpers, reused)
from dataops_kit.runner.kernel import KERNEL, same_bytes_env  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))

# The targets, on a 2-core machine, keyed by a row or derived figure. Ratios are
# within one run: the machine drifts between runs, never inside one.
TARGETS = {
    "pipeline, notebooks / scripts": 1.3,
    "notebook - script (s)": 0.4,  # each stage, run alone
    "one-parameter change / full repro, notebooks": 0.9,
    "peak memory (PSS MB), notebooks: dvc repro --force": 354,  # the preloaded kernel's, before it went
    "no-op dvc repro / python -m dvc repro": 1.1,
    "git status after touching every notebook": 1.0,
}


def pss(pid: int) -> int:
    """Proportional set size in bytes: a page shared by n processes counts 1/n in each,
    so libraries mapped by several processes count once in all."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(cmd, cwd, env):
    """Wall time and peak memory: PSS summed over the process tree, sampled every 100 ms
    (shared pages counted once, wherever they are mapped)."""
    started = time.perf_counter()
    process = psutil.Popen(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, done = 0, threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(pss(p.pid) for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.1)  # reading smaps_rollup walks page tables: sampled sparingly

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"benchmark step failed: {cmd}\n{stderr.decode()}")
    return time.perf_counter() - started, peak / 2**20


def repeat(n, runs, before=None):
    """Run each of `runs` ({row name: (cmd, cwd, env)}) n times, interleaved and
    in alternating order, so that a slow patch of a shared machine hits the
    notebooks and the scripts alike. One row per name."""
    samples = {name: ([], []) for name in runs}
    for i in range(n):
        for name in (list(runs) if i % 2 == 0 else list(reversed(runs))):
            if before:
                before()
            seconds, peak = measure(*runs[name])
            samples[name][0].append(seconds)
            samples[name][1].append(peak)
    return {name: {"median": statistics.median(times), "min": min(times), "max": max(times),
                   "peak_mb": max(peaks)}
            for name, (times, peaks) in samples.items()}


def script_from(notebook: Path) -> str:
    """The notebook's code cells as one plain script (IPython-only lines dropped)."""
    cells = json.loads(notebook.read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n\n".join(re.sub(r"^\s*[%!].*$", "", c, flags=re.M) for c in code) + "\n"


def scripts_workspace(root: Path) -> None:
    """Turn a clone into the same pipeline with generated scripts in place of notebooks."""
    scripts = root / "scripts"
    scripts.mkdir()
    for notebook in NOTEBOOKS:
        (scripts / f"{notebook.stem}.py").write_text(script_from(notebook))
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    for stage in dvc["stages"].values():
        notebook = Path(stage["cmd"].split()[-1])
        # Same working directory as the kernel: notebooks/.
        stage["cmd"] = f"cd notebooks && python ../scripts/{notebook.stem}.py"
        stage["deps"] = [f"scripts/{notebook.stem}.py" if d == str(notebook) else d for d in stage["deps"]]
        stage["outs"] = [o for o in stage["outs"] if not str(o).startswith("reports/0")]
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))


RESULTS = REPO / "kit" / "bench" / "results.json"
PAGE = REPO / "docs" / "maintainers" / "bench-results.md"


def render(results: dict) -> str:
    """The docs' page of figures, from results.json alone: no figure in the docs is typed by hand."""
    lines = ["# Bench results", "",
             f"Written by `make bench` from `kit/bench/results.json`; do not edit. {results['machine']}; "
             f"{results['repeat']} run(s) of each row, {results['sweep_repeat']} per size in the sweep. "
             "Seconds of wall time; peak memory is PSS over the whole process tree (DVC, runners, kernels), "
             "shared pages counted once.", "",
             "| what | median s | min s | max s | peak MB |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {row['median']:.2f} | {row['min']:.2f} | {row['max']:.2f} | {row['peak_mb']:.0f} |"
              for name, row in results["rows"].items()]
    lines += ["", "| derived | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in results["derived"].items()]
    lines += ["", "| target | value | limit | |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {t['value']:.2f} | {t['limit']:g} | {'met' if t['met'] else '**missed**'} |"
              for name, t in results["targets"].items()]
    return "\n".join(lines) + "\n"


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sweep-repeat", type=int, default=3, help="runs per size in the scale sweep")
    parser.add_argument("--json", type=Path, default=RESULTS,
                        help="where to write the figures (the default also rewrites docs/maintainers/bench-results.md)")
    parser.add_argument("--setup", action="store_true", help="also time `make` on a fresh clone")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="rows of the synthetic data set for the scale sweep (comma-separated)")
    parser.add_argument("--native", action="store_true",
                        help="run without the same-bytes pins (OpenBLAS kernel and threads, glibc's libm)")
    return parser.parse_args()


def _workspaces(work: Path, native: bool):
    """Two clones, one with notebooks and one with the same code as scripts, and their environments."""
    nb_root, py_root = make_clone(work / "notebooks-ws"), make_clone(work / "scripts-ws")
    scripts_workspace(py_root)
    env_nb = {**os.environ, **workspace_env(nb_root)}
    # The scripts stand in for stages: they write the pipeline's files, not scratch/, with the helpers
    # on their path as a kernel has them.
    env_py = {**os.environ, **workspace_env(py_root), "DATAOPS_STAGE": "script", "PYTHONPATH": str(py_root / "src")}
    if native:
        # The same kernel without its "env", found first through JUPYTER_PATH.
        spec = json.loads((Path(sys.prefix) / "share/jupyter/kernels" / KERNEL / "kernel.json").read_text())
        spec.pop("env", None)
        folder = work / "jupyter" / "kernels" / KERNEL
        folder.mkdir(parents=True)
        (folder / "kernel.json").write_text(json.dumps(spec))
        env_nb["JUPYTER_PATH"] = str(work / "jupyter")
    else:
        env_py |= same_bytes_env()  # the scripts compute as the kernel does
    return nb_root, py_root, env_nb, env_py


def _pipeline_rows(n, nb_root, py_root, env_nb, env_py) -> dict:
    rows = repeat(n, {"pipeline, notebooks: dvc repro --force": ("dvc repro --force", nb_root, env_nb),
                      "pipeline, scripts: dvc repro --force": ("dvc repro --force", py_root, env_py)})
    for notebook in NOTEBOOKS:
        stage = notebook.stem
        rows |= repeat(n, {
            f"{stage}, notebook": (f"dataops-run notebooks/{notebook.name}", nb_root, env_nb),
            f"{stage}, script": (f"python ../scripts/{stage}.py", py_root / "notebooks", env_py)})
    # The dvc command against python -m dvc: both are DVC as pip installs it.
    # A second each: ten of each, or the machine's noise decides the ratio.
    rows |= repeat(max(n, 10) if n >= 3 else n, {"no-op dvc repro": ("dvc repro", nb_root, env_nb),
                                                 "no-op python -m dvc repro": ("python -m dvc repro", nb_root, env_nb)})
    # What a student waits for after changing one knob: process, train and evaluate rerun.
    # Each run sets a value not run before, or DVC's run cache would restore the outputs.
    # Steps of 0.01 (1.5 of iris's 150 rows), so each value changes the split and all three stages rerun.
    sizes = iter(round(0.25 + i / 100, 2) for i in range(45))
    rows |= repeat(n, {"one-parameter change (process.test_size): dvc repro": ("dvc repro", nb_root, env_nb)},
                   before=lambda: set_param(nb_root, "process.test_size", next(sizes)))
    subprocess.run("git checkout -q params.yaml && dvc repro -q", shell=True, cwd=nb_root, env=env_nb, check=True)
    rows |= repeat(n, {"nbval on the stage notebooks": (
        "pytest --nbval-lax -q -p no:cacheprovider notebooks", nb_root, env_nb)})

    def touch_notebooks():
        for notebook in (nb_root / "notebooks").glob("*.ipynb"):
            notebook.touch()
    return rows | repeat(n, {"git status after touching every notebook": ("git status --porcelain", nb_root, env_nb)},
                         before=touch_notebooks)


def _sweep_rows(args, nb_root, py_root, env_nb, env_py) -> dict:
    rows = {}
    for root in (nb_root, py_root):
        set_param(root, "data.dataset", "synthetic")
    for rows_n in [int(n) for n in args.sizes.split(",") if n]:
        for root in (nb_root, py_root):
            set_param(root, "data.n_samples", rows_n)
        rows |= repeat(args.sweep_repeat, {
            f"sweep {rows_n:>7} rows, notebooks": ("dvc repro --force", nb_root, env_nb),
            f"sweep {rows_n:>7} rows, scripts": ("dvc repro --force", py_root, env_py)})
    for root, env in ((nb_root, env_nb), (py_root, env_py)):
        subprocess.run("git checkout -q params.yaml", shell=True, cwd=root, env=env, check=True)
    return rows


def _setup_rows(work: Path) -> dict:
    fresh = make_clone(work / "fresh", share_venv=False)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    env["UV_CACHE_DIR"] = str(work / "cold-uv-cache")
    env["PIP_NO_CACHE_DIR"] = "1"
    return repeat(1, {"make on a fresh clone, cold package cache": ("make", fresh, env)})


def derive(rows: dict) -> dict:
    """The ratios and differences the targets judge, all within one run."""
    nb, py = rows["pipeline, notebooks: dvc repro --force"], rows["pipeline, scripts: dvc repro --force"]
    ratios = {"pipeline, notebooks / scripts": nb["median"] / py["median"],
              "no-op dvc repro / python -m dvc repro":
                  rows["no-op dvc repro"]["median"] / rows["no-op python -m dvc repro"]["median"],
              "peak memory (PSS MB), notebooks: dvc repro --force": nb["peak_mb"],
              "one-parameter change / full repro, notebooks":
                  rows["one-parameter change (process.test_size): dvc repro"]["median"] / nb["median"]}
    for name in [r for r in rows if r.startswith("sweep") and r.endswith("notebooks")]:
        ratios[f"{name[:-len(', notebooks')]}, notebooks / scripts"] = (
            rows[name]["median"] / rows[name.replace("notebooks", "scripts")]["median"])
    for notebook in NOTEBOOKS:
        nb, py = rows[f"{notebook.stem}, notebook"], rows[f"{notebook.stem}, script"]
        ratios[f"{notebook.stem}, notebook - script (s)"] = nb["median"] - py["median"]
        ratios[f"{notebook.stem}, notebook - script (MB)"] = nb["peak_mb"] - py["peak_mb"]
    return ratios


def judge(rows: dict, ratios: dict) -> dict:
    targets = [(name, value, TARGETS[key]) for name, value in ratios.items() for key in TARGETS if key in name]
    targets += [(name, rows[name]["median"], TARGETS[name]) for name in TARGETS if name in rows]
    return {name: {"value": value, "limit": limit, "met": value <= limit} for name, value, limit in targets}


def main() -> int:
    args = _arguments()
    work = Path(tempfile.mkdtemp(prefix="dataops-bench-"))
    try:
        clones = _workspaces(work, args.native)
        rows = _pipeline_rows(args.repeat, *clones) | _sweep_rows(args, *clones)
        if args.setup:
            rows |= _setup_rows(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = derive(rows)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    machine += ", native numerics (no same-bytes pins)" if args.native else ""
    results = {"machine": machine, "repeat": args.repeat, "sweep_repeat": args.sweep_repeat, "rows": rows,
               "derived": ratios, "targets": judge(rows, ratios)}
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    page = render(results)
    print(page)
    if args.json == RESULTS:
        PAGE.write_text(page)
        print(f"written: {args.json.relative_to(REPO)}, {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
