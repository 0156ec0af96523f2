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


def test_a_revision_is_read_here_only_when_it_is_in_the_history_of_yours(tmp_path):
    """make review's switch: a commit of HEAD's, a branch's or a tag's history is yours (DVC reads it in a
    folder of its own here); one fetched only as an experiment or a remote's branch goes to the sandbox."""
    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=s", "-c", "user.email=s@x"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)

    def commit(message):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=repo, check=True)
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    first = commit("first")
    subprocess.run(["git", "checkout", "-q", "-b", "side"], cwd=repo, check=True)
    branch = commit("on a branch")
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=repo, check=True)
    tagged, fetched = commit("tagged"), commit("a classmate's experiment")
    subprocess.run(["git", "tag", "v1", tagged], cwd=repo, check=True)
    subprocess.run(["git", "update-ref", "refs/exps/ab/cdef/theirs", fetched], cwd=repo, check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, check=True)
    assert [review.yours(repo, c) for c in (first, branch, tagged, fetched)] == [True, True, True, False]


def test_the_diffs_a_clone_sent_back_are_read_for_their_shape():
    """What the review job answers is data: a value of the wrong shape is left out, never an error of ours."""
    found = {"params": {"params.yaml": {"train.C": {"old": 1, "new": 2}, "bad": 3}, "x": []},
             "metrics": [1], "files": {"modified": [{"path": "m", "hash": {"old": "a", "new": "b"}}, "junk"],
                                       "added": "no list"}, "plots": [["roc", "no spec"], 5]}
    sections = review.tables(found, ("main", "HEAD"))
    assert sections["Parameters"][1] == [["params.yaml", "train.C", 1, 2]]
    assert sections["Metrics"][1] == [] and sections["Data and models"][1] == [["m", "modified", "a", "b"]]
    assert review.plots(found) == []
