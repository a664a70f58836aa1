"""The report's plots: one function per figure, each writes one PNG and returns its path.

Inputs are plain arrays (numpy or CPU/GPU tensors); nothing here trains or evaluates.
Matplotlib runs on the Agg backend (no display needed), text is drawn literally (no math
parsing of ``$``), and every figure is closed after saving, so a long ``tagless report`` does
not accumulate figures.

[0] van der Maaten & Hinton, t-SNE, JMLR 2008; scikit-learn ``sklearn.manifold.TSNE``.
[1] Paper 003 (Verelst et al., WACV 2023): distributions of the predicted scores of positive
    and negative labels, to see how a single-positive loss shifts the unknown labels.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display

import matplotlib.pyplot as plt
import numpy as np

from tagless.errors import TaglessError

# Text is literal in every figure: a class name, a file name or a run name with "$...$" would
# otherwise be parsed as math (and a bad formula stops the whole figure). Every plot module
# takes pyplot from here, so this one setting covers the report, tagless data and compare.
matplotlib.rcParams["text.parse_math"] = False
matplotlib.rcParams["text.usetex"] = False

DPI = 110
GREY = (0.6, 0.6, 0.6, 1.0)
_AXIS_KEYS = ("step", "epoch")  # x axes, never plotted as a metric


# ---- helpers ---------------------------------------------------------------------------
def _np(x, name: str) -> np.ndarray:
    """A numpy copy of an array-like or a tensor on any device."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TaglessError(f"{name} cannot be converted to an array: {err}") from None


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return path


def _class_colours(n: int) -> np.ndarray:
    """n distinguishable RGBA colours: tab10 / tab20 when they suffice, else a sampled cycle."""
    if n <= 10:
        return plt.get_cmap("tab10")(np.arange(n))
    if n <= 20:
        return plt.get_cmap("tab20")(np.arange(n))
    return plt.get_cmap("turbo")(np.linspace(0.05, 0.95, n))


def _names(class_names, n: int) -> list[str]:
    names = [str(c) for c in class_names] if class_names is not None else []
    if len(names) < n:
        names += [str(i) for i in range(len(names), n)]
    return names


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _grid(n: int, ncols: int, width: float = 4.2, height: float = 3.0):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


