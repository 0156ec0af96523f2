"""make review's rules on the other side's plots (dataops_kit.review), without DVC's diffs: a template is
DVC's or this clone's, by name, and a plot's data is what the spec holds, never a URL fetched."""

import subprocess
import sys

import pytest

from dataops_kit import review
from helpers import REPO, free_port

PLOTS = "plots:\n  - reports/plots/roc.csv:\n      template: {}\n      x: fpr\n      y: tpr\n"


@pytest.mark.parametrize("template, refused", [
    ("linear", False), ("roc_per_class", False), ("confusion_counts", False),  # DVC's, and this clone's
    ("../cache/files/md5/ab/cdef0123456789abcdef0123456789", True), ("/etc/passwd", True),
    (".dvc/plots/roc_per_class.json", True), ("nothing_here", True), ("[1, 2]", True)])
def test_only_a_built_in_or_own_template_by_name_is_drawn(tmp_path, template, refused):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".dvc").mkdir()
    subprocess.run(["cp", "-r", str(REPO / ".dvc" / "plots"), str(repo / ".dvc" / "plots")], check=True)
    (repo / "dvc.yaml").write_text(PLOTS.format(template))
    subprocess.run("git add dvc.yaml && git -c user.name=s -c user.email=s@x commit -qm x", shell=True, cwd=repo,
                   check=True)
    found = review.template_refusal(repo, "HEAD")
    assert (found is not None) == refused, found
    if refused:
        assert found.startswith("HEAD's dvc.yaml draws a plot with the template") and "\n" not in found


def test_a_plot_that_asks_for_a_url_is_refused_and_nothing_is_fetched(tmp_path):
    """A listener on 127.0.0.1 (another process: vl-convert holds the GIL while it draws) receives nothing."""
    import vl_convert

    port, log = free_port(), tmp_path / "requests.log"
    with open(log, "w") as out:
        listener = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                     "--directory", str(tmp_path)], stderr=out, stdout=out)
    try:
        while subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}))"],
                             capture_output=True).returncode:  # listening, so a fetch would be seen
            pass
        spec = {"data": {"url": f"http://127.0.0.1:{port}/data.csv"}, "mark": "point",
                "encoding": {"x": {"field": "a", "type": "quantitative"}}}
        with pytest.raises(review.ReviewError, match="cannot be drawn from its own data"):
            review.draw(vl_convert, "roc", spec)
        assert review.draw(vl_convert, "roc", {"data": {"values": [{"a": 1}]}, "mark": "point"})[:4] == b"\x89PNG"
    finally:
        listener.terminate()
        listener.wait()
    assert "GET" not in log.read_text()
