"""read_dataset: each damage of a CSV is one line naming the file, the column and the problem."""

import pytest

RAW = "data/raw/dataset.csv"


def damage(text: str, how: str) -> str:
    lines = text.splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    return {
        "empty": "",
        "header only": header,
        "truncated": header + "".join(rows[:5]),
        "cut mid-line": header + "".join(rows[:40]) + rows[40][:9] + "\n",
        "a gap": header + "".join(rows[:3]) + "5.1,,1.4,0.2,0\n" + "".join(rows[4:]),
        "label first": "".join(",".join([l.rstrip("\n").split(",")[-1], *l.rstrip("\n").split(",")[:-1]]) + "\n"
                               for l in lines),
        "text in a column": header + "".join(rows[:7]) + "5.1,abc,1.4,0.2,0\n" + "".join(rows[8:]),
        "label renamed": header.replace("target", "species") + "".join(rows),
        "negative label": header + "".join(rows[:10]) + "5.1,3.5,1.4,0.2,-1\n" + "".join(rows[11:]),
        "a class missing": header + "".join(r[:-2] + "2\n" if r.endswith(",1\n") else r for r in rows),
    }[how]


CASES = [
    ("empty", "data/raw/dataset.csv is empty"),
    ("header only", "data/raw/dataset.csv: 0 rows, needs at least 10"),
    ("truncated", "data/raw/dataset.csv: 5 rows, needs at least 10 (truncated?)"),
    ("cut mid-line", "data/raw/dataset.csv: column 'petal width (cm)' has 1 missing value(s), first in row 42"),
    ("a gap", "data/raw/dataset.csv: column 'sepal width (cm)' has 1 missing value(s), first in row 5"),
    ("label first", "data/raw/dataset.csv: 'target' must be the last column, found 'petal width (cm)' there"),
    ("text in a column", "data/raw/dataset.csv: column 'sepal width (cm)' must hold numbers, for example 'abc' in row 9"),
    ("label renamed", "data/raw/dataset.csv: no 'target' column (the label)"),
    ("negative label", "data/raw/dataset.csv: column 'target' must hold class numbers 0, 1, 2, ... with none missing; "
                       "found [-1, 0, 1, 2]"),
    ("a class missing", "data/raw/dataset.csv: column 'target' must hold class numbers 0, 1, 2, ... with none missing; "
                        "found [0, 2]"),
]


@pytest.fixture(scope="module")
def iris_csv():
    """The raw file as get_data writes it, without running the pipeline."""
    from sklearn.datasets import load_iris

    return load_iris(as_frame=True).frame.to_csv(index=False)


@pytest.mark.parametrize("how, message", CASES, ids=[c[0] for c in CASES])
def test_damaged_raw_data_is_named_in_one_line(iris_csv, tmp_path, monkeypatch, how, message):
    """Each damage's message, checked in process; the stage prints exactly this line."""
    from dataops import WorkspaceError
    from dataops.data import read_dataset

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    raw = tmp_path / RAW
    raw.parent.mkdir(parents=True)
    raw.write_text(damage(iris_csv, how))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATAOPS_ROOT", raising=False)
    with pytest.raises(WorkspaceError) as error:
        read_dataset(raw)
    assert str(error.value).startswith(message)
