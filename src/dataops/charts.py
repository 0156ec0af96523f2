"""matplotlib for the notebooks' charts, set up so every run writes the same bytes.

The executed notebooks in reports/ are DVC outputs, charts included: a chart
that changed from run to run would change dvc.lock. So charts are SVG, text
(every number in it is rounded by matplotlib, and no compressor is involved,
as in a PNG), with the date left out and the ids derived from a fixed salt
rather than a random one. Draw vector marks only (``pcolormesh``, not
``imshow``, which would embed a PNG)."""

import sys

import matplotlib

matplotlib.rcParams.update({
    "svg.hashsalt": "dataops",  # element ids from this salt, not from a random number
    "svg.fonttype": "none",     # text as text: smaller, and no glyph outlines in the notebook
    "figure.figsize": (5.5, 4),
    "axes.spines.top": False,
    "axes.spines.right": False,
})

from matplotlib import pyplot as plt  # noqa: E402  (after the settings it reads)

__all__ = ["plt"]


def _inline_svg():
    """In a Jupyter kernel: show figures as SVG, without the date matplotlib stamps in."""
    ipython = sys.modules.get("IPython")
    if ipython is None or ipython.get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("svg", metadata={"Date": None})


_inline_svg()