# ---- training curves -------------------------------------------------------------------
def _series(rows: list[dict], x_key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every numeric key of ``rows`` (other than step / epoch) as (x, y) arrays, keys in first-seen order."""
    keys = list(dict.fromkeys(k for r in rows for k, v in r.items() if k not in _AXIS_KEYS and _is_number(v)))
    out = {}
    for k in keys:
        pts = [(r[x_key], r[k]) for r in rows if _is_number(r.get(k)) and _is_number(r.get(x_key))]
        if pts:
            xs, ys = zip(*pts)
            out[k] = (np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    return out


def plot_training_curves(metrics_rows: Sequence[dict], path, skip=None) -> Path:
    """Small multiples of a run's ``metrics.jsonl`` rows.

    Train rows (``split == 'train'``, or no split): ``loss`` first, then every other numeric
    key (lr, contrastive_acc, z_std, grad_norm, ...) against ``step``. Eval rows
    (``split == 'eval'``): every numeric key (knn_top1, ...) against ``epoch``. Keys for which
    ``skip(key)`` is true are left out (drawn elsewhere: SeLa's per-head solver curves).
    """
    rows = [r for r in metrics_rows if isinstance(r, dict)]
    train = [r for r in rows if r.get("split", "train") == "train"]
    evals = [r for r in rows if r.get("split") == "eval"]
    keep = (lambda series: {k: v for k, v in series.items() if not skip(k)}) if skip else (lambda series: series)
    train_series = keep(_series(train, "step"))
    if "loss" in train_series:  # the headline curve goes first
        train_series = {"loss": train_series.pop("loss"), **train_series}
    eval_series = keep(_series(evals, "epoch"))
    panels = [("train", k, "step", xy) for k, xy in train_series.items()]
    panels += [("eval", k, "epoch", xy) for k, xy in eval_series.items()]
    if not panels:
        raise TaglessError("no numeric metrics to plot (metrics.jsonl has no train or eval rows)")

    fig, axes = _grid(len(panels), ncols=3)
    for ax, (split, key, x_key, (x, y)) in zip(axes, panels):
        colour = "tab:blue" if split == "train" else "tab:orange"
        ax.plot(x, y, color=colour, lw=1.4, marker="o" if len(x) <= 30 else None, ms=3.5)
        ax.set_title(f"{split}: {key}", fontsize=11)
        ax.set_xlabel(x_key)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        finite = y[np.isfinite(y)]
        if split == "eval" and finite.size:
            ax.margins(y=0.15)  # room for the "best" label
            best = int(np.nanargmax(np.where(np.isfinite(y), y, -np.inf)))
            ax.annotate(f"best {y[best]:.2f}", (x[best], y[best]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=8)
    fig.suptitle("Training curves", fontsize=13)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_head_curves(metrics_rows: Sequence[dict], groups: dict[str, dict[int, str]], path,
                         log_scale: Sequence[str] = ()) -> Path:
    """One panel per group of eval keys (``{"iterations": {0: "sinkhorn_iters_0", ...}}``), one
    line per head against ``epoch``: many heads in a few panels instead of one panel each."""
    evals = [r for r in metrics_rows if isinstance(r, dict) and r.get("split") == "eval"]
    series = _series(evals, "epoch")
    panels = [(name, {h: series[k] for h, k in keys.items() if k in series}) for name, keys in groups.items()]
    panels = [(name, lines) for name, lines in panels if lines]
    if not panels:
        raise TaglessError("no per-head curves to plot")
    fig, axes = _grid(len(panels), ncols=3, width=4.6)
    for ax, (name, lines) in zip(axes, panels):
        colours = _class_colours(len(lines))
        for colour, (h, (x, y)) in zip(colours, sorted(lines.items())):
            ax.plot(x, y, color=colour, lw=1.2, marker="o" if len(x) <= 30 else None, ms=3, label=f"head {h}")
        if name in log_scale and all((y[np.isfinite(y)] > 0).all() for _, y in lines.values()):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2 if len(panels[0][1]) > 5 else 1)
    fig.tight_layout()
    return _save(fig, path)


# ---- t-SNE -----------------------------------------------------------------------------
def _first_positive(labels: np.ndarray) -> np.ndarray:
    """Multi-label N x C (1 / 0 / -1) -> the index of the first positive class, -1 if none."""
    pos = labels == 1
    return np.where(pos.any(axis=1), pos.argmax(axis=1), -1)


def tsne_embedding(features, max_points: int = 2000, seed: int = 0,
                   threads: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D t-SNE [0] of at most ``max_points`` rows of ``features`` (N x D).

    Returns ``(embedding M x 2, index M)`` where ``index`` are the (sorted) rows used, drawn
    at random with ``seed`` when N > max_points. Features with more than 50 dimensions are
    first reduced to 50 by PCA (the usual t-SNE preprocessing; it only speeds up the
    distances), then t-SNE runs with init='pca' and perplexity min(30, M / 4), on
    ``threads`` OpenMP threads (None = scikit-learn's default, all cores).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = _np(features, "features").astype(np.float32, copy=False)
    if x.ndim != 2:
        raise TaglessError(f"features must be N x D, got shape {x.shape}")
    if len(x) < 5:
        raise TaglessError(f"t-SNE needs at least 5 points, got {len(x)}")
    if not np.isfinite(x).all():
        raise TaglessError("features contain NaN or inf")
    index = np.arange(len(x))
    if len(x) > max_points:
        index = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x = x[index]
    if x.shape[1] > 50 and len(x) > 50:  # PCA cannot give more components than points
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    tsne = TSNE(n_components=2, init="pca", perplexity=min(30.0, len(x) / 4), learning_rate="auto",
                random_state=seed)
    # Barnes-Hut t-SNE opens an OpenMP region in each of its ~1000 gradient steps; on a
    # busy machine the threads' barrier waits dominate (measured on 2 loaded cores: 2000
    # points 37 s with 2 threads, 9 s with 1; 200 points 29 s vs 0.9 s). One thread is the
    # safe default; pass threads=None for every core on an idle machine.
    limit = threadpool_limits(limits=threads, user_api="openmp") if threads else contextlib.nullcontext()
    with limit, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        emb = tsne.fit_transform(x)
    return emb.astype(np.float32), index


def plot_tsne(features, labels, class_names, path, max_points: int = 2000, seed: int = 0) -> Path:
    """Scatter of the 2-D t-SNE of ``features``, coloured by class.

    ``labels``: int N (single-label; -1 = unlabelled, drawn grey), N x C with 1 / 0 / -1
    (multi-label; coloured by the first positive class, grey if none), or None (one colour).
    """
    x = _np(features, "features")
    y = None if labels is None else _np(labels, "labels")
    if y is not None and len(y) != len(x):
        raise TaglessError(f"labels have {len(y)} rows but features have {len(x)}")
    emb, index = tsne_embedding(x, max_points=max_points, seed=seed)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    title = f"t-SNE of {len(index)} test features"
    if y is None:
        ax.scatter(emb[:, 0], emb[:, 1], s=8, color="tab:blue", alpha=0.8, linewidths=0)
    else:
        if y.ndim == 2:
            y = _first_positive(y)
            title += " (coloured by first positive class)"
        y = y[index].astype(np.int64)
        num = max(int(y.max()) + 1 if y.size else 0, len(class_names) if class_names is not None else 0)
        names, colours = _names(class_names, num), _class_colours(num)
        if (y < 0).any():
            m = y < 0
            # hollow markers: tab20 has greys of its own, so colour alone would be ambiguous
            ax.scatter(emb[m, 0], emb[m, 1], s=10, facecolors="none", edgecolors=GREY, linewidths=0.6,
                       label="no label")
        for c in np.unique(y[y >= 0]):
            m = y == c
            ax.scatter(emb[m, 0], emb[m, 1], s=8, color=colours[c], alpha=0.85, linewidths=0, label=names[c])
        if num <= 30:
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2.2,
                      frameon=False, ncols=1 if num <= 15 else 2)
    ax.set_title(title, fontsize=12)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


# ---- confusion matrix ------------------------------------------------------------------
def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Row-normalised confusion matrix (C x C float64): entry [i, j] is the fraction of the
    samples of true class i predicted as j. Samples with y_true < 0 are ignored; a class
    without samples has a row of zeros."""
    t = _np(y_true, "y_true").astype(np.int64).ravel()
    p = _np(y_pred, "y_pred").astype(np.int64).ravel()
    if t.shape != p.shape:
        raise TaglessError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    keep = t >= 0
    t, p = t[keep], p[keep]
    if (p < 0).any():
        raise TaglessError("y_pred holds negative class indices")
    n = num_classes if num_classes is not None else int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if t.size and max(t.max(), p.max()) >= n:
        raise TaglessError(f"a label is >= the number of classes ({n})")
    counts = np.bincount(t * n + p, minlength=n * n).reshape(n, n).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def plot_confusion_matrix(y_true, y_pred, class_names, path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: prediction); each cell is
    annotated with its value when there are at most 20 classes."""
    n = len(class_names) if class_names is not None else None
    cm = confusion_matrix(y_true, y_pred, n)
    n = len(cm)
    names = _names(class_names, n)
    side = min(max(4.5, 0.45 * n + 2.5), 16)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=45 if n > 6 else 0, ha="right" if n > 6 else "center",
                      fontsize=9 if n <= 20 else 7)
        ax.set_yticks(range(n), names, fontsize=9 if n <= 20 else 7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                v = cm[i, j]
                ax.text(j, i, f"{v:.2f}" if v else "0", ha="center", va="center",
                        fontsize=8 if n > 10 else 9, color="white" if v > 0.5 else "black")
    t = _np(y_true, "y_true").ravel()
    acc = float(np.mean(t[t >= 0] == _np(y_pred, "y_pred").ravel()[t >= 0])) if (t >= 0).any() else float("nan")
    ax.set_title(f"Confusion matrix (row-normalised), accuracy {100 * acc:.1f}%", fontsize=12)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return _save(fig, path)


# ---- per-class AP ----------------------------------------------------------------------
def plot_per_class_ap(ap_per_class, class_names, path) -> Path:
    """Horizontal bars of the per-class AP, best first, with the mAP as a dashed line.
    Classes whose AP is NaN (no positive in the test set) are left out and counted in the title."""
    ap = _np(ap_per_class, "ap_per_class").astype(np.float64).ravel()
    names = _names(class_names, len(ap))
    keep = np.isfinite(ap)
    if not keep.any():
        raise TaglessError("every per-class AP is NaN: no class has a positive")
    order = [i for i in np.argsort(-ap, kind="stable") if keep[i]]
    vals = ap[order]
    mean = float(vals.mean())
    n = len(order)
    fig, ax = plt.subplots(figsize=(7.5, min(max(2.5, 0.24 * n + 1.3), 30)))
    ax.barh(range(n), vals, color=plt.get_cmap("viridis")(0.25 + 0.6 * vals / max(1.0, vals.max())), height=0.75)
    ax.set_yticks(range(n), [names[i] for i in order], fontsize=9 if n <= 40 else 7)
    ax.invert_yaxis()
    ax.axvline(mean, color="tab:red", ls="--", lw=1.5, label=f"mAP = {mean:.3f}")
    ax.set_xlim(0, max(1.0, float(vals.max())) * 1.02)
    ax.set_xlabel("average precision")
    ax.set_ylabel("class")
    dropped = int((~keep).sum())
    extra = f" ({dropped} classes without positives left out)" if dropped else ""
    ax.set_title(f"Per-class AP, {n} classes{extra}", fontsize=12)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# ---- score distributions ---------------------------------------------------------------
def _hist(ax, scores, targets, bins, title):
    pos, neg = scores[targets == 1], scores[targets == 0]
    for vals, colour, label in ((neg, "tab:blue", "negatives"), (pos, "tab:orange", "positives")):
        if vals.size:
            ax.hist(vals, bins=bins, weights=np.full(vals.size, 1.0 / vals.size), color=colour, alpha=0.55,
                    label=f"{label} (n={vals.size})", histtype="stepfilled", edgecolor=colour)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_score_histograms(scores, targets, path, class_names=None, sigmoid: bool | None = None,
                          max_classes: int = 8) -> Path:
    """Histograms of the scores of positive vs negative labels [1] (targets 1 / 0; -1 ignored).

    ``sigmoid``: apply a sigmoid first (for logits); None = apply it when any score lies
    outside [0, 1]. The first panel pools every class; with ``class_names`` given, up to
    ``max_classes`` more panels show the classes with the most positives. Each histogram is
    normalised to sum to 1 (log y axis), so rare positives stay visible next to negatives.
    """
    s = _np(scores, "scores").astype(np.float64)
    t = _np(targets, "targets")
    if s.ndim == 1:
        s, t = s[:, None], t.reshape(-1, 1)
    if s.ndim != 2 or s.shape != t.shape:
        raise TaglessError(f"scores and targets must both be N x C, got {s.shape} and {t.shape}")
    if not np.isfinite(s).all():
        raise TaglessError("scores contain NaN or inf")
    if not ((t == 1).any() or (t == 0).any()):
        raise TaglessError("targets hold no positive (1) or negative (0) label")
    if sigmoid is None:
        sigmoid = bool(s.size) and (s.min() < 0 or s.max() > 1)
    if sigmoid:
        s = 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))
    bins = np.linspace(0, 1, 41) if (s.min() >= 0 and s.max() <= 1) else 40
    label = "sigmoid(score)" if sigmoid else "score"

    panels = [(s.ravel(), t.ravel(), f"all {s.shape[1]} classes")]
    if class_names is not None and s.shape[1] > 1:
        names = _names(class_names, s.shape[1])
        npos = (t == 1).sum(axis=0)
        panels.extend((s[:, c], t[:, c], f"{names[c]}")
                      for c in [c for c in np.argsort(-npos, kind="stable") if npos[c] > 0][:max_classes])
    fig, axes = _grid(len(panels), ncols=3, width=4.3, height=3.1)
    for ax, (sv, tv, title) in zip(axes, panels):
        _hist(ax, sv, tv, bins, title)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of labels")
    fig.suptitle("Score distributions of positive and negative labels", fontsize=13)
    fig.tight_layout()
    return _save(fig, path)


# ---- image grids -----------------------------------------------------------------------
def plot_image_grid(images, path, titles: Sequence[str] | None = None, nrow: int | None = None,
                    suptitle: str | None = None, thumb_inches: float = 1.3) -> Path:
    """Thumbnails in rows of ``nrow`` (default min(8, N)), e.g. one cluster or one query
    and its neighbours per row.

    ``images``: uint8 N x H x W x C (C = 1 or 3) or N x H x W (grey); ``titles``: one short
    string per image (or None).
    """
    x = _np(images, "images")
    if x.dtype != np.uint8:
        raise TaglessError(f"images must be uint8, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or len(x) == 0:
        raise TaglessError(f"images must be a non-empty N x H x W x C array with C in 1, 3, 4, got shape {x.shape}")
    if titles is not None and len(titles) != len(x):
        raise TaglessError(f"{len(titles)} titles for {len(x)} images")
    n = len(x)
    ncols = max(1, min(int(nrow) if nrow else 8, n))
    nrows = math.ceil(n / ncols)
    aspect = x.shape[1] / x.shape[2]
    title_h = 0.25 if titles is not None else 0.05
    height = (thumb_inches * aspect + title_h) * nrows + (0.4 if suptitle else 0)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(thumb_inches * ncols, height))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = x[i]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        if titles is not None and titles[i] is not None:
            ax.set_title(str(titles[i]), fontsize=8, pad=2)
    top = 1.0
    if suptitle:  # a fixed 0.4 inch band, whatever the figure's height
        top = 1 - 0.4 / height
        fig.suptitle(suptitle, fontsize=11, y=1 - 0.1 / height, va="top")
    fig.subplots_adjust(wspace=0.05, hspace=0.3 if titles is not None else 0.05, top=top)
    return _save(fig, path)


# ---- data reports ----------------------------------------------------------------------
def plot_class_counts(counts: dict[str, Sequence[int]], class_names, path) -> Path:
    """Grouped horizontal bars: images (or positives) per class, one bar per split."""
    names = [str(c) for c in class_names]
    n = len(names)
    if n == 0 or not counts:
        raise TaglessError("plot_class_counts needs at least one class and one split")
    splits = list(counts)
    height = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(7.5, min(max(2.5, 0.28 * n * max(1, len(splits) / 1.5) + 1.3), 40)))
    for j, split in enumerate(splits):
        vals = _np(counts[split], split).astype(float)
        ax.barh(np.arange(n) + j * height, vals, height=height, label=split,
                color=plt.get_cmap("tab10")(j))
    ax.set_yticks(np.arange(n) + height * (len(splits) - 1) / 2, names, fontsize=9 if n <= 40 else 6)
    ax.invert_yaxis()
    ax.set_xlabel("images (positives for multi-label data)")
    ax.set_title(f"Images per class, {n} classes", fontsize=12)
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_boxes(images, boxes, class_names, path, ncols: int = 4) -> Path:
    """Images with their boxes drawn (x0, y0, x1, y1 in image pixels) and class names."""
    from matplotlib.patches import Rectangle

    x = _np(images, "images")
    if x.ndim != 4 or len(x) == 0 or len(boxes) != len(x):
        raise TaglessError(f"plot_boxes needs N x H x W x C images and N box arrays, got {x.shape} and {len(boxes)}")
    names = _names(class_names, len(class_names))
    colours = _class_colours(max(1, len(names)))
    fig, axes = _grid(len(x), ncols, width=2.6, height=2.6)
    for ax, img, b in zip(axes, x, boxes):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", interpolation="nearest")
        for x0, y0, x1, y1, c in np.asarray(b, dtype=float).reshape(-1, 5):
            colour = colours[int(c) % len(colours)]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=1.5, edgecolor=colour))
            ax.text(x0, y0, names[int(c)] if int(c) < len(names) else str(int(c)), fontsize=7, color="white",
                    va="bottom", bbox=dict(facecolor=colour, alpha=0.8, pad=0.5, lw=0))
        ax.axis("off")
    return _save(fig, path)
