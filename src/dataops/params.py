"""params.yaml, validated as a whole before any stage does work.

Every key is declared here with what it allows, so a typo or a bad value
fails with one line that names the key, the value and the rule."""

import difflib
import math
from pathlib import Path

import yaml

from dataops import WorkspaceError, paths


class Number:
    def __init__(self, low, high, integer=False, low_open=False, high_open=False):
        self.low, self.high, self.integer = low, high, integer
        self.low_open, self.high_open = low_open, high_open

    def allowed(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.high is None:
            return f"must be {kind} >= {self.low}" if not self.low_open else f"must be {kind} > {self.low}"
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


SCHEMA = {
    "process": {
        "test_size": Number(0, 1, low_open=True, high_open=True),
        "random_state": Number(0, 2**32 - 1, integer=True),
    },
    "train": {
        "max_iter": Number(1, None, integer=True),
    },
}


def _nearest(name, choices):
    close = difflib.get_close_matches(str(name), choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def problems(data, schema=SCHEMA) -> list[str]:
    """Every problem in a parsed params.yaml, one readable line each."""
    if data is None:
        return [f"params.yaml is empty: it needs the sections {', '.join(schema)}"]
    if not isinstance(data, dict):
        return [f"params.yaml must be a mapping of sections ({', '.join(schema)}), not {type(data).__name__}"]
    found = []
    for section in data:
        if section not in schema:
            found.append(f"{section}: unknown section{_nearest(section, schema)}; allowed: {', '.join(schema)}")
    for section, keys in schema.items():
        values = data.get(section)
        if section not in data:
            found.append(f"{section}: missing section; it needs the keys {', '.join(keys)}")
            continue
        if not isinstance(values, dict):
            found.append(f"{section}: must be a mapping of keys ({', '.join(keys)}), not {values!r}")
            continue
        for key in values:
            if key not in keys:
                found.append(f"{section}.{key}: unknown key{_nearest(key, keys)}; allowed: {', '.join(keys)}")
        for key, rule in keys.items():
            if key not in values:
                found.append(f"{section}.{key}: missing; it {rule.allowed()}")
            elif not rule.accepts(values[key]):
                found.append(f"{section}.{key} = {values[key]!r}: {rule.allowed()}")
    return found


def read(path: Path) -> dict:
    """Parse and validate params.yaml; raise one WorkspaceError listing every problem."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise WorkspaceError(f"{path} does not exist") from None
    except yaml.YAMLError as error:
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
