"""``tagless compare CONFIG``: variants x seeds of one base recipe, one table, one report.

A compare file names a base run recipe, overrides shared by every run, the seeds, and the
variants (each a list of overrides)::

    name: sp_losses            # folder under out_dir (default: the file's stem)
    out_dir: runs              # default runs
    base: multilabel_scenes    # bundled recipe or YAML path (relative to this file first)
    set: [train.epochs=20]     # overrides for every run
    seeds: [0, 1, 2]           # RunConfig.seed of the runs (default [0])
    metrics: [map_class]       # columns (default: every numeric metric the runs report)
    reference: bce_full        # variant the others are compared against
    variants:
      - {name: bce_full, set: [loss.name=bce, labels.mode=full]}
      - {name: an, set: [loss.name=an]}

Run ``variant_sSEED`` gets ``base + set + variant.set + --set + [seed, name, out_dir]``; every
config is validated before the first run trains. Runs train one after another, seed-major
(every variant at the first seed, then the next seed), under ``OUT_DIR/NAME/runs/``; a run
with a ``result.json`` is reused, one with a checkpoint is resumed, one that raises a
TaglessError (NaN loss, ...) is recorded as failed and the comparison goes on.

The table shows mean +- sample std (ddof=1) over seeds, and the difference of means from the
reference with a seed-noise verdict: beyond noise when |difference| > 2 standard errors of
the difference, sqrt(s_a^2 / n_a + s_b^2 / n_b).
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
import yaml

from tagless import config_io
from tagless.config import CONFIG_DIR, load_config, resolve_config_path
from tagless.engine.trainer import train
from tagless.errors import TaglessError
from tagless.tables import format_float, format_table, json_safe

KEYS = ("name", "out_dir", "base", "set", "seeds", "metrics", "reference", "variants")
VARIANT_KEYS = ("name", "set")
RESERVED = ("seed", "name", "out_dir")  # set by compare for every run
SPEED = ("wall_s", "images_per_s")
BEYOND, NOISE, FEW = "beyond noise", "noise", "too few seeds"
_NAME = re.compile(r"^[\w.+-]+$")
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


# ---- statistics ------------------------------------------------------------------------
def _finite(values) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of the finite values; std is NaN below 2 values,
    both NaN for none."""
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def mean_difference(a, b, z: float = 2.0) -> tuple[float, float, str]:
    """(mean(a) - mean(b), its standard error sqrt(s_a^2/n_a + s_b^2/n_b), verdict).

    The verdict is 'beyond noise' when |difference| > z standard errors, else 'noise';
    'too few seeds' when a or b has fewer than 2 finite values (no spread to judge by)."""
    a, b = _finite(a), _finite(b)
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan, FEW
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, math.nan, FEW
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return diff, se, BEYOND if abs(diff) > z * se else NOISE


# ---- the compare file ------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    set: list[str] = field(default_factory=list)


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

    @property
    def dir(self) -> Path:
        return Path(self.out_dir) / self.name


@dataclass
class PlannedRun:
    variant: str
    seed: int
    cfg: object  # RunConfig
    status: str  # new | resume | done

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


