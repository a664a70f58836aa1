"""Running a comparison: every run's validated config planned seed-major before anything
trains, then each run trained, resumed or reused one after another; the table, files and
report written at the end (see :mod:`tagless.compare`)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from tagless import config_io
from tagless.compare.report import write_report
from tagless.compare.spec import CompareSpec, base_config
from tagless.compare.table import (
    choose_points,
    display_rows,
    flat_run,
    markdown_table,
    metric_names,
    run_metrics,
    summarise,
    write_csv,
)
from tagless.engine.run_config import config_from_dict, load_config
from tagless.engine.trainer import train
from tagless.errors import TaglessError
from tagless.files import is_locked, write_text_atomic
from tagless.tables import format_table, json_safe

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class PlannedRun:
    variant: str
    seed: int
    cfg: object  # RunConfig
    status: str  # new | resume | done
    point: list[str] = field(default_factory=list)  # the sweep's overrides of this run ([] without a sweep)
    point_index: int = 0

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir


def _stale(run_dir: Path, cfg) -> str | None:
    """The first config key whose value differs from the one the run directory was trained with.
    A config.yaml that cannot be read is stale too: a run is reused only when it is known to
    be this config's."""
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return f"its config.yaml cannot be read ({type(e).__name__})"
    if not isinstance(saved, dict):
        return "its config.yaml is not a mapping of sections"
    saved = _with_defaults(saved)
    now = config_io.flatten(config_io.to_dict(cfg))
    for key in sorted(set(saved) | set(now)):
        if key != "out_dir" and saved.get(key) != now.get(key):
            return f"{key}: {saved.get(key)!r} -> {now.get(key)!r}"
    return None


def _with_defaults(saved: dict) -> dict:
    """A saved config read through today's schema (flattened), so that a field added since, whose
    default keeps the old behaviour (``model.trainable: all``, the ``probe`` section), is no
    difference; as saved when today's schema refuses it (a field renamed or removed since)."""
    try:
        return config_io.flatten(config_io.to_dict(config_from_dict(saved)))
    except TaglessError:
        return config_io.flatten(saved)


def _read_result(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None


def plan_runs(spec: CompareSpec, rerun: bool = False) -> list[PlannedRun]:
    """Every run's validated config, seed-major (a variant's grid points together); raises before
    anything trains."""
    base_config(spec)
    return [_plan_one(spec, i, v, seed, gi, point, rerun)
            for seed in spec.seeds for i, v in enumerate(spec.variants) for gi, point in enumerate(v.grid())]


def _plan_one(spec: CompareSpec, i: int, v, seed: int, gi: int, point: list[str], rerun: bool) -> PlannedRun:
    points = len(v.grid())
    name = f"{v.name}_s{seed}" if points == 1 else f"{v.name}_g{gi}_s{seed}"
    extra = [f"seed={seed}", f"name={name}", f"out_dir={spec.dir / 'runs'}"]
    try:
        cfg = load_config(str(v.base or spec.base), spec.set + v.set + point + spec.cli_set + extra)
    except TaglessError as e:
        where = v.name + "".join(f" {o}" for o in point)
        raise TaglessError(f"{spec.path}: variants[{i}].set ({where}): {e}") from None
    if points > 1 and spec.select == "val" and not _validates(cfg):
        raise TaglessError(f"{spec.path}: variant {v.name} sweeps {points} grid points, chosen on the validation "
                           f"split: give the runs one (labels.val_fraction > 0, train.knn_every_epochs >= 1, "
                           f"train.select_metric not none), or name the protocol select: test")
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
    return PlannedRun(v.name, seed, cfg, status, point, gi)


def _validates(cfg) -> bool:
    """Whether a run chooses its best epoch on a validation split (``TrainResult.selection``)."""
    return cfg.labels.val_fraction > 0 and cfg.train.select_metric != "none" and cfg.train.knn_every_epochs >= 1


def _result_record(result, resumed: bool) -> dict:
    """The numbers of a TrainResult for result.json. After a resume, the wall time covers only
    the last segment, so it is left out (None); so is a speed measured over no step."""
    wall, speed = result.wall_s, result.images_per_s
    return json_safe({
        "steps": result.steps, "epochs": result.epochs, "final_loss": result.final_loss,
        "knn_top1": result.knn_top1, "monitor": dict(result.monitor or {}),
        "test": dict(getattr(result, "test", None) or {}), "resumed": resumed,
        "selection": dict(getattr(result, "selection", None) or {}),
        "wall_s": None if resumed else wall, "images_per_s": speed if speed else None,
    })


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _run_one(run: PlannedRun, progress: bool) -> dict:
    """Train (or resume, or reuse) one run; a TaglessError (or out of memory) becomes a failed record."""
    row = {"variant": run.variant, "seed": run.seed, "run_dir": str(run.run_dir), "point": run.point,
           "point_index": run.point_index}
    if run.status == "done":
        record = _read_result(run.run_dir)
        return row | {"status": "reused", "metrics": run_metrics(record), "error": None,
                      "selection": record.get("selection") or {}}
    if is_locked(run.run_dir / ".lock"):  # another process trains it: neither delete nor join it
        return row | {"status": "failed", "metrics": {}, "error": f"{run.run_dir} is being trained by another process"}
    if run.status == "new" and run.run_dir.exists():  # --rerun, or a run stopped before its first checkpoint
        shutil.rmtree(run.run_dir)
    resumed = run.status == "resume"
    (run.run_dir / "result.json").unlink(missing_ok=True)
    try:
        result = train(run.cfg, resume=resumed, progress=progress)
    except (TaglessError, _OUT_OF_MEMORY) as e:
        return row | {"status": "failed", "metrics": {}, "error": _one_line(e)}
    record = {"variant": run.variant, "seed": run.seed, "point": run.point} | _result_record(result, resumed)
    write_text_atomic(run.run_dir / "result.json", json.dumps(record, indent=2, allow_nan=False))
    return row | {"status": "resumed" if resumed else "trained", "metrics": run_metrics(record), "error": None,
                  "selection": record["selection"]}


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
    chosen = choose_points(runs, spec.select, metrics[0] if metrics else None)
    table = summarise(chosen, names, metrics, spec.reference)
    shown = display_rows(table, metrics, spec.reference, chosen, spec.select)
    failed = [{"variant": r["variant"], "seed": r["seed"], "run_dir": r["run_dir"], "error": r["error"]}
              for r in runs if r["status"] == "failed"]
    out = spec.dir
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / "compare.csv")
    write_text_atomic(out / "compare.md", markdown_table(shown))
    result = {"table": table, "runs": [flat_run(r) for r in runs], "chosen": [flat_run(r) for r in chosen],
              "select": spec.select, "dir": str(out), "failed": failed, "report": str(out / "report.html")}
    write_text_atomic(out / "compare.json", json.dumps(json_safe(result), indent=2, default=str))
    write_report(spec, runs, shown, metrics, table, chosen)
    how = ("" if len(chosen) == len(runs) else "; each grid point chosen on the validation split"
           if spec.select == "val" else "; GRID POINTS CHOSEN ON THE TEST SPLIT")
    print(format_table(shown, title=f"tagless compare {spec.name}: mean +- std over seeds {spec.seeds}{how}"))
    missing = [m for m in metrics if all(r[m] is None or math.isnan(r[m]) for r in table)]
    if missing:
        found = metric_names(runs, None)
        print(f"no run reported {', '.join(missing)} (the runs report: {', '.join(found)})")
    for f in failed:
        print(f"failed: {f['variant']} seed {f['seed']}: {f['error']}")
    print(f"report: {out / 'report.html'}")
    return result
