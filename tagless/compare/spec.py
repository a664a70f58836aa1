"""The compare file: a base run recipe, overrides shared by every run, the seeds and the
variants, validated before anything trains (see :mod:`tagless.compare`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tagless import config_io
from tagless.engine.run_config import CONFIG_DIR, load_config, resolve_config_path
from tagless.errors import TaglessError
from tagless.files import check_folder_name

KEYS = ("name", "out_dir", "base", "set", "seeds", "metrics", "reference", "variants", "sweep", "select")
VARIANT_KEYS = ("name", "set", "base", "sweep")
SELECT = ("val", "test")  # how a sweep's grid point is chosen: on the validation split, or (named) on test
RESERVED = ("seed", "name", "out_dir")  # set by compare for every run


@dataclass
class Variant:
    name: str
    set: list[str] = field(default_factory=list)
    base: Path | None = None  # its own base recipe (a baseline with other views, say); None = the file's
    sweep: dict[str, list] = field(default_factory=dict)  # grid of override values, every point run

    def grid(self) -> list[list[str]]:
        """The sweep's grid points as lists of overrides (``[[]]``: no sweep), in file order."""
        points = [[]]
        for key, values in self.sweep.items():
            points = [[*p, f"{key}={_override_value(v)}"] for p in points for v in values]
        return points


@dataclass
class CompareSpec:
    path: Path  # the compare file
    name: str
    out_dir: str
    base: Path  # the resolved base recipe
    set: list[str]  # the file's overrides for every run (before a variant's)
    cli_set: list[str]  # --set: for every run, after a variant's (the command line wins)
    seeds: list[int]
    metrics: list[str] | None
    reference: str | None
    variants: list[Variant]
    select: str = "val"  # val: each variant's grid point chosen on the validation split | test (marked)

    @property
    def dir(self) -> Path:
        return Path(self.out_dir) / self.name


_folder_name = check_folder_name  # the rule of run names too (RunConfig.name)


def _overrides(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaglessError(f"{where}: expected a list of key=value strings, got {value!r}")
    for text in value:
        key = text.split("=", 1)[0].strip()
        if "=" not in text or not key:
            raise TaglessError(f"{where}: {text!r} is not of the form key=value")
        if key in RESERVED:
            raise TaglessError(f"{where}: {text!r}: compare sets seed, name and out_dir of each run itself "
                               f"(use seeds:, name:, out_dir: of the compare file)")
    return list(value)


def _override_value(v) -> str:
    """A value as the right-hand side of ``key=value`` (lists in YAML flow form)."""
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_override_value(x) for x in v) + "]"
    return "true" if v is True else "false" if v is False else str(v)


def _sweep(value, where: str) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise TaglessError(f"{where}: expected a mapping of key: [values], got {value!r}")
    for key, values in value.items():
        if not isinstance(key, str) or "=" in key or not key or key.split(".")[0] in RESERVED:
            raise TaglessError(f"{where}: {key!r} is not a config key compare may sweep")
        if not isinstance(values, list) or not values or len({_override_value(v) for v in values}) != len(values):
            raise TaglessError(f"{where}.{key}: expected a non-empty list of distinct values, got {values!r}")
    return {key: [_number(v) for v in values] for key, values in value.items()}


def _number(v):
    """YAML 1.1 reads ``1e-3`` as a string: sweep values that are numbers become numbers."""
    if isinstance(v, str):
        for cast in (int, float):
            try:
                return cast(v)
            except ValueError:
                pass
    return v


def _seeds(value, where: str) -> list[int]:
    ok = isinstance(value, list) and value and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    if not ok or len(set(value)) != len(value):
        raise TaglessError(f"{where}: expected a non-empty list of distinct integers >= 0, got {value!r}")
    return list(value)


def _base_path(base, path: Path) -> Path:
    if not isinstance(base, str) or not base:
        raise TaglessError(f"{path}: base: expected a recipe name or a YAML path, got {base!r}")
    local = path.parent / base
    if local.is_file():
        return local
    try:
        return resolve_config_path(base)
    except TaglessError as e:
        raise TaglessError(f"{path}: base: {e}") from None


def _metrics(value, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(m, str) and m for m in value) \
            or len(set(value)) != len(value):
        raise TaglessError(f"{where}: expected a non-empty list of distinct metric names, got {value!r}")
    return list(value)


COMPARE_DIR = CONFIG_DIR / "compare"


def resolve_compare_path(name_or_path: str) -> Path:
    """A compare YAML path, or the name of a bundled comparison (configs/compare/NAME.yaml)."""
    bundled = COMPARE_DIR / f"{name_or_path.removesuffix('.yaml')}.yaml"
    if not Path(name_or_path).is_file() and bundled.is_file():
        return bundled
    try:
        return resolve_config_path(name_or_path)
    except TaglessError:
        names = sorted(p.stem for p in COMPARE_DIR.glob("*.yaml"))
        raise TaglessError(f"compare file not found: {name_or_path} (bundled: {', '.join(names)})") from None