def _folder_name(value, where: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise TaglessError(f"{where}: {value!r} must be letters, digits and _ . + - (it names a folder)")
    return value


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


def load_spec(path, overrides=(), seeds=None, name: str | None = None) -> CompareSpec:
    """The validated compare file ``path`` (a YAML path or a bundled name). ``overrides`` apply
    to every run after the variant's own (the command line wins); ``seeds`` and ``name``
    replace the file's."""
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
        variants.append(Variant(vname, _overrides(v.get("set"), f"{where}.set")))
    reference = data.get("reference")
    if reference is not None and reference not in seen:
        raise TaglessError(f"{path}: reference: {reference!r} is not a variant (variants: {', '.join(seen)})")
    return CompareSpec(path, spec_name, out_dir, _base_path(data["base"], path),
                       _overrides(data.get("set"), f"{path}: set"), _overrides(list(overrides), "--set"),
                       seed_list, _metrics(data.get("metrics"), f"{path}: metrics"), reference, variants)


def base_config(spec: CompareSpec):
    """The base recipe with the overrides of every run (what each variant starts from)."""
    try:
        return load_config(str(spec.base), spec.set + spec.cli_set)
    except TaglessError as e:
        raise TaglessError(f"{spec.path}: set: {e}") from None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _stale(run_dir: Path, cfg) -> str | None:
    """The first config key whose value differs from the one the run directory was trained with."""
    try:
        saved = _flat(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError):
        return None
    now = _flat(config_io.to_dict(cfg))
    for key in sorted(set(saved) | set(now)):
        if key != "out_dir" and saved.get(key) != now.get(key):
            return f"{key}: {saved.get(key)!r} -> {now.get(key)!r}"
    return None


def _read_result(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


def plan_runs(spec: CompareSpec, rerun: bool = False) -> list[PlannedRun]:
    """Every run's validated config, seed-major; raises before anything trains."""
    base_config(spec)
    runs = []
    for seed in spec.seeds:
        for i, v in enumerate(spec.variants):
            extra = [f"seed={seed}", f"name={v.name}_s{seed}", f"out_dir={spec.dir / 'runs'}"]
            try:
                cfg = load_config(str(spec.base), spec.set + v.set + spec.cli_set + extra)
            except TaglessError as e:
                raise TaglessError(f"{spec.path}: variants[{i}].set ({v.name}): {e}") from None
            init = cfg.model.init_checkpoint
            if init and not Path(init).is_file():
                raise TaglessError(f"{spec.path}: variant {v.name}: model.init_checkpoint {init} does not exist "
                                   f"(train the backbone it names first; the compare file says how)")
            done = _read_result(cfg.run_dir) is not None
            started = (cfg.run_dir / "checkpoints" / "last.pt").is_file()
            if not rerun and (done or started) and (why := _stale(cfg.run_dir, cfg)):
                raise TaglessError(f"{cfg.run_dir} was trained with another config ({why}): pass --rerun to "
                                   f"retrain it, or choose another name")
            status = "new" if rerun else "done" if done else "resume" if started else "new"
            runs.append(PlannedRun(v.name, seed, cfg, status))
    return runs


# ---- running ---------------------------------------------------------------------------
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _result_record(result, resumed: bool) -> dict:
    """The numbers of a TrainResult for result.json. After a resume, the wall time covers only
    the last segment, so it is left out (None); so is a speed measured over no step."""
    wall, speed = result.wall_s, result.images_per_s
    return json_safe({
        "steps": result.steps, "epochs": result.epochs, "final_loss": result.final_loss,
        "knn_top1": result.knn_top1, "monitor": dict(result.monitor or {}),
        "test": dict(getattr(result, "test", None) or {}), "resumed": resumed,
        "wall_s": None if resumed else wall, "images_per_s": speed if speed else None,
    })


def run_metrics(record: dict) -> dict:
    """A run's metrics: its test numbers if it has any, else its monitor numbers; plus speed."""
    numbers = record.get("test") or record.get("monitor") or {}
    out = {k: v for k, v in numbers.items() if _is_number(v) or v is None}
    return out | {k: record.get(k) for k in SPEED}


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _run_one(run: PlannedRun, progress: bool) -> dict:
    """Train (or resume, or reuse) one run; a TaglessError (or out of memory) becomes a failed record."""
    row = {"variant": run.variant, "seed": run.seed, "run_dir": str(run.run_dir)}
    if run.status == "done":
        record = _read_result(run.run_dir)
        return row | {"status": "reused", "metrics": run_metrics(record), "error": None}
    if run.status == "new" and run.run_dir.exists():  # --rerun, or a run stopped before its first checkpoint
        shutil.rmtree(run.run_dir)
    resumed = run.status == "resume"
    (run.run_dir / "result.json").unlink(missing_ok=True)
    try:
        result = train(run.cfg, resume=resumed, progress=progress)
    except (TaglessError, _OUT_OF_MEMORY) as e:
        return row | {"status": "failed", "metrics": {}, "error": _one_line(e)}
    record = {"variant": run.variant, "seed": run.seed} | _result_record(result, resumed)
    tmp = run.run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    tmp.replace(run.run_dir / "result.json")
    return row | {"status": "resumed" if resumed else "trained", "metrics": run_metrics(record), "error": None}


# ---- the table -------------------------------------------------------------------------
def metric_names(runs: list[dict], wanted: list[str] | None) -> list[str]:
    """The columns: ``wanted``, or every numeric metric of the runs (first seen first), then speed."""
    if wanted:
        return list(wanted)
    found = dict.fromkeys(k for r in runs for k, v in r["metrics"].items() if k not in SPEED and _is_number(v))
    return [*found, *SPEED]


def summarise(runs: list[dict], variants: list[str], metrics: list[str], reference: str | None = None) -> list[dict]:
    """One row per variant: n seeds, failed runs, mean and std of each metric over seeds and,
    with a reference, the difference of means and its seed-noise verdict (numbers, for CSV/JSON)."""
    def values(v, m):
        return [r["metrics"].get(m) for r in runs if r["variant"] == v and r["status"] != "failed"]

    table = []
    for v in variants:
        mine = [r for r in runs if r["variant"] == v]
        row = {"variant": v, "seeds": sum(r["status"] != "failed" for r in mine),
               "failed": sum(r["status"] == "failed" for r in mine)}
        for m in metrics:
            mean, std, _ = mean_std(values(v, m))
            row[m], row[f"{m} std"] = mean, std
            if reference is not None:
                diff, _, verdict = (mean_difference(values(v, m), values(reference, m)) if v != reference
                                    else (None, None, "reference"))
                row[f"{m} vs {reference}"], row[f"{m} verdict"] = diff, verdict
        table.append(row)
    return table


def _num(x) -> str | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else format_float(float(x))


def display_rows(table: list[dict], metrics: list[str], reference: str | None = None) -> list[dict]:
    """The table as text cells: 'mean +- std' and '+diff (verdict)'."""
    show_failed = any(r["failed"] for r in table)
    out = []
    for r in table:
        row = {"variant": r["variant"] + (" (ref)" if r["variant"] == reference else ""), "seeds": r["seeds"]}
        if show_failed:
            row["failed"] = r["failed"]
        for m in metrics:
            mean, std = _num(r[m]), _num(r[f"{m} std"])
            row[m] = None if mean is None else mean if std is None else f"{mean} +- {std}"
            if reference is not None:
                diff = r[f"{m} vs {reference}"]
                shown = None if r["variant"] == reference else _num(diff)
                row[f"vs {reference}: {m}"] = (None if shown is None else
                                               f"{'' if diff < 0 else '+'}{shown} ({r[f'{m} verdict']})")
        out.append(row)
    return out


def markdown_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: "-" if v is None else (format_float(v) if isinstance(v, float) else str(v)).replace("|", "\\|")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v for k, v in r.items()})


