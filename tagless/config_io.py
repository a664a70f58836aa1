"""Typed, strict config: dataclasses <- YAML file + dotted ``key=value`` overrides.

An unknown key or a value of the wrong type is a one-line :class:`TaglessError` naming the
key (``optim.lr: expected float, got 'fast'``). Defaults live in the dataclasses only.

Numbers are checked as they are read: a float must be finite everywhere (NaN passes every
``x <= 0`` test, so a ``validate()`` cannot be trusted to catch it), and a field declares its
allowed range next to itself with an annotation, ``momentum: Annotated[float, Range(0, 1,
high_open=True)] = 0.9`` or one of the aliases below (``lr: Positive = 0.03``); a value
outside is a one-line error naming the key, the value and the range.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml

from tagless.errors import TaglessError
from tagless.files import write_text_atomic

_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: ``low <= x <= high`` (either end open or absent),
    plus the ``also`` values outside it that mean something (``-1``: auto)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()

    def __contains__(self, x) -> bool:
        if x in self.also:
            return True
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"{'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {self.high}"
        else:
            text = "a finite number"
        return text + "".join(f" or {v}" for v in self.also)


MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds in [0, 2^32)
MAX_IMAGE_SIDE = 4096  # pixels: a cached uint8 RGB image of this side is 48 MB
Positive = Annotated[float, Range(0, low_open=True)]
NonNegative = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]  # a share or a probability
Count = Annotated[int, Range(0)]  # 0 often means "off" or "all"
AtLeastOne = Annotated[int, Range(1)]
Seed = Annotated[int, Range(0, MAX_SEED)]


def _check_number(value, key: str, allowed: Range | None):
    if allowed is not None:
        if value not in allowed:
            raise TaglessError(f"{key}: {value!r} is outside the allowed range {allowed}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise TaglessError(f"{key}: {value!r} is not allowed (a finite number)")
    return value


class TaggedUnion:
    """Base of a config section whose ``name`` picks one dataclass from a registry.

    ``method: {name: moco, queue_size: 4096}`` is read as ``MocoConfig(queue_size=4096)``:
    only the chosen entry's fields are accepted, and only they are saved. Subclasses (each a
    dataclass with a ``name`` field) implement ``variants() -> {name: dataclass}`` and say
    what kind of entry they are in ``kind`` (for messages).
    """

    kind = "entry"

    @classmethod
    def variants(cls) -> dict[str, type]:
        raise NotImplementedError


def tagged(value: Any, tp: type, key: str) -> Any:
    """The variant of tagged union ``tp`` named by ``value['name']`` (default: tp's default)."""
    variants = tp.variants()
    if isinstance(value, tuple(variants.values())):
        return value
    if not isinstance(value, dict):
        raise TaglessError(f"{key}: expected a mapping with a 'name' ({', '.join(variants)}), got {value!r}")
    value = dict(value)
    name = value.get("name") or _default_variant(tp)
    if name not in variants:
        raise TaglessError(f"{key}.name: unknown {tp.kind} {name!r} (valid: {', '.join(variants)})")
    # The nested form of older configs, {name: moco, moco: {...}, simsiam: {...}}, is flattened.
    if isinstance(value.get(name), dict):
        value.update(value.pop(name))
    for other in variants:
        if other != name and isinstance(value.get(other), dict):
            value.pop(other)
    value["name"] = name
    return from_dict(variants[name], value, prefix=key, what=f"{tp.kind} {name}")


def _default_variant(tp: type) -> str:
    return next(f.default for f in dataclasses.fields(tp) if f.name == "name")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, allowed: Range | None = None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lossless cases (int -> float,
    list -> tuple); a number must lie in ``allowed`` (or the range its ``Annotated`` type
    declares), a float must be finite. Raises TaglessError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        ranges = [a for a in tp.__metadata__ if isinstance(a, Range)]
        return _coerce(value, tp.__origin__, key, ranges[0] if ranges else allowed)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, allowed)
            except TaglessError as e:
                errors.append(str(e))
        raise TaglessError(errors[0] if errors else f"{key}: bad value {value!r}")
    if isinstance(tp, type) and issubclass(tp, TaggedUnion):
        return tagged(value, tp, key)
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads on / off (and yes / no) as booleans
        return "on" if value else "off"
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TaglessError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TaglessError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise TaglessError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise TaglessError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return _check_number(float(value), key, allowed)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TaglessError(f"{key}: expected float, got {value!r}")
        return _check_number(float(value), key, allowed)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaglessError(f"{key}: expected int, got {value!r}")
        return _check_number(value, key, allowed)
    if tp is bool:
        if not isinstance(value, bool):
            raise TaglessError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TaglessError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TaglessError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, prefix: str = "", what: str = "") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) nested dict, strictly."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        of = f" of {what}" if what else ""
        raise TaglessError(f"unknown config key '{where}' (valid keys{of}: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Plain YAML-safe structure of a dataclass tree (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(d: dict, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``: a nested config dict keyed by dotted paths."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a','b','c'], YAML-parsed value)."""
    if "=" not in text:
        raise TaglessError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise TaglessError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge_override(data: dict, path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TaglessError(f"override '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TaglessError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise TaglessError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TaglessError(f"{path}: the top level must be a mapping of sections")
    return data


def load(cls: type, path: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Config of type ``cls`` from an optional YAML file plus dotted overrides.

    An override that switches a tagged-union section to another entry (``method.name=simsiam``
    on a MoCo recipe) starts that section afresh: the file's fields were the other entry's."""
    data = read_yaml(path) if path else {}
    parsed = [parse_override(text) for text in overrides]
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    for keys, value in parsed:
        tp = hints.get(keys[0])
        switches = (len(keys) == 2 and keys[1] == "name" and isinstance(tp, type) and issubclass(tp, TaggedUnion)
                    and isinstance(data.get(keys[0]), dict) and data[keys[0]].get("name", value) != value)
        if switches:
            data[keys[0]] = {}
    for keys, value in parsed:
        merge_override(data, keys, value)
    return from_dict(cls, data)


def save(obj: Any, path: str | Path) -> None:
    """``path`` as YAML, written atomically (a reader never sees half a config)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^#=]*(?:=[^#]*)?(?:#\s*(.*))?$")


def field_help(cls: type) -> dict[str, str]:
    """Each field's help text: its trailing ``# comment`` in the class source, else a
    ``name: text`` line of the class docstring."""
    import inspect

    found: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        doc = inspect.getdoc(klass) or ""
        for line in doc.splitlines():
            m = re.match(r"^(\w+):\s+(.*)$", line.strip())
            if m and m.group(1) in {f.name for f in dataclasses.fields(cls)}:
                found[m.group(1)] = m.group(2)
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = _FIELD_LINE.match(line)
            if m and m.group(2):
                found[m.group(1)] = m.group(2).strip()
    return found


def describe(cls: type) -> list[dict]:
    """Rows ``{key, type, default, help}`` for every field of dataclass ``cls`` (an instance's
    values when given one)."""
    obj = cls if not isinstance(cls, type) else cls()
    helps = field_help(type(obj))
    hints = typing.get_type_hints(type(obj))
    rows = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            continue
        rows.append({"key": f.name, "type": _type_name(hints[f.name]), "default": to_dict(value),
                     "help": helps.get(f.name, "")})
    return rows
