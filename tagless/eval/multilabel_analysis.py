"""The multi-label analyses of papers 001 and 003 as functions of score arrays, and their plots.

[0] Paper 003 (Verelst et al., WACV 2023), supp. F, Fig. F.1: distributions of the predicted
    scores; AN on single positives biases the model towards one confident class per image,
    EN + SCL restores several. supp. K, Figs. K.1-K.2: class heatmaps (CAMs) over images.
[1] Paper 001 (Kobayashi, CVPR 2023), supp. A "Bias in logits": how an additive bias of the
    positive logits (eps_P) and negative logits (eps_N) enters the loss; here measured as the
    mean logit of the positive and of the negative labels.

Scores are logits, N x C; targets N x C of 1 (positive), 0 (negative), -1 (unknown, left out
of every statistic). :mod:`tagless.report.multilabel_plots` draws them.
"""
from __future__ import annotations

import numpy as np
import torch

from tagless.errors import TaglessError

SCORE_BINS = 20  # fixed bins on [0, 1]


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + e^-x), without overflow


def _np(x, name: str) -> np.ndarray:
    """A numpy copy of an array-like or a tensor on any device."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TaglessError(f"{name} cannot be converted to an array: {err}") from None


def _scores(scores, name: str = "scores") -> np.ndarray:
    s = _np(scores, name).astype(np.float64)
    if s.ndim != 2:
        raise TaglessError(f"{name} must be N x C, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise TaglessError(f"{name} contain NaN or inf")
    return s


def _pair(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    t = _np(targets, "targets")
    if t.shape != s.shape:
        raise TaglessError(f"scores and targets must both be N x C, got {s.shape} and {t.shape}")
    if not np.isin(t, (-1, 0, 1)).all():
        raise TaglessError("targets must be 1 (positive), 0 (negative) or -1 (unknown)")
    return s, t


def score_histograms(scores, targets, bins: int = SCORE_BINS) -> dict:
    """Histograms of sigmoid(scores) of the positive and of the negative entries [0], on
    ``bins`` equal bins of [0, 1]: {'edges', 'positives', 'negatives'} (int64 counts)."""
    s, t = _pair(scores, targets)
    if int(bins) < 1:
        raise TaglessError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    p = stable_sigmoid(s)
    return {"edges": edges, "positives": np.histogram(p[t == 1], edges)[0].astype(np.int64),
            "negatives": np.histogram(p[t == 0], edges)[0].astype(np.int64)}


def confident_counts(scores, threshold: float = 0.5) -> np.ndarray:
    """Classes per image with sigmoid(score) > ``threshold`` (int64 N) [0]."""
    return (stable_sigmoid(_scores(scores)) > threshold).sum(1).astype(np.int64)


def top_scores(scores, k: int = 4) -> np.ndarray:
    """The k highest sigmoid scores of each image, highest first (N x k): Fig. F.1 of [0]
    plots the distribution of each column."""
    s = _scores(scores)
    if not 1 <= k <= s.shape[1]:
        raise TaglessError(f"k={k} must be in [1, number of classes {s.shape[1]}]")
    return -np.sort(-stable_sigmoid(s), axis=1)[:, :k]


def logit_bias(scores, targets) -> dict[str, float]:
    """Mean logit of the positive and of the negative labels and their gap [1] (NaN for a
    side without entries)."""
    s, t = _pair(scores, targets)
    pos, neg = s[t == 1], s[t == 0]
    mean_pos = float(pos.mean()) if pos.size else float("nan")
    mean_neg = float(neg.mean()) if neg.size else float("nan")
    return {"mean_pos_logit": mean_pos, "mean_neg_logit": mean_neg, "gap": mean_pos - mean_neg}
