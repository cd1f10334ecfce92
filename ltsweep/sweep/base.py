"""What every file a user writes shares: strict models, YAML reading, one-line errors.

A sweep file (`schema`) and a cluster profile (`cluster_profile`) are YAML mappings validated
by pydantic models that forbid unknown keys. Whatever is wrong is a `SpecError` whose text is
one line naming the file, the line (bad YAML) or the field (`grid.noise[3]: 1.2 is not in
[0, 1)`), which the CLI prints and exits 2 on.

The YAML reader is bounded, so no file can exhaust the machine: at most `MAX_BYTES` of UTF-8,
`MAX_DEPTH` levels of nesting, `MAX_NODES` values once aliases are expanded (an alias bomb
is refused before anything walks it), no duplicate keys and only string keys. Every model
refuses inf and NaN, and a boolean where a number is expected (`true` is not 1).
"""

from __future__ import annotations

import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

#: bounds of a sweep file or profile (a real one is a few KB, a few levels deep)
MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
#: no setting is larger (epochs, sizes, rates, memory): beyond it a value is a typo
MAX_NUMBER = 1e12


class SpecError(ValueError):
    """A sweep or profile file is invalid; str() is one line naming the file and field."""


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type accepts a boolean as such (bool, Any, or a union with either)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_takes_bool(a) for a in typing.get_args(annotation))
    return False


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is a number (or a list/tuple/optional of numbers)."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        return any(_numeric(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


class Strict(BaseModel):
    """A settings block: unknown keys are errors, values are frozen, numbers finite, and a
    boolean is not a number."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, Sexagesimal):
            raise ValueError(
                f"{value.text} unquoted is read by YAML as the base-60 number {int(value)}: "
                f"quote it ('{value.text}')"
            )
        field = cls.model_fields.get(info.field_name or "")
        if field is None or _takes_bool(field.annotation) or not _numeric(field.annotation):
            return value
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, bool) for v in items):
            raise ValueError(f"{value!r} is a boolean, not a number")
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{v} is not a finite number")
            if isinstance(v, int | float) and abs(v) > MAX_NUMBER:
                shown = f"{v:.3g}" if abs(v) < 1e300 else "a number"
                raise ValueError(f"{shown} is absurdly large (at most {MAX_NUMBER:g})")
        return value


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any, source: str, what: str) -> M:
    """`data` (read from `source`) validated as `model`; a SpecError of one line if it is not."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a {what} is a YAML mapping, got {type(data).__name__}")
    try:
        return model(**data)
    except ValidationError as err:
        raise SpecError(f"{source}: {first_error(err, model=model)}") from None
    except SpecError:
        raise
    except (TypeError, ValueError, ArithmeticError, RecursionError) as err:
        # a value no validator foresaw (pydantic reports most as ValidationError)
        raise SpecError(f"{source}: {type(err).__name__}: {one_line(str(err))}") from None


def one_line(text: str, limit: int = 300) -> str:
    """`text` as one line of at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Sexagesimal(int):
    """An unquoted `1:30:00`, which YAML 1.1 reads as the base-60 number 5400: refused by
    every field, with the hint to quote it."""

    text = ""


def _construct_int(loader: yaml.SafeLoader, node: Any) -> Any:
    value = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    if ":" in str(node.value):
        value = Sexagesimal(value)
        value.text = str(node.value)
    return value


class _Loader(yaml.SafeLoader):
    """SafeLoader with duplicate keys refused and nesting bounded."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise SpecError(f":{mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise SpecError(
                    f":{key_node.start_mark.line + 1}: key {key!r} is not a string (quote it)"
                )
            if key in seen:
                raise SpecError(f":{key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _expanded_size(root: Any) -> int:
    """How many values the node graph holds once every alias is expanded (memoised: an alias
    bomb is measured without being expanded); MAX_NODES + 1 as soon as it is larger."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        kids: list[Any] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if children_done or not kids:
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes.get(id(k), 0) for k in kids))
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes.get(id(root), 0)


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The YAML content of `path`; a missing, oversized, non-UTF-8, too deep or too large
    (aliases expanded) file, duplicate or non-string keys, or bad YAML is a SpecError naming
    the file (and the line)."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such {what}")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as err:
        raise SpecError(f"{p}: cannot read the {what} ({err.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise SpecError(f"{p}: larger than {MAX_BYTES // 1024} KB; not a {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError(f"{p}: not UTF-8 text (byte {err.start}); not a {what}") from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, source: str) -> Any:
    """The YAML content of `text` (read from `source`), bounded as `read_yaml` says."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise SpecError(f"{source}: more than {MAX_NODES} values once aliases are expanded")
        return loader.construct_document(node)
    except SpecError as err:
        text = str(err)
        raise SpecError(f"{source}{text}" if text.startswith(":") else text) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{source}{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deep") from None
    finally:
        loader.dispose()


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The settings class that holds the field at `path` below `model` (None if unknown)."""
    for name in path:
        field = model.model_fields.get(name) if isinstance(name, str) else None
        if field is None:
            return None
        found = [
            t
            for t in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        if not found:
            return None
        model = found[0]
    return model


def _did_you_mean(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    """` (did you mean 'seeds'?)` for a mistyped key, when a known one is close."""
    import difflib

    holder = _model_at(model, loc[:-1]) if model is not None else None
    if holder is None or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(holder.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_error(
    err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """The first pydantic error as one line: `grid.noise[3]: 1.2 is not in [0, 1)`;
    `model`, the class validated, lets a mistyped key name its likely meaning."""
    e = err.errors()[0]
    loc = _loc(tuple(e["loc"]))
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}" + _did_you_mean(model, tuple(e["loc"]))
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
