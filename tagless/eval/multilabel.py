"""Multi-label metrics: AP with grouped ties, mAP@class, mAP@sample, CP/CR/CF1/OP/OR/OF1,
and mAP per object size.

[0] Paper 001 (Kobayashi, Two-way multi-label loss, CVPR 2023): mAP@class (mean over
    classes of the AP of each column) and mAP@sample (mean over images of the AP of each
    row, over images with >= 1 positive). Their code drops targets < 0 and excludes
    columns/rows with no positive from the mean; so do we.
[1] scikit-learn ``average_precision_score``: AP = sum_n (R_n - R_{n-1}) P_n over the
    distinct score thresholds, so a block of tied scores enters together and every positive
    in it gets the precision at the end of the block. We reproduce this exactly (not the
    ``argsort`` tie order of the ASL / Two-way codes, see ``shared/notes/multilabel.md`` §6).
[2] Chen et al., ML-GCN, CVPR 2019 (``util.py``, ``AveragePrecisionMeter``): CP, CR, CF1,
    OP, OR, OF1 for a threshold or the top-3 labels per image.
[3] Paper 003 (Verelst et al., WACV 2023), supplementary D: mAP per object size, positives
    split by ground-truth box area, negatives shared by every bin.
[4] COCO detection evaluation: small objects have area < 32^2, medium < 96^2, large the
    rest, "area" being the annotation's (mask) area in original image pixels.

Targets everywhere are N x C with 1 = positive, 0 = negative, -1 = unknown (ignored).
All metrics are fractions in [0, 1] (multiply by 100 for the papers' tables).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tagless.data.object_sizes import COCO_REFERENCE_SIZE, COCO_SIZE_THRESHOLDS, object_size_buckets, to_tensor
from tagless.errors import TaglessError

__all__ = ["COCO_REFERENCE_SIZE", "COCO_SIZE_THRESHOLDS", "average_precision", "map_by_object_size", "map_class",
           "map_sample", "object_size_buckets", "threshold_metrics", "topk_metrics"]


def _check(scores, targets) -> tuple[torch.Tensor, torch.Tensor]:
    scores = to_tensor(scores, "scores")
    targets = to_tensor(targets, "targets").to(scores.device)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise TaglessError(f"scores and targets must both be N x C, got {tuple(scores.shape)} "
                           f"and {tuple(targets.shape)}")
    if not scores.is_floating_point():
        scores = scores.double()
    if torch.isnan(scores).any():
        raise TaglessError("scores contain NaN")
    bad = (targets != 1) & (targets != 0) & (targets != -1)
    if bad.any():
        raise TaglessError("targets must be 1 (positive), 0 (negative) or -1 (ignored)")
    return scores, targets


def _ap_sorted(scores: torch.Tensor, tp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """AP of every column of ``scores`` (already sorted descending along dim 0).

    ``tp`` / ``fp`` mark the positives / negatives (both False for ignored entries, which
    then change neither count). Each positive gets the precision at the end of its block
    of tied scores; columns without positives give NaN.
    """
    n = scores.shape[0]
    ctp = tp.cumsum(0, dtype=torch.float64)
    cfp = fp.cumsum(0, dtype=torch.float64)
    precision = ctp / (ctp + cfp)
    precision = torch.nan_to_num(precision, nan=0.0)  # 0/0 only before the first kept entry
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    pos = torch.arange(n, device=scores.device)[:, None].expand_as(scores)
    # index of the last entry of each tie block = reverse running minimum of block ends
    ends = torch.where(last, pos, torch.full_like(pos, n - 1))
    ends = ends.flip(0).cummin(0).values.flip(0)
    num_pos = ctp[-1] if n else torch.zeros(scores.shape[1], dtype=torch.float64, device=scores.device)
    ap = (tp * precision.gather(0, ends)).sum(0) / num_pos
    return torch.where(num_pos > 0, ap, torch.full_like(ap, float("nan")))


def _sort_columns(scores, targets):
    scores, order = scores.sort(dim=0, descending=True, stable=True)
    return scores, targets.gather(0, order), order


def average_precision(scores, targets) -> torch.Tensor:
    """Per-class average precision [1] of N x C ``scores`` against ``targets`` (1/0/-1).

    Entries with target -1 are dropped (AP equals scikit-learn's on the kept entries).
    Ties are grouped as in scikit-learn. A class without any positive gets NaN (callers
    exclude it from means, as paper 001's code does; scikit-learn would give 0).

    Returns a float64 tensor of C values on the scores' device. One sort per class.
    """
    scores, targets = _check(scores, targets)
    s, t, _ = _sort_columns(scores, targets)
    return _ap_sorted(s, t == 1, t == 0)


def _nanmean(x: torch.Tensor) -> float:
    keep = ~torch.isnan(x)
    return float(x[keep].mean()) if keep.any() else float("nan")


def map_class(scores, targets) -> float:
    """mAP@class [0]: mean AP over the classes with >= 1 positive (NaN if there is none)."""
    return _nanmean(average_precision(scores, targets))


def map_sample(scores, targets) -> float:
    """mAP@sample [0]: AP of each image's ranking of the classes, averaged over images with
    >= 1 positive. Ignored (-1) entries are dropped from the image's ranking."""
    scores, targets = _check(scores, targets)
    return _nanmean(average_precision(scores.T, targets.T))


def _counts_metrics(pred: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 of boolean predictions [2].

    Zero-division convention: a class with no predicted positive has precision 0 (as in
    ML-GCN); CP and CR average over the classes with >= 1 positive target (the classes
    mAP@class uses; ML-GCN divides by all classes and gets NaN recall otherwise); OP or OR
    with an empty denominator is 0; an F1 with P + R = 0 is 0. Ignored (-1) entries count
    nowhere.
    """
    valid = targets != -1
    pos = targets == 1
    n_correct = (pred & pos).sum(0).double()
    n_pred = (pred & valid).sum(0).double()
    n_gt = pos.sum(0).double()
    has_pos = n_gt > 0
    prec = torch.where(n_pred > 0, n_correct / n_pred.clamp(min=1), torch.zeros_like(n_pred))
    rec = n_correct / n_gt.clamp(min=1)

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    cp = float(prec[has_pos].mean()) if has_pos.any() else 0.0
    cr = float(rec[has_pos].mean()) if has_pos.any() else 0.0
    op = float(n_correct.sum() / n_pred.sum()) if n_pred.sum() > 0 else 0.0
    orr = float(n_correct.sum() / n_gt.sum()) if n_gt.sum() > 0 else 0.0
    return {"CP": cp, "CR": cr, "CF1": f1(cp, cr), "OP": op, "OR": orr, "OF1": f1(op, orr)}


def threshold_metrics(scores, targets, threshold: float = 0.5) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 [2] predicting every label with ``score >= threshold``.

    The default 0.5 is for probabilities; use 0.0 for logits (as ML-GCN does).
    See :func:`_counts_metrics` for the zero-division convention.
    """
    scores, targets = _check(scores, targets)
    return _counts_metrics(scores >= threshold, targets)


def topk_metrics(scores, targets, k: int = 3) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 [2] predicting the k highest-scoring labels of each image
    (ML-GCN reports k = 3). Ties go to the smaller class index."""
    scores, targets = _check(scores, targets)
    if not 1 <= k <= scores.shape[1]:
        raise TaglessError(f"k={k} must be in [1, number of classes {scores.shape[1]}]")
    top = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    pred = torch.zeros_like(targets, dtype=torch.bool).scatter_(1, top, True)
    return _counts_metrics(pred, targets)


def map_by_object_size(
    scores,
    targets,
    boxes: Sequence,
    image_size: int | tuple[int, int],
    bins: str | int = "coco",
    thresholds: tuple[float, float] = COCO_SIZE_THRESHOLDS,
    areas: Sequence | None = None,
    reference_size: int = COCO_REFERENCE_SIZE,
) -> dict[str, float]:
    """mAP@class per object-size bucket [3].

    For bucket b: the positives are the pairs of :func:`object_size_buckets` in b; the
    negatives (target 0) are shared by every bucket since they have no size; other
    positives and -1 entries are ignored. Classes with no positive in b are excluded from
    b's mean (NaN if none). One sort per class serves all buckets. ``areas``: each box's
    area in original image pixels (``ImageDataset.extras['area']``), see there.

    Returns ``{bucket name: mAP}`` (names small/medium/large, or bin0.. for ``bins=n``).
    """
    scores, targets = _check(scores, targets)
    bucket, names, _ = object_size_buckets(targets, boxes, image_size, bins, thresholds, areas, reference_size)
    s, t, order = _sort_columns(scores, targets)
    b = bucket.to(scores.device).gather(0, order)
    neg = t == 0
    return {name: _nanmean(_ap_sorted(s, b == i, neg)) for i, name in enumerate(names)}
