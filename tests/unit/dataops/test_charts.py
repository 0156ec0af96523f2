"""dataops.charts: a chart's bytes depend on its data only."""

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
    env = {**workspace_env(REPO), "PYTHONPATH": str(REPO / "src")}  # the helpers, as a kernel has them
    return subprocess.run([sys.executable, "-c", DRAW], env=env, capture_output=True, text=True, check=True).stdout


def test_a_chart_drawn_twice_in_two_processes_has_the_same_bytes():
    first, second = draw(), draw()
    assert first.startswith("<?xml") and "<image" not in first, "vector marks only, no embedded PNG"
    assert first == second
