"""``tagless report RUN_DIR``: evaluate a run's last checkpoint the way the papers do and
write ``report.html`` (training curves, kNN / linear tables, t-SNE, confusion matrix; for
multi-label data per-class AP bars and score histograms; a classifier's own scores, a
self-labelling run's clusters, MLS's neighbours) plus ``results.json``. A self-labelling run's
page opens with its labels (NMI, the cluster grid); its cluster sizes and per-head solver
curves sit folded near the end.

The checkpoint is read once and each split built once (:class:`tagless.engine.loaded_run.
LoadedRun`); every section gets that one object."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tagless.device import resolve_device
from tagless.engine.checkpoint_features import dataset_features
from tagless.engine.loaded_run import BEST, LAST, LoadedRun, load_run
from tagless.errors import TaglessError
from tagless.eval.scoring import score_multilabel, score_single_label
from tagless.files import write_text_atomic
from tagless.report.classifier import classifier_sections
from tagless.report.clusters import cluster_sections
from tagless.report.neighbours import neighbour_sections
from tagless.report.report import (
    multilabel_section,
    report_dir,
    single_label_section,
    solver_section,
    training_section,
    write_report,
)

MULTI_KINDS = ("multi", "partial", "single_positive")


def feature_section(run: LoadedRun, out_dir: Path, k: int = 20, temperature: float = 0.07) -> tuple[dict | None, list]:
    """The frozen backbone scored on the held-out split: kNN / linear / k-means for single
    labels, the one-vs-rest probe's mAP for multi-label data. ``(section or None, rows)``."""
    dev = run.device
    x_tr, ds_tr = dataset_features(run.backbone, run.data, "train", device=dev, dataset=run.split("train"))
    x_te, ds_te = dataset_features(run.backbone, run.data, "test", device=dev, dataset=run.split("test"))
    y_tr, y_te = np.asarray(ds_tr.targets).astype(np.int64), np.asarray(ds_te.targets).astype(np.int64)
    classes = list(ds_te.classes)
    title = "Frozen backbone on the held-out split"
    if ds_te.label_kind == "single":
        rows, pred = score_single_label(x_tr, y_tr, x_te, y_te, k, temperature, len(classes), dev)
        return single_label_section(title, x_te, y_te, pred, classes, out_dir, results_table=rows), rows
    if ds_te.label_kind in MULTI_KINDS:
        rows, scores = score_multilabel(x_tr, y_tr, x_te, y_te, dev)
        return multilabel_section(title, scores, y_te, classes, out_dir, results_table=rows, features=x_te), rows
    return None, []


def report_run(run_dir: str | Path, device: str = "auto", embed: bool = False, k: int = 20,
               temperature: float = 0.07, cams: list[int] | None = None, data_path: str | None = None,
               data_overrides: list[str] = (), announce: bool = True) -> dict:
    """Write the report of a run directory; returns {'report': path, 'results': rows}.
    ``cams``: test-image indices whose class activation maps a classifier run draws;
    ``data_path`` / ``data_overrides``: other data than the checkpoint's data section
    (:func:`tagless.engine.loaded_run.load_run`); ``announce``: print which data the splits
    are read from (off for a run the caller has just trained)."""
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise TaglessError(f"run directory not found: {run_dir}")
    sections = [training_section(run_dir)]
    rows: list[dict] = []
    if (run_dir / LAST).is_file():
        best = (run_dir / BEST).is_file()  # the model the run keeps: chosen on the validation split
        run = load_run(run_dir, resolve_device(device), data_path, list(data_overrides),
                       which="best" if best else "last", announce=announce)
        out_dir = report_dir(run_dir)
        if best:
            sections.append({"title": "Checkpoint", "text": f"Evaluated: checkpoints/best.pt, epoch "
                             f"{run.checkpoint.get('epoch')}, chosen by the validation split "
                             f"(train.select_metric); last.pt holds the last epoch."})
        # a self-labelling run leads with what it learnt (label NMI, the cluster grid)
        clusters = cluster_sections(run, out_dir)
        sections = [s for s in clusters if not s.get("folded")] + sections
        section, rows = feature_section(run, out_dir, k, temperature)
        sections += [section] if section is not None else []
        sections += classifier_sections(run, out_dir, cams=cams)
        sections += [s for s in clusters if s.get("folded")] + neighbour_sections(run, out_dir)
    sections += solver_section(run_dir)  # SeLa's per-head Sinkhorn curves, folded, last
    path = write_report(run_dir, sections, embed=embed)
    write_text_atomic(run_dir / "results.json", json.dumps({"evaluations": rows}, indent=2, default=float))
    return {"report": str(path), "results": rows}
