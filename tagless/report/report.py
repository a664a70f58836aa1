"""``tagless report RUN_DIR``: turn a run directory and already-computed evaluation arrays
into ``RUN_DIR/report.html`` with its PNGs in ``RUN_DIR/report/``.

Nothing here evaluates a model: the caller passes features, predictions and scores, and
gets back section dicts (see :mod:`tagless.report.html`) to hand to :func:`write_report`.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from tagless.errors import TaglessError
from tagless.files import write_text_atomic
from tagless.report import plots
from tagless.report.html import render_html

REPORT_DIRNAME = "report"  # the PNGs' folder inside the run directory
METRICS_FILE = "metrics.jsonl"
# SeLa's per-head solver logs: drawn in their own folded section, not as one training curve each
PER_HEAD_SOLVER = re.compile(r"^sinkhorn_(iters|error|converged)_(\d+)$")
SOLVER_PANELS = {"iters": "Sinkhorn iterations", "error": "marginal error (L1)", "converged": "converged (1 = yes)"}


def report_dir(run_dir) -> Path:
    """``run_dir/report``, created if needed."""
    out = Path(run_dir).absolute() / REPORT_DIRNAME  # absolute: images are found whatever the cwd
    out.mkdir(parents=True, exist_ok=True)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "section"


# ---- metrics.jsonl ---------------------------------------------------------------------
def load_metrics(run_dir) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl``, in file order.

    A line that is not a JSON object (a run killed mid-write leaves a truncated last line,
    and ``--resume`` then appends after it) is skipped with a warning; a missing file is a
    :class:`TaglessError`.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise TaglessError(f"{path} does not exist: is {run_dir} a tagless run directory?")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            what = "truncated last line" if i == last else "line that is not a JSON object"
            warnings.warn(f"{path}:{i + 1}: skipping a {what}", stacklevel=2)
            continue
        rows.append(row)
    return rows


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _solver_key(key: str) -> bool:
    return PER_HEAD_SOLVER.match(key) is not None


def training_summary(rows: list[dict]) -> dict:
    """One table row: last step / epoch, final and lowest train loss, and for every eval
    metric its final value, its best (max) and the epoch of the best (SeLa's per-head solver
    logs are left to :func:`solver_section`)."""
    train = [r for r in rows if r.get("split", "train") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    out: dict = {}
    steps = [r["step"] for r in rows if _is_num(r.get("step"))]
    epochs = [r["epoch"] for r in rows if _is_num(r.get("epoch"))]
    if steps:
        out["steps"] = int(max(steps))
    if epochs:
        out["epochs"] = float(max(epochs))
    losses = [r["loss"] for r in train if _is_num(r.get("loss"))]
    if losses:
        out["final loss"] = float(losses[-1])
        out["min loss"] = float(min(losses))
    keys = dict.fromkeys(k for r in evals for k, v in r.items()
                         if k not in ("step", "epoch") and _is_num(v) and not _solver_key(k))
    for k in keys:
        pts = [(r.get("epoch"), r[k]) for r in evals if _is_num(r.get(k))]
        best = max(range(len(pts)), key=lambda j: pts[j][1])  # first epoch reaching the max
        out[f"final {k}"] = float(pts[-1][1])
        out[f"best {k}"] = float(pts[best][1])
        out[f"best {k} epoch"] = pts[best][0]
    return out


def _run_description(run_dir: Path) -> str:
    """One line from config.yaml / run_info.json when they are readable; '' otherwise."""
    bits = []
    try:
        import yaml

        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except Exception:  # noqa: BLE001 - a report of a half-written run still renders
        cfg = {}
    if isinstance(cfg, dict):
        sec = lambda name: cfg.get(name) if isinstance(cfg.get(name), dict) else {}
        if sec("method").get("name"):
            bits.append(f"method {sec('method')['name']}")
        if sec("model").get("backbone"):
            bits.append(f"backbone {sec('model')['backbone']}")
        if sec("data").get("source"):
            bits.append(f"data {sec('data')['source']}")
        if sec("train").get("epochs") is not None:
            bits.append(f"{sec('train')['epochs']} epochs")
        if sec("train").get("batch_size") is not None:
            bits.append(f"batch size {sec('train')['batch_size']}")
        if cfg.get("seed") is not None:
            bits.append(f"seed {cfg['seed']}")
    try:
        info = json.loads((run_dir / "run_info.json").read_text())
    except (OSError, ValueError):  # missing / unreadable file, or not JSON (JSONDecodeError is a ValueError)
        info = {}
    if isinstance(info, dict) and info.get("device"):
        bits.append(f"device {info['device']}")
    if isinstance(info, dict) and info.get("torch"):
        bits.append(f"torch {info['torch']}")
    return ", ".join(bits)


# ---- sections --------------------------------------------------------------------------
def training_section(run_dir) -> dict:
    """The "Training" section: curves of every logged metric and a one-row summary table."""
    run_dir = Path(run_dir).absolute()
    rows = load_metrics(run_dir)
    desc = _run_description(run_dir)
    text = f"Run {run_dir.name}" + (f": {desc}." if desc else ".")
    if not rows:
        return {"title": "Training", "text": text + f"\n\n{METRICS_FILE} holds no rows yet.", "images": []}
    png = plots.plot_training_curves(rows, report_dir(run_dir) / "training_curves.png", skip=_solver_key)
    return {"title": "Training", "text": text, "table": [training_summary(rows)], "images": [str(png)]}


def solver_section(run_dir) -> list[dict]:
    """SeLa's Sinkhorn solves per head and label update (iterations, marginal error, converged),
    one panel per quantity with a line per head and a row per head, folded; [] for runs
    without them."""
    run_dir = Path(run_dir).absolute()
    rows = [r for r in load_metrics(run_dir) if r.get("split") == "eval"]
    groups: dict[str, dict[int, str]] = {name: {} for name in SOLVER_PANELS}
    for key in dict.fromkeys(k for r in rows for k in r):
        m = PER_HEAD_SOLVER.match(key)
        if m:
            groups[m.group(1)][int(m.group(2))] = key
    if not any(groups.values()):
        return []
    png = plots.plot_per_head_curves(rows, {SOLVER_PANELS[g]: keys for g, keys in groups.items()},
                                     report_dir(run_dir) / "sinkhorn_per_head.png", log_scale=[SOLVER_PANELS["error"]])
    table, solves, converged = [], 0, 0
    for h in sorted(set().union(*groups.values())):
        done = [r for r in rows if _is_num(r.get(f"sinkhorn_iters_{h}"))]
        ok = [r for r in done if r.get(f"sinkhorn_converged_{h}") == 1]
        solves, converged = solves + len(done), converged + len(ok)
        last = done[-1] if done else {}
        table.append({"head": h, "solves": len(done), "converged": len(ok) if groups["converged"] else None,
                      "iterations (max)": max((int(r[f"sinkhorn_iters_{h}"]) for r in done), default=None),
                      "iterations (last)": last.get(f"sinkhorn_iters_{h}"),
                      "error (last)": last.get(f"sinkhorn_error_{h}")})
    text = f"Sinkhorn-Knopp per head at each label update: {solves} solves"
    text += f", {converged} converged within the tolerance." if groups["converged"] else "."
    return [{"title": "Sinkhorn per head", "text": text, "table": table, "images": [str(png)], "folded": True}]


def single_label_section(name, features, y_true, y_pred, class_names, out_dir, results_table=None,
                         max_points: int = 2000, seed: int = 0) -> dict:
    """A single-label evaluation section: t-SNE of ``features`` coloured by ``y_true`` (skipped
    when features is None) and the confusion matrix of ``y_pred`` (skipped when None).

    Args:
        name: the section title (also names the PNGs).
        features: N x D test features, or None.
        y_true: int N labels (-1 = unlabelled, ignored by the confusion matrix).
        y_pred: int N predictions (e.g. kNN or linear probe), or None.
        class_names: C names.
        out_dir: where the PNGs go (``run_dir/report``).
        results_table: rows (dicts) shown as the section's table, e.g. kNN / linear results.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = _slug(name)
    yt = plots._np(y_true, "y_true").ravel()
    images, text = [], [f"{len(yt)} test images, {len(class_names)} classes."]
    if features is not None:
        images.append(str(plots.plot_tsne(features, yt, class_names, out_dir / f"{slug}_tsne.png",
                                          max_points=max_points, seed=seed)))
    if y_pred is not None:
        yp = plots._np(y_pred, "y_pred").ravel()
        keep = yt >= 0
        if keep.any() and len(yp) == len(yt):
            text.append(f"Top-1 accuracy of these predictions: {100 * float(np.mean(yp[keep] == yt[keep])):.2f}%.")
        images.append(str(plots.plot_confusion_matrix(yt, yp, class_names, out_dir / f"{slug}_confusion.png")))
    return {"title": str(name), "text": " ".join(text), "table": list(results_table or []), "images": images}


