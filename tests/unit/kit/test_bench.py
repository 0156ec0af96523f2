"""The bench's scripts, in process: the docs' figures page, and suite_cpu's accounting."""

import importlib.util
import json

from helpers import REPO


def load(name):
    """A script of kit/bench/, as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "kit" / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_figures_are_the_results_file_rendered():
    """No figure in docs/maintainers/bench-results.md is typed by hand: it is results.json, rendered."""
    bench = load("bench")
    assert bench.PAGE.read_text() == bench.render(json.loads(bench.RESULTS.read_text()))


def test_the_class_store_figures_are_its_results_file_rendered():
    """docs/instructors/class-bench-results.md is kit/bench/class-results.json, rendered, and
    its correctness rows are zero in both runs, with exactly half the class failing under the fault."""
    class_bench = load("class_bench")
    results = json.loads(class_bench.RESULTS.read_text())
    assert class_bench.PAGE.read_text() == class_bench.render(results)
    calm, fault = results["runs"]
    assert all(run[key] == 0 for run in results["runs"] for key in class_bench.CORRECT)
    assert calm["pushes failed"] == 0 and fault["pushes failed"] == fault["students"] - fault["students"] // 2


def test_suite_cpu_names_each_process_and_counts_it_for_the_test_it_started_in():
    suite_cpu = load("suite_cpu")
    test = "tests/test_pipeline.py::test_x (call)"
    started = {  # pid: (the test it started in, its command line), as the startup hook records them
        10: ("-", "/w/.venv/bin/python -u -c import sys;exec(eval(sys.stdin.readline()))"),  # a worker
        11: (test, "/w/.venv/bin/python /w/.venv/bin/dvc repro"),
        12: (test, "/w/.venv/bin/python /w/.venv/bin/dataops-run notebooks/01_get_data.ipynb"),
        13: (test, "/w/.venv/bin/python -m ipykernel_launcher -f /tmp/kernel-1.json"),
        14: (test, "/w/.venv/bin/python -m dataops_kit.lockcheck --before-commit"),
    }
    processes = {  # pid: (command name, CPU s, parent pid, forked without exec), as process accounting has them
        10: ("python", 1.0, 1, False), 11: ("dvc", 0.5, 10, False), 12: ("python", 0.25, 11, False),
        13: ("python", 2.0, 12, False), 14: ("python", 1.5, 13, False), 15: ("python", 0.25, 14, True),
        16: ("git", 0.5, 11, False), 17: ("chromium", 3.0, 10, False),
    }
    by_kind, by_file = suite_cpu.tally(processes, started)
    assert by_kind == {"pytest": 1.0, "dvc repro": 0.5, "papermill runner": 0.25,
                       "stage kernel": 2.0, "python -m dataops_kit.lockcheck": 1.5,
                       "fork of a python -m dataops_kit.lockcheck": 0.25, "git (not the venv's Python)": 0.5,
                       "chromium (not the venv's Python)": 3.0}
    assert by_file == {"tests/test_pipeline.py": 5.0, "(not traced to a test)": 4.0}


def test_suite_cpu_ends_on_a_parent_chain_that_loops():
    # A long run reuses pids, so an ended process's parent may be a later process with its pid.
    by_kind, by_file = load("suite_cpu").tally({20: ("python", 1.0, 21, False), 21: ("python", 1.0, 20, False)}, {})
    assert by_file == {"(not traced to a test)": 2.0}