def parse_sweep(texts: list[str]) -> dict[str, list]:
    """``["optim.lr=1e-3,1e-4", "train.batch_size=8,16"]`` -> a sweep mapping (``["none"]``: {})."""
    if texts == ["none"]:
        return {}
    out = {}
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep or not key or not values:
            raise TaglessError(f"--sweep: {text!r} is not of the form key=value1,value2")
        out[key.strip()] = [config_io.parse_override(f"{key}={v}")[1] for v in values.split(",")]
    return _sweep(out, "--sweep")


def load_spec(path, overrides=(), seeds=None, name: str | None = None, sweep: list[str] | None = None,
              only: list[str] | None = None) -> CompareSpec:
    """The validated compare file ``path`` (a YAML path or a bundled name). ``overrides`` apply
    to every run after the variant's own (the command line wins); ``seeds``, ``name`` and
    ``sweep`` (``--sweep`` texts: every variant's grid) replace the file's; ``only`` keeps
    these variants (and the reference, which every difference needs)."""
    path = resolve_compare_path(str(path))
    data = config_io.read_yaml(path)
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        hint = " (a run recipe? a compare file has base: and variants:)" if "base" not in data else ""
        raise TaglessError(f"{path}: unknown key {unknown[0]!r} (valid: {', '.join(KEYS)}){hint}")
    if "base" not in data:
        raise TaglessError(f"{path}: base: missing (the run recipe every variant starts from)")
    spec_name = _folder_name(name, "--name") if name is not None else _folder_name(data.get("name", path.stem),
                                                                                   f"{path}: name")
    out_dir = data.get("out_dir", "runs")
    if not isinstance(out_dir, str) or not out_dir:
        raise TaglessError(f"{path}: out_dir: expected a folder, got {out_dir!r}")
    seed_list = _seeds(list(seeds), "--seeds") if seeds is not None else _seeds(data.get("seeds", [0]),
                                                                                 f"{path}: seeds")
    sweep_override = parse_sweep(list(sweep)) if sweep is not None else None
    raw = data.get("variants")
    if not isinstance(raw, list) or not raw:
        raise TaglessError(f"{path}: variants: expected a non-empty list of {{name:, set:}}, got {raw!r}")
    variants, seen = [], []
    for i, v in enumerate(raw):
        where = f"{path}: variants[{i}]"
        if not isinstance(v, dict):
            raise TaglessError(f"{where}: expected a mapping with name: and set:, got {v!r}")
        bad = [k for k in v if k not in VARIANT_KEYS]
        if bad:
            raise TaglessError(f"{where}: unknown key {bad[0]!r} (valid: {', '.join(VARIANT_KEYS)})")
        vname = _folder_name(v.get("name"), f"{where}.name")
        if vname in seen:
            raise TaglessError(f"{where}.name: duplicate variant name {vname!r}")
        seen.append(vname)
        own_base = _base_path(v["base"], path) if v.get("base") is not None else None
        sweep = {**_sweep(data.get("sweep"), f"{path}: sweep"), **_sweep(v.get("sweep"), f"{where}.sweep")}
        if sweep_override is not None:
            sweep = sweep_override
        variants.append(Variant(vname, _overrides(v.get("set"), f"{where}.set"), own_base, sweep))
    reference = data.get("reference")
    if reference is not None and reference not in seen:
        raise TaglessError(f"{path}: reference: {reference!r} is not a variant (variants: {', '.join(seen)})")
    if only:
        unknown = [v for v in only if v not in seen]
        if unknown:
            raise TaglessError(f"--only: {unknown[0]!r} is not a variant of {path} (variants: {', '.join(seen)})")
        variants = [v for v in variants if v.name in only or v.name == reference]
    select = data.get("select", "val")
    if select not in SELECT:
        raise TaglessError(f"{path}: select: expected val (choose each grid point on the validation split) or "
                           f"test (an explicitly named protocol, marked in every table), got {select!r}")
    return CompareSpec(path, spec_name, out_dir, _base_path(data["base"], path),
                       _overrides(data.get("set"), f"{path}: set"), _overrides(list(overrides), "--set"),
                       seed_list, _metrics(data.get("metrics"), f"{path}: metrics"), reference, variants, select)


def base_config(spec: CompareSpec):
    """The base recipe with the overrides of every run (what each variant starts from)."""
    try:
        return load_config(str(spec.base), spec.set + spec.cli_set)
    except TaglessError as e:
        raise TaglessError(f"{spec.path}: set: {e}") from None