def multilabel_section(name, scores, targets, class_names, out_dir, results_table=None,
                       features=None, max_points: int = 2000, seed: int = 0) -> dict:
    """A multi-label evaluation section: per-class AP bars with the mAP line, score histograms
    of positives vs negatives, and (when ``features`` is given) a t-SNE coloured by the first
    positive class.

    Args:
        scores: N x C scores or logits; targets: N x C with 1 / 0 / -1 (ignored).
        results_table: rows (dicts) shown as the section's table (mAP, CF1, OF1, ...).
    """
    from tagless.eval.multilabel import average_precision

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = _slug(name)
    s = plots._np(scores, "scores")
    t = plots._np(targets, "targets")
    ap = average_precision(s, t).cpu().numpy()
    valid = np.isfinite(ap)
    text = f"{s.shape[0]} test images, {s.shape[1]} classes."
    if valid.any():
        text += f" mAP@class {100 * float(ap[valid].mean()):.2f} over the {int(valid.sum())} classes with a positive."
    images = []
    if valid.any():
        images.append(str(plots.plot_per_class_ap(ap, class_names, out_dir / f"{slug}_per_class_ap.png")))
    images.append(str(plots.plot_score_histograms(s, t, out_dir / f"{slug}_scores.png", class_names=class_names)))
    if features is not None:
        images.append(str(plots.plot_tsne(features, t, class_names, out_dir / f"{slug}_tsne.png",
                                          max_points=max_points, seed=seed)))
    return {"title": str(name), "text": text, "table": list(results_table or []), "images": images}


