"""The plots of ``tagless compare``: a bar chart per metric and the evaluation curves per variant.

Each function writes one PNG and returns its path, or None when there is nothing to draw
(every run failed, no run logged an evaluation row): a comparison never fails on its plots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tagless.engine.classifier_eval import SCORES_FILE
from tagless.eval.multilabel_analysis import confident_counts, score_histograms
from tagless.report.multilabel_plots import plot_confident_counts, plot_run_score_histograms
from tagless.report.plots import _save, plt  # pyplot on the Agg backend

MAX_PANELS = 12


def _value(x) -> float:
    return math.nan if x is None else float(x)


def plot_bars(table: list[dict], metric: str, reference: str | None, path) -> Path | None:
    """Bars of the mean of ``metric`` per variant (a row of compare's table), error bars one std."""
    names = [r["variant"] for r in table]
    means = np.array([_value(r.get(metric)) for r in table])
    stds = np.array([_value(r.get(f"{metric} std")) for r in table])
    if not np.isfinite(means).any():
        return None
    colours = ["tab:orange" if n == reference else "tab:blue" for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3.6))
    x = np.arange(len(names))
    ax.bar(x, np.nan_to_num(means), yerr=np.where(np.isfinite(stds), stds, 0.0), color=colours, capsize=4)
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± std over seeds" + (f" (orange: {reference})" if reference else ""), fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def eval_rows(run_dir) -> dict[str, dict[float, float]]:
    """``{key: {epoch: value}}`` of a run's metrics.jsonl rows with split 'eval' (the last row of
    an epoch wins, as after a resume); unreadable lines and a missing file are skipped."""
    out: dict[str, dict[float, float]] = {}
    try:
        lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or row.get("split") != "eval" or not isinstance(row.get("epoch"), (int, float)):
            continue
        for k, v in row.items():
            if k not in ("step", "epoch", "split") and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, {})[float(row["epoch"])] = float(v)
    return out


def plot_curves(run_dirs: dict[str, list], path, keys: list[str] | None = None) -> Path | None:
    """One panel per evaluation key (``keys`` first when given and logged, else every key), one
    line per variant: the mean over its runs at each epoch, a band of one std."""
    per_variant = {v: [eval_rows(d) for d in dirs] for v, dirs in run_dirs.items()}
    logged = list(dict.fromkeys(k for runs in per_variant.values() for rows in runs for k in rows))
    chosen = [k for k in keys if k in logged] if keys else []
    panels = (chosen or logged)[:MAX_PANELS]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    n = len(per_variant)
    colours = plt.get_cmap("tab10")(np.arange(n)) if n <= 10 else plt.get_cmap("turbo")(np.linspace(0.05, 0.95, n))
    for ax, key in zip(axes.flat, panels):
        for colour, (variant, runs) in zip(colours, per_variant.items()):
            epochs = sorted({e for rows in runs for e in rows.get(key, {})})
            if not epochs:
                continue
            vals = [[rows[key][e] for rows in runs if e in rows.get(key, {})] for e in epochs]
            mean = np.array([np.mean(v) for v in vals])
            std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in vals])
            ax.plot(epochs, mean, color=colour, lw=1.4, marker="o" if len(epochs) <= 30 else None, ms=3,
                    label=variant)
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, lw=0)
        ax.set_title(key, fontsize=11)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_score_panels(run_dirs: dict[str, list[Path]], out: Path) -> list[Path]:
    """scores.png and confident.png from the first run of each variant that saved its test
    logits (``test_scores.npz``, classifier runs); [] when none did."""
    hists, counts = {}, {}
    for name, dirs in run_dirs.items():
        found = [d / SCORES_FILE for d in dirs if (d / SCORES_FILE).is_file()]
        if found:
            data = np.load(found[0])
            scores = data["scores"].astype(np.float32)
            hists[name] = score_histograms(scores, data["targets"])
            counts[name] = confident_counts(scores)
    if not hists:
        return []
    return [plot_run_score_histograms(hists, out / "scores.png"), plot_confident_counts(counts, out / "confident.png")]


def plot_validation(runs: list[dict], chosen: list[dict], path) -> Path | None:
    """One panel per swept variant: the selection metric on the validation split over epochs for
    every grid point (mean over seeds), the grid points chosen for some seed drawn bold."""
    swept = list(dict.fromkeys(r["variant"] for r in chosen if r.get("chosen_from", 1) > 1))
    if not swept:
        return None
    picked = {(r["variant"], r["point_index"]) for r in chosen if r.get("chosen_from", 1) > 1}
    ncols = min(3, len(swept))
    nrows = math.ceil(len(swept) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(swept):]:
        ax.set_visible(False)
    for ax, variant in zip(axes.flat, swept):
        mine = [r for r in runs if r["variant"] == variant and r["status"] != "failed"]
        metric = next(((r.get("selection") or {}).get("metric") for r in mine if r.get("selection")), None)
        for index in sorted({r["point_index"] for r in mine}):
            points = [r for r in mine if r["point_index"] == index]
            curves = [eval_rows(r["run_dir"]).get(metric, {}) for r in points] if metric else []
            epochs = sorted({e for c in curves for e in c})
            if not epochs:
                continue
            mean = [np.mean([c[e] for c in curves if e in c]) for e in epochs]
            bold = (variant, index) in picked
            ax.plot(epochs, mean, lw=2.4 if bold else 1.0, alpha=1.0 if bold else 0.6,
                    label=" ".join(points[0]["point"]) + (" (chosen)" if bold else ""))
        ax.set_title(f"{variant}: validation {metric or '(none)'}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, Path(path))
