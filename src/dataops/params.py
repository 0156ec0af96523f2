"""params.yaml, validated as a whole before any stage does work.

Every key is declared here with what it allows, so a typo or a bad value
fails with one line that names the key, the value and the rule."""

import difflib
import math
from pathlib import Path

from ruamel.yaml import YAML, YAMLError

from dataops import WorkspaceError, paths


class Number:
    def __init__(self, low, high=None, integer=False, low_open=False, high_open=False):
        self.low, self.high, self.integer = low, high, integer
        self.low_open, self.high_open = low_open, high_open

    def allowed(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.high is None:
            return f"must be {kind} {'>' if self.low_open else '>='} {self.low}"
        ends = "(exclusive)" if self.low_open and self.high_open else "(inclusive)"
        return f"must be {kind} between {self.low} and {self.high} {ends}"

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


class Choice:
    def __init__(self, *options):
        self.options = options

    def allowed(self) -> str:
        return f"must be one of {', '.join(self.options)}"

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.options


SEED = Number(0, 2**32 - 1, integer=True)

SCHEMA = {
    "data": {
        "dataset": Choice("iris", "wine", "breast_cancer", "digits", "synthetic"),
        "n_samples": Number(10, 10_000_000, integer=True),
    },
    "process": {
        "test_size": Number(0, 1, low_open=True, high_open=True),
        "random_state": SEED,
    },
    "train": {
        "model": Choice("logistic_regression", "random_forest", "svc"),
        "random_state": SEED,
        "logistic_regression": {
            "C": Number(0, low_open=True),
            "max_iter": Number(1, integer=True),
        },
        "random_forest": {
            "n_estimators": Number(1, integer=True),
            "max_depth": Number(1, integer=True),
        },
        "svc": {
            "C": Number(0, low_open=True),
            "kernel": Choice("linear", "poly", "rbf", "sigmoid"),
        },
    },
    "runner": {
        "cell_timeout": Number(1, integer=True),
    },
}


def _close(name, choices):
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return close[0] if close else None


def _nearest(name, choices):
    close = _close(name, choices)
    return f" (did you mean {close}?)" if close else ""


def _misspelt(values, schema) -> set:
    """Missing names that an unknown name in `values` is a misspelling of:
    the unknown name's line already says so, once."""
    return {_close(key, schema) for key in values if key not in schema} - {None}


def _check(values, schema, prefix, found):
    """Append a line to `found` for every problem in `values` against `schema`:
    the sections of params.yaml when `prefix` is empty, else a section's keys."""
    kind, names = ("section" if not prefix else "key"), ", ".join(schema)
    if not isinstance(values, dict):
        found.append(f"params.yaml must be a mapping of sections ({names}), not {type(values).__name__}"
                     if not prefix else f"{prefix}: must be a mapping of keys ({names}), not {values!r}")
        return
    for key in values:
        if key not in schema:
            found.append(f"{prefix}{'.' if prefix else ''}{key}: unknown {kind}{_nearest(key, schema)}; "
                         f"allowed: {names}")
    for key, rule in schema.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in values and key in _misspelt(values, schema):
            continue
        if key not in values:
            needs = f"it needs the keys {', '.join(rule)}" if isinstance(rule, dict) else f"it {rule.allowed()}"
            found.append(f"{where}: missing{' section' if not prefix else ''}; {needs}")
        elif isinstance(rule, dict):
            _check(values[key], rule, where, found)
        elif not rule.accepts(values[key]):
            found.append(f"{where} = {values[key]!r}: {rule.allowed()}")


def problems(data, schema=SCHEMA) -> list[str]:
    """Every problem in a parsed params.yaml, one readable line each."""
    if data is None:
        return [f"params.yaml is empty: it needs the sections {', '.join(schema)}"]
    found = []
    _check(data, schema, "", found)
    return found


def parse(text: str):
    """params.yaml as DVC reads it (ruamel.yaml's safe loader, YAML 1.2): `1e-3`
    is a number, `yes` a string, and a duplicated key an error, in a notebook
    as in `dvc params diff`. PyYAML (YAML 1.1) would disagree on all three."""
    return YAML(typ="safe").load(text)


def read(path: Path) -> dict:
    """Parse and validate params.yaml; raise one WorkspaceError listing every problem."""
    try:
        data = parse(path.read_text())
    except FileNotFoundError:
        raise WorkspaceError(f"{path} does not exist") from None
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(error, "problem", None) or str(error)
        raise WorkspaceError(f"params.yaml is not valid YAML{where}: {reason}") from None
    found = problems(data)
    if found:
        raise WorkspaceError("params.yaml: " + "; ".join(found) if len(found) == 1
                             else "params.yaml has problems:\n  " + "\n  ".join(found))
    return data


def load_params(section: str) -> dict:
    """The validated values of one params.yaml section, with their YAML types."""
    return read(paths().params)[section]
