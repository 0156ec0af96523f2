"""The committed notebooks are clean (dataops_kit.notebook), and the runner names their cells (dataops_kit.runner.stage)."""

import json

import nbformat
import pytest

from dataops_kit.notebook import dumps, strip
from dataops_kit.runner.stage import headlines
from helpers import REPO, run

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_stripped(path):
    assert path.read_text() == dumps(strip(json.loads(path.read_text())))
    run(["nbstripout", "--verify", "--keep-count", str(path)], cwd=REPO)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_stage_notebook_has_one_parameters_cell_and_a_compared_output(path):
    cells = json.loads(path.read_text())["cells"]
    tags = [cell["metadata"].get("tags", []) for cell in cells]
    assert sum("parameters" in t for t in tags) == 1
    checked = [c for c, t in zip(cells, tags) if "nbval-check-output" in t]
    assert checked and all(c["outputs"] and c["execution_count"] for c in checked)


def test_progress_lines_name_each_cell_by_the_markdown_before_it():
    cells = [{"cell_type": "markdown", "source": ["# 2. Process\n", "\n", "Hold back part of the data."]},
             {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "test_size = 0.2"},
             {"cell_type": "markdown", "source": "Shuffle and split. A fixed seed makes it repeatable."},
             {"cell_type": "code", "source": "train, test = split(df)"},
             {"cell_type": "code", "source": "\n# write both parts\ntrain.to_csv(path)"},
             {"cell_type": "markdown", "source": "long " * 20}, {"cell_type": "code", "source": "y"},
             {"cell_type": "markdown", "source": "## Write. " + "long " * 20}, {"cell_type": "code", "source": "x"}]
    assert headlines(cells) == ["parameters from params.yaml", "Shuffle and split", "write both parts",
                                ("long " * 14)[:69] + "…", "Write"]
    for path in NOTEBOOKS:  # every stage cell has a headline a student can read
        assert all(headlines(json.loads(path.read_text())["cells"])), path.name


def test_strip_writes_what_nbformat_writes():
    """JupyterLab saves through nbformat; stripped bytes must be the same or DVC sees a change."""
    for path in NOTEBOOKS:
        executed = nbformat.read(REPO / "reports" / path.name, as_version=4) if (REPO / "reports" / path.name).exists() \
            else nbformat.read(path, as_version=4)
        stripped = strip(json.loads(nbformat.writes(executed)))
        assert dumps(stripped) == nbformat.writes(nbformat.from_dict(stripped)) + "\n"
        assert dumps(stripped) == path.read_text()
