"""What every file a user writes shares: strict models, YAML reading, one-line errors.

A sweep file (`schema`) and a cluster profile (`cluster_profile`) are YAML mappings validated
by pydantic models that forbid unknown keys. Whatever is wrong is a `SpecError` whose text is
one line naming the file, the line (bad YAML) or the field (`grid.noise[3]: 1.2 is not in
[0, 1)`), which the CLI prints and exits 2 on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class SpecError(ValueError):
    """A sweep or profile file is invalid; str() is one line naming the file and field."""


class Strict(BaseModel):
    """A settings block: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, source: str, what: str) -> M:
    """`data` (read from `source`) validated as `model`; a SpecError of one line if it is not."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a {what} is a YAML mapping, got {type(data).__name__}")
    try:
        return model(**data)
    except ValidationError as err:
        raise SpecError(f"{source}: {first_error(err)}") from None


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The YAML content of `path`; a missing file or bad YAML is a SpecError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such {what}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{p}{where}: malformed YAML: {problem}") from None


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def first_error(err: ValidationError, prefix: str = "") -> str:
    """The first pydantic error as one line: `grid.noise[3]: 1.2 is not in [0, 1)`."""
    e = err.errors()[0]
    loc = _loc(tuple(e["loc"]))
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        if msg.startswith(("ssl.",)) and not loc:
            return msg
    else:
        msg = (
            f"{e.get('input')!r}: {msg}"
            if "input" in e and not isinstance(e.get("input"), dict)
            else msg
        )
    return f"{loc}: {msg}" if loc else msg