# ---- the page --------------------------------------------------------------------------
def _relative_images(run_dir: Path, sections: list[dict]) -> list[dict]:
    """Image paths relative to run_dir (where report.html lives); each must exist."""
    out = []
    for s in sections:
        if not isinstance(s, dict):
            raise TaglessError("a report section must be a dict")
        images = s.get("images") or []
        if isinstance(images, (str, Path)):
            images = [images]
        rel = []
        for img in images:
            full = Path(img) if Path(img).is_absolute() else run_dir / img
            if not full.is_file():
                raise TaglessError(f"report image not found: {full}")
            rel.append(Path(os.path.relpath(full.resolve(), run_dir.resolve())).as_posix())
        out.append({**s, "images": rel})
    return out


def write_report(run_dir, sections=None, title: str | None = None, embed: bool = False) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    Args:
        run_dir: the run directory (must exist).
        sections: section dicts (``training_section``, ``single_label_section``, ...);
            None = the training section only. Image paths may be absolute or relative to
            run_dir; they are written relative to the HTML file.
        title: page title; default "tagless report: <run name>".
        embed: inline the PNGs as base64 data URIs, so the HTML file stands alone.
    """
    run_dir = Path(run_dir).absolute()
    if not run_dir.is_dir():
        raise TaglessError(f"run directory not found: {run_dir}")
    if sections is None:
        sections = [training_section(run_dir)]
    sections = _relative_images(run_dir, list(sections))
    page = render_html(title or f"tagless report: {run_dir.resolve().name}", sections, embed=embed, base_dir=run_dir)
    return write_text_atomic(run_dir / "report.html", page)  # a reader never sees half a page
