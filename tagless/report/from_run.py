"""``tagless report RUN_DIR``: evaluate a run's last checkpoint the way the papers do and
write ``report.html`` (training curves, kNN / linear tables, t-SNE, confusion matrix; for
multi-label data per-class AP bars and score histograms) plus ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tagless.device import resolve_device
from tagless.errors import TaglessError
from tagless.eval.scoring import score_single_label
from tagless.report.report import multilabel_section, report_dir, single_label_section, training_section, write_report


def _single_label(x_tr, y_tr, x_te, y_te, classes, out_dir, device, k, temperature) -> tuple[dict, list[dict]]:
    rows, pred = score_single_label(x_tr, y_tr, x_te, y_te, k, temperature, len(classes), device)
    section = single_label_section("Frozen backbone on the held-out split", x_te, y_te, pred, classes,
                                   out_dir, results_table=rows)
    return section, rows


def multilabel_probe_rows(x_tr, y_tr, x_te, y_te, device="cpu") -> tuple[list[dict], np.ndarray]:
    """The one-vs-rest linear probe's mAP@class / mAP@sample row and its test scores."""
    from tagless.eval import linear_probe, map_class, map_sample

    probe = linear_probe(x_tr, y_tr, x_te, y_te, protocol="val", device=device)
    scores = probe.model.decision_function(torch.as_tensor(x_te, device=device)).cpu().numpy()
    return [{"evaluation": f"one-vs-rest linear probe (L2 {probe.l2:.1e})",
             "mAP@class (%)": 100 * map_class(scores, y_te), "mAP@sample (%)": 100 * map_sample(scores, y_te)}], scores


def _multi_label(x_tr, y_tr, x_te, y_te, classes, out_dir, device) -> tuple[dict, list[dict]]:
    rows, scores = multilabel_probe_rows(x_tr, y_tr, x_te, y_te, device)
    section = multilabel_section("Frozen backbone on the held-out split", scores, y_te, classes, out_dir,
                                 results_table=rows, features=x_te)
    return section, rows


def report_run(run_dir: str | Path, device: str = "auto", embed: bool = False, k: int = 20,
               temperature: float = 0.07, cams: list[int] | None = None) -> dict:
    """Write the report of a run directory; returns {'report': path, 'results': rows}.
    ``cams``: test-image indices whose class activation maps a classifier run draws."""
    from tagless.eval.features import data_config_for, dataset_features, load_backbone

    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise TaglessError(f"run directory not found: {run_dir}")
    sections = [training_section(run_dir)]
    rows: list[dict] = []
    ckpt = run_dir / "checkpoints" / "last.pt"
    if ckpt.is_file():
        dev = resolve_device(device)
        loaded = load_backbone(ckpt, dev)
        data = data_config_for(loaded, None, [])
        x_tr, ds_tr = dataset_features(loaded, data, "train", device=dev)
        x_te, ds_te = dataset_features(loaded, data, "test", device=dev)
        y_tr, y_te = np.asarray(ds_tr.targets).astype(np.int64), np.asarray(ds_te.targets).astype(np.int64)
        out_dir = report_dir(run_dir)
        if ds_te.label_kind == "single":
            section, rows = _single_label(x_tr, y_tr, x_te, y_te, list(ds_te.classes), out_dir, dev, k, temperature)
            sections.append(section)
        elif ds_te.label_kind in ("multi", "partial", "single_positive"):
            section, rows = _multi_label(x_tr, y_tr, x_te, y_te, list(ds_te.classes), out_dir, dev)
            sections.append(section)
    if ckpt.is_file():
        from tagless.labels import cluster_sections

        from tagless.report.neighbours import neighbour_sections

        from tagless.report.classifier import classifier_sections

        sections += classifier_sections(run_dir, report_dir(run_dir), cams=cams)
        sections += cluster_sections(run_dir, report_dir(run_dir)) + neighbour_sections(run_dir, report_dir(run_dir))
    path = write_report(run_dir, sections, embed=embed)
    (run_dir / "results.json").write_text(json.dumps({"evaluations": rows}, indent=2, default=float))
    return {"report": str(path), "results": rows}
