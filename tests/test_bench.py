"""The benchmark runs and fills its whole table (timings are read by people, not asserted)."""

import json

import pytest

from helpers import REPO, run
from unit.kit.test_bench import load


@pytest.mark.slow
def test_benchmark_smoke_run_fills_every_row(tmp_path):
    out = tmp_path / "bench.json"
    result = run(f"python kit/bench/bench.py --repeat 1 --sweep-repeat 1 --sizes 1000 --json {out}", cwd=REPO)
    table = json.loads(out.read_text())
    expected = {"pipeline, notebooks: dvc repro --force", "pipeline, scripts: dvc repro --force",
                "no-op dvc repro", "no-op python -m dvc repro", "one-parameter change (process.test_size): dvc repro",
                "nbval on the stage notebooks", "git status after touching every notebook",
                "sweep    1000 rows, notebooks", "sweep    1000 rows, scripts"}
    expected |= {f"{nb.stem}, {kind}" for nb in sorted((REPO / "notebooks").glob("0*.ipynb"))
                 for kind in ("notebook", "script")}
    assert set(table["rows"]) == expected
    assert all(row["median"] > 0 and row["peak_mb"] > 0 for row in table["rows"].values())
    assert "pipeline, notebooks / scripts" in table["derived"]
    assert "| no-op dvc repro |" in result.stdout
    # Each target is judged, in the JSON and in the printed page.
    targets = load("bench").TARGETS
    assert {key for key in targets if any(key in name for name in table["targets"])} == set(targets)
    assert result.stdout.count("| met |") + result.stdout.count("| **missed** |") == len(table["targets"])
