"""The plots of the multi-label analyses (:mod:`tagless.eval.multilabel_analysis`) of papers
001 and 003: score histograms of several runs side by side, confident classes per image, and
class activation maps over images.

[0] Paper 003 (Verelst et al., WACV 2023), supp. F, Fig. F.1 and supp. K, Figs. K.1-K.2.
"""
from __future__ import annotations

import numpy as np
import torch

from tagless.errors import TaglessError
from tagless.eval.multilabel_analysis import stable_sigmoid
from tagless.report.plots import _grid, _np, _save, plt  # pyplot on the Agg backend


def _check_hist(name: str, h) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        edges, pos, neg = (np.asarray(h[k], dtype=np.float64) for k in ("edges", "positives", "negatives"))
    except (KeyError, TypeError, ValueError):
        raise TaglessError(f"{name!r}: expected a dict of edges / positives / negatives (score_histograms)") from None
    if edges.ndim != 1 or len(edges) < 2 or pos.shape != (len(edges) - 1,) or neg.shape != pos.shape:
        raise TaglessError(f"{name!r}: {len(edges)} edges need {len(edges) - 1} counts per side, "
                           f"got {pos.shape} and {neg.shape}")
    return edges, pos, neg


def plot_run_score_histograms(hists_by_name: dict[str, dict], path):
    """One panel per run / variant: the score histograms of its positive and negative labels,
    each normalised to sum to 1 (log y axis, so the rarer positives stay visible) [0]."""
    if not hists_by_name:
        raise TaglessError("plot_run_score_histograms needs at least one histogram")
    checked = {name: _check_hist(name, h) for name, h in hists_by_name.items()}
    fig, axes = _grid(len(checked), ncols=3, width=4.3, height=3.1)
    for ax, (name, (edges, pos, neg)) in zip(axes, checked.items()):
        for counts, colour, label in ((neg, "tab:blue", "negatives"), (pos, "tab:orange", "positives")):
            if counts.sum() > 0:
                ax.stairs(counts / counts.sum(), edges, fill=True, alpha=0.55, color=colour,
                          label=f"{label} (n={int(counts.sum())})")
        ax.set_yscale("log")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("sigmoid(score)")
        ax.set_ylabel("fraction of labels")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Score distributions of positive and negative labels", fontsize=13)
    fig.tight_layout()
    return _save(fig, path)


def plot_confident_counts(counts_by_name: dict[str, np.ndarray], path):
    """Grouped bars: the share of images with 0, 1, 2, ... confident classes, one bar per run [0]."""
    if not counts_by_name:
        raise TaglessError("plot_confident_counts needs at least one run")
    counts = {}
    for name, c in counts_by_name.items():
        c = _np(c, name)
        if c.ndim != 1 or c.size == 0 or not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
            raise TaglessError(f"{name!r}: expected a non-empty 1-D array of counts >= 0 (confident_counts)")
        counts[name] = c
    top = max(int(c.max()) for c in counts.values())
    shares = np.stack([np.bincount(c, minlength=top + 1) / len(c) for c in counts.values()])
    names = [f"{name} (mean {c.mean():.2f})" for name, c in counts.items()]
    if len(counts) > 4:  # many runs: one row per run, the share of images per count as a colour
        fig, ax = plt.subplots(figsize=(min(14.0, 2.5 + 0.7 * (top + 1)), 1.0 + 0.32 * len(counts)))
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(shares):
            if v >= 0.005:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 else "black")
        ax.set_yticks(np.arange(len(names)), names, fontsize=8)
        ax.set_title("Confident classes per image (% of images)", fontsize=12)
    else:
        width = 0.8 / len(counts)
        fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + 0.6 * (top + 1) * len(counts)), 3.4))
        for j, (name, share) in enumerate(zip(names, shares)):
            ax.bar(np.arange(top + 1) + (j - (len(counts) - 1) / 2) * width, share, width=width, label=name,
                   color=plt.get_cmap("tab10")(j % 10))
        ax.set_ylabel("share of images")
        ax.set_title("Confident classes per image", fontsize=12)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax.set_xticks(np.arange(top + 1))
    ax.set_xlabel("confident classes per image (sigmoid > threshold)")
    return _save(fig, path)


def _upsample(cams: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of N x h x w maps to N x H x W (half-pixel centres, as torch's
    align_corners=False)."""
    x = torch.as_tensor(cams, dtype=torch.float32)[:, None]
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()


def plot_cam_grid(images, cams, titles, path, ncols: int = 4, alpha: float = 0.5):
    """Each image with its class heatmap overlaid (jet colour map, upsampled bilinearly) [0].

    images: uint8 N x H x W x 3 (or x 1); cams: N x h x w, in [0, 1] or logits (a sigmoid
    is applied when any value lies outside [0, 1]); titles: N strings or None."""
    x = _np(images, "images")
    m = _np(cams, "cams")
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise TaglessError(f"images must be uint8 N x H x W x 3 (or 1), got {x.dtype} {x.shape}")
    if m.ndim != 3 or len(m) != len(x):
        raise TaglessError(f"cams must be N x h x w with N = {len(x)} images, got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.number) or not np.isfinite(m).all():
        raise TaglessError("cams must be finite numbers")
    if titles is not None and len(titles) != len(x):
        raise TaglessError(f"{len(titles)} titles for {len(x)} images")
    m = m.astype(np.float64)
    if m.size and (m.min() < 0 or m.max() > 1):
        m = stable_sigmoid(m)
    heat = _upsample(m, x.shape[1], x.shape[2])
    fig, axes = _grid(len(x), ncols, width=2.6, height=2.8 if titles is not None else 2.6)
    for i, ax in enumerate(axes):
        img = x[i]
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.imshow(heat[i], cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha, interpolation="nearest")
        if titles is not None and titles[i] is not None:
            ax.set_title(str(titles[i]), fontsize=8, pad=2)
        ax.axis("off")
    return _save(fig, path)
