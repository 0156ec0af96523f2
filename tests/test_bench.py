"""The benchmark runs and fills its whole table (timings are read by people, not asserted)."""

import importlib.util
import json

import pytest

from helpers import REPO, run


@pytest.mark.slow
def test_benchmark_smoke_run_fills_every_row(tmp_path):
    out = tmp_path / "bench.json"
    result = run(f"python kit/bench/bench.py --repeat 1 --sweep-repeat 1 --sizes 1000 --json {out}", cwd=REPO)
    table = json.loads(out.read_text())
    expected = {"pipeline, notebooks: dvc repro --force", "pipeline, scripts: dvc repro --force",
                "no-op dvc repro", "one-parameter change (process.test_size): dvc repro",
                "nbval on the stage notebooks", "git status after touching every notebook",
                "sweep    1000 rows, notebooks", "sweep    1000 rows, scripts"}
    expected |= {f"{nb.stem}, {kind}" for nb in sorted((REPO / "notebooks").glob("0*.ipynb"))
                 for kind in ("notebook", "script")}
    assert set(table["rows"]) == expected
    assert all(row["median"] > 0 and row["peak_mb"] > 0 for row in table["rows"].values())
    assert "pipeline, notebooks / scripts" in table["derived"]
    assert "| no-op dvc repro" in result.stdout
    # Each of the targets is judged in the output (the 10^6-row one needs that size).
    judged = [line for line in result.stdout.splitlines() if line.startswith("target ")]
    # pipeline ratio, 4 stages x (s, MB), no-op, full repro, one-parameter change, git status
    assert len(judged) == 1 + 4 + 4 + 4, judged
    assert all(line.endswith((" met", " MISSED")) for line in judged)


def load_suite_cpu():
    spec = importlib.util.spec_from_file_location("suite_cpu", REPO / "kit" / "bench" / "suite_cpu.py")
    suite_cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite_cpu)
    return suite_cpu


def test_suite_cpu_names_each_process_and_counts_it_for_the_test_it_started_in():
    suite_cpu = load_suite_cpu()
    test = "tests/test_pipeline.py::test_x (call)"
    started = {  # pid: (the test it started in, its command line), as the startup hook records them
        10: ("-", "/w/.venv/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))"),  # a worker
        11: (test, "/w/.venv/bin/python /w/.venv/bin/dvc repro"),
        12: (test, "/w/.venv/bin/python /w/.venv/bin/dataops-run notebooks/01_get_data.ipynb"),
        13: (test, "/w/.venv/bin/python -m ipykernel_launcher -f /tmp/kernel-1.json"),
        14: (test, "/w/.venv/bin/python -m dataops_kit.runner.kernel 11 dataops-kernel-0-11-x"),
    }
    processes = {  # pid: (command name, CPU s, parent pid, forked without exec), as process accounting has them
        10: ("python", 1.0, 1, False), 11: ("dvc", 0.5, 10, False), 12: ("python", 0.25, 11, False),
        13: ("python", 2.0, 12, False), 14: ("python", 1.5, 13, False), 15: ("python", 0.25, 14, True),
        16: ("git", 0.5, 11, False), 17: ("chromium", 3.0, 10, False),
    }
    by_kind, by_file = suite_cpu.tally(processes, started)
    assert by_kind == {"pytest": 1.0, "dvc repro": 0.5, "papermill runner": 0.25,
                       "stage kernel": 2.0, "preloaded kernel": 1.5,
                       "fork of a preloaded kernel": 0.25, "git (not the venv's Python)": 0.5,
                       "chromium (not the venv's Python)": 3.0}
    assert by_file == {"tests/test_pipeline.py": 5.0, "(not traced to a test)": 4.0}


def test_suite_cpu_ends_on_a_parent_chain_that_loops():
    # A long run reuses pids, so an ended process's parent may be a later process with its pid.
    by_kind, by_file = load_suite_cpu().tally({20: ("python", 1.0, 21, False), 21: ("python", 1.0, 20, False)}, {})
    assert by_file == {"(not traced to a test)": 2.0}