def _flat_run(r: dict) -> dict:
    return {"variant": r["variant"], "seed": r["seed"], "status": r["status"], **r["metrics"],
            "error": r["error"], "run_dir": r["run_dir"]}


# ---- the command -----------------------------------------------------------------------
def run_compare(spec: CompareSpec, rerun: bool = False, dry_run: bool = False, progress: bool = True) -> dict:
    """Plan, train, tabulate, plot and report; returns {table, runs, dir, failed, report}."""
    plan = plan_runs(spec, rerun=rerun)
    n = len(plan)
    if dry_run:
        rows = [{"#": i, "variant": r.variant, "seed": r.seed, "status": r.status, "run_dir": str(r.run_dir)}
                for i, r in enumerate(plan, 1)]
        print(format_table(rows, title=f"tagless compare {spec.name}: {n} runs of {spec.base} (dry run)"))
        return {"table": [], "runs": rows, "dir": str(spec.dir), "failed": [], "dry_run": True}
    runs = []
    for i, run in enumerate(plan, 1):
        action = {"done": "finished, reused", "resume": "resuming", "new": "training"}[run.status]
        print(f"[{i}/{n}] {run.variant} seed {run.seed}: {action} ({run.run_dir})", flush=True)
        runs.append(_run_one(run, progress))
        if runs[-1]["status"] == "failed":
            print(f"[{i}/{n}] {run.variant} seed {run.seed} failed: {runs[-1]['error']}", flush=True)
    metrics = metric_names(runs, spec.metrics)
    names = [v.name for v in spec.variants]
    table = summarise(runs, names, metrics, spec.reference)
    shown = display_rows(table, metrics, spec.reference)
    failed = [{"variant": r["variant"], "seed": r["seed"], "run_dir": r["run_dir"], "error": r["error"]}
              for r in runs if r["status"] == "failed"]
    out = spec.dir
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(table, out / "compare.csv")
    (out / "compare.md").write_text(markdown_table(shown))
    result = {"table": table, "runs": [_flat_run(r) for r in runs], "dir": str(out), "failed": failed,
              "report": str(out / "report.html")}
    (out / "compare.json").write_text(json.dumps(json_safe(result), indent=2, default=str))
    write_report(spec, runs, shown, metrics, table)
    print(format_table(shown, title=f"tagless compare {spec.name}: mean +- std over seeds {spec.seeds}"))
    missing = [m for m in metrics if all(r[m] is None or math.isnan(r[m]) for r in table)]
    if missing:
        found = metric_names(runs, None)
        print(f"no run reported {', '.join(missing)} (the runs report: {', '.join(found)})")
    for f in failed:
        print(f"failed: {f['variant']} seed {f['seed']}: {f['error']}")
    print(f"report: {out / 'report.html'}")
    return result


