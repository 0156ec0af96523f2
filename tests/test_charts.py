"""Charts in the executed notebooks are DVC outputs: their bytes depend on the data only."""

import json


def test_the_executed_reports_carry_their_charts_as_svg(reproduced):
    for name, charts in [("01_get_data.ipynb", 1), ("04_evaluate.ipynb", 2)]:
        cells = json.loads((reproduced / "reports" / name).read_text())["cells"]
        svgs = ["".join(o["data"]["image/svg+xml"]) for c in cells for o in c.get("outputs", [])
                if "image/svg+xml" in o.get("data", {})]
        assert len(svgs) == charts, name
        assert all("<dc:date>" not in svg and "<image" not in svg for svg in svgs)
