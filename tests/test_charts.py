"""Charts in the executed notebooks are DVC outputs: their bytes depend on the data only."""

import json
import subprocess
import sys

from helpers import REPO, workspace_env

DRAW = """
import io, sys
from dataops.charts import plt
fig, ax = plt.subplots()
ax.pcolormesh([[3, 0], [1, 5]], cmap="Blues")
ax.text(0.5, 0.5, 3)
ax.plot([0, 1], [0, 1], label="chance")
ax.legend()
out = io.StringIO()
fig.savefig(out, format="svg", metadata={"Date": None})
sys.stdout.write(out.getvalue())
"""


def draw():
    return subprocess.run([sys.executable, "-c", DRAW], env=workspace_env(REPO), capture_output=True, text=True,
                          check=True).stdout


def test_a_chart_drawn_twice_in_two_processes_has_the_same_bytes():
    first, second = draw(), draw()
    assert first.startswith("<?xml") and "<image" not in first, "vector marks only, no embedded PNG"
    assert first == second


def test_the_executed_reports_carry_their_charts_as_svg(reproduced):
    for name, charts in [("01_get_data.ipynb", 1), ("04_evaluate.ipynb", 2)]:
        cells = json.loads((reproduced / "reports" / name).read_text())["cells"]
        svgs = ["".join(o["data"]["image/svg+xml"]) for c in cells for o in c.get("outputs", [])
                if "image/svg+xml" in o.get("data", {})]
        assert len(svgs) == charts, name
        assert all("<dc:date>" not in svg and "<image" not in svg for svg in svgs)