# ---- the report ------------------------------------------------------------------------
def write_report(spec: CompareSpec, runs: list[dict], shown: list[dict], metrics: list[str], table: list[dict]) -> Path:
    """OUT/report.html: the table, bar charts and curves, the variants, the runs, the base config."""
    from tagless.compare_plots import plot_bars, plot_curves, plot_score_panels
    from tagless.report.html import render_html

    out = spec.dir
    base = base_config(spec)
    config_io.save(base, out / "base_config.yaml")
    for stale in [*out.glob("bar_*.png"), out / "curves.png", out / "scores.png", out / "confident.png"]:  # from an earlier invocation
        stale.unlink(missing_ok=True)
    bars = [p for m in metrics if (p := plot_bars(table, m, spec.reference, out / f"bar_{_file_part(m)}.png"))]
    ok = [r for r in runs if r["status"] != "failed"]
    curves = plot_curves({v.name: [Path(r["run_dir"]) for r in ok if r["variant"] == v.name] for v in spec.variants},
                         out / "curves.png", keys=spec.metrics)
    rel = {r["run_dir"]: Path(r["run_dir"]).relative_to(out).as_posix() if Path(r["run_dir"]).is_relative_to(out)
           else r["run_dir"] for r in runs}
    overrides = " ".join(spec.set + spec.cli_set) or "none"
    sections = [{"title": "Comparison", "table": shown,
                 "text": f"Base recipe {spec.base} with {overrides}; seeds {spec.seeds}; {len(runs)} runs.\n"
                         f"Mean +- sample standard deviation over seeds. "
                         + (f"Differences are to {spec.reference}: beyond noise when |difference| exceeds two "
                            f"standard errors of the difference, sqrt(s_a^2/n_a + s_b^2/n_b)." if spec.reference else "")}]
    failed = [{"variant": r["variant"], "seed": r["seed"], "error": r["error"]} for r in runs if r["status"] == "failed"]
    if failed:
        sections.append({"title": "Failed runs", "table": failed})
    if bars:
        sections.append({"title": "Metrics", "text": "Mean over seeds, error bars one standard deviation.",
                         "images": [p.name for p in bars]})
    scores = plot_score_panels({v.name: [Path(r["run_dir"]) for r in ok if r["variant"] == v.name]
                                for v in spec.variants}, out)
    if scores:
        sections.append({"title": "Scores on the test split",
                         "text": "Each variant's first finished seed: sigmoid scores of positive and negative test "
                                 "labels, and the share of images with 0, 1, 2, ... confident classes (> 0.5); "
                                 "paper 003 shows AN on single positives collapsing to one confident class.",
                         "images": [p.name for p in scores]})
    if curves:
        sections.append({"title": "Curves", "text": "Evaluation rows of each run's metrics.jsonl, mean over seeds "
                                                    "(band: one standard deviation).", "images": [curves.name]})
    sections.append({"title": "Variants", "table": [{"variant": v.name, "overrides": " ".join(v.set) or "(none)"}
                                                    for v in spec.variants],
                     "text": f"Every run: {spec.base} + {' '.join(spec.set) or '(no file overrides)'} + the "
                             f"variant's overrides + {' '.join(spec.cli_set) or '(no --set)'} + seed, name, out_dir."})
    sections.append({"title": "Runs", "table": [_flat_run(r) | {"run_dir": rel[r["run_dir"]]} for r in runs]})
    sections.append({"title": "Base config", "text": "The base recipe with the overrides of every run "
                                                     "(base_config.yaml).",
                     "table": [{"key": k, "value": v if isinstance(v, (int, float, str, type(None))) else str(v)}
                               for k, v in _flat(config_io.to_dict(base)).items()]})
    page = render_html(f"tagless compare {spec.name}", sections)
    for r in runs:  # render_html escapes every cell: the run directories become links here
        text = html.escape(rel[r["run_dir"]])
        page = page.replace(f"<td>{text}</td>", f'<td><a href="{html.escape(quote(rel[r["run_dir"]]))}/">{text}</a></td>')
    path = out / "report.html"
    path.write_text(page)
    return path


def _file_part(metric: str) -> str:
    return re.sub(r"[^\w.+-]", "_", metric)
