"""Reading the pipeline's CSV files with the checks a student needs when one
is truncated, emptied, reordered or full of gaps: each problem is one line
naming the file, the column and what was expected."""

import math
from pathlib import Path

import pandas as pd

from dataops import WorkspaceError, find_root

LABEL = "target"
MIN_ROWS = 10


def read_dataset(path: Path) -> pd.DataFrame:
    """pandas.read_csv, then check: enough rows, numeric columns without gaps,
    and the label last, made of class numbers."""
    try:
        name = path.relative_to(find_root())
    except ValueError:
        name = path
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise WorkspaceError(f"{name} does not exist: run the stage that writes it (dvc repro)") from None
    except pd.errors.EmptyDataError:
        raise WorkspaceError(f"{name} is empty") from None
    except pd.errors.ParserError as error:
        raise WorkspaceError(f"{name} is not a well-formed CSV: {error}") from None

    if LABEL not in df.columns:
        raise WorkspaceError(f"{name}: no '{LABEL}' column (the label); columns are {list(df.columns)[:6]}...")
    if df.columns[-1] != LABEL:
        raise WorkspaceError(f"{name}: '{LABEL}' must be the last column, found '{df.columns[-1]}' there")
    if len(df) < MIN_ROWS:
        raise WorkspaceError(f"{name}: {len(df)} rows, needs at least {MIN_ROWS} (truncated?)")
    for column in df.columns:
        if not pd.api.types.is_numeric_dtype(df[column]):
            bad = df[column][pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()]
            example = f", for example {bad.iloc[0]!r} in row {bad.index[0] + 2}" if len(bad) else ""
            raise WorkspaceError(f"{name}: column '{column}' must hold numbers{example}")
        gaps = int(df[column].isna().sum())
        if gaps:
            raise WorkspaceError(f"{name}: column '{column}' has {gaps} missing value(s), "
                                 f"first in row {int(df[column].isna().idxmax()) + 2}")
    labels = df[LABEL]
    found = sorted(labels.unique().tolist())
    if (labels < 0).any() or (labels % 1 != 0).any() or found != list(range(len(found))):
        raise WorkspaceError(f"{name}: column '{LABEL}' must hold class numbers 0, 1, 2, ... with none missing; "
                             f"found {found[:5]}{' ...' if len(found) > 5 else ''}")
    return df


def check_split(rows: int, test_size: float) -> None:
    """Refuse a process.test_size that leaves fewer than MIN_ROWS rows on either
    side of the split (scikit-learn rounds the test part up), before any file
    is written: the stages after it could not use such a part."""
    test = math.ceil(test_size * rows)
    if min(test, rows - test) < MIN_ROWS:
        low, high = math.ceil(MIN_ROWS / rows * 100) / 100, math.floor((1 - MIN_ROWS / rows) * 100) / 100
        raise WorkspaceError(f"process.test_size = {test_size} splits {rows} rows into {rows - test} train and "
                             f"{test} test rows; each part needs at least {MIN_ROWS}: use a test_size between "
                             f"{low} and {high}")
