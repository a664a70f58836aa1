"""Object sizes of multi-label data with boxes: which size bucket each positive (image, class)
pair falls in, by the area of its largest instance. ``tagless data`` counts objects with it and
:func:`tagless.eval.map_by_object_size` scores per bucket.

[3] Paper 003 (Verelst et al., WACV 2023), supplementary D: mAP per object size, positives
    split by ground-truth box area.
[4] COCO detection evaluation: small objects have area < 32^2, medium < 96^2, large the
    rest, "area" being the annotation's (mask) area in original image pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tagless.errors import TaglessError

COCO_SIZE_THRESHOLDS = (32.0**2, 96.0**2)  # COCO small / medium / large cut-offs in original pixels^2
COCO_REFERENCE_SIZE = 640  # COCO images are at most 640 px on their longest side (fallback without areas)


def to_tensor(x, name: str) -> torch.Tensor:
    """``x`` as a tensor (a tensor passes through); a clear error for what cannot be one."""
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as err:
        raise TaglessError(f"{name} cannot be converted to a tensor: {err}") from None


def _pair_sizes(boxes: Sequence, areas: Sequence | None, n: int, c: int, h: float, w: float):
    """(relative, pixels): N x C float64 size of each (image, class) pair's largest instance,
    as box area / image area and as recorded area (None without ``areas``); -1 where the
    pair has no box."""
    if len(boxes) != n:
        raise TaglessError(f"boxes has {len(boxes)} entries for {n} images")
    if areas is not None and len(areas) != n:
        raise TaglessError(f"areas has {len(areas)} entries for {n} images")
    rows, arrays, recorded = [], [], []
    for i, b in enumerate(boxes):
        if b is None or len(b) == 0:
            continue
        b = torch.as_tensor(np.asarray(b, dtype=np.float64))
        if b.ndim != 2 or b.shape[1] < 5:
            raise TaglessError(f"boxes[{i}] must be k x 5 (x0, y0, x1, y1, class), got {tuple(b.shape)}")
        if areas is not None:
            a = np.asarray(areas[i] if areas[i] is not None else [], dtype=np.float64).reshape(-1)
            if len(a) != len(b):
                raise TaglessError(f"areas[{i}] has {len(a)} values for {len(b)} boxes")
            recorded.append(torch.as_tensor(a))
        arrays.append(b[:, :5])
        rows.append(torch.full((b.shape[0],), i, dtype=torch.long))
    rel = torch.full((n * c,), -1.0, dtype=torch.float64)
    pix = rel.clone() if areas is not None else None
    if arrays:
        b = torch.cat(arrays)
        cls = b[:, 4].long()
        if (cls < 0).any() or (cls >= c).any():
            raise TaglessError(f"box class index out of range [0, {c})")
        index = torch.cat(rows) * c + cls
        box_area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
        rel.scatter_reduce_(0, index, box_area / (h * w), reduce="amax")
        if pix is not None:
            pix.scatter_reduce_(0, index, torch.cat(recorded).clamp(min=0), reduce="amax")
    return rel.view(n, c), None if pix is None else pix.view(n, c)


def object_size_buckets(
    targets,
    boxes: Sequence,
    image_size: int | tuple[int, int],
    bins: str | int = "coco",
    thresholds: tuple[float, float] = COCO_SIZE_THRESHOLDS,
    areas: Sequence | None = None,
    reference_size: int = COCO_REFERENCE_SIZE,
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Assign each positive (image, class) pair to an object-size bucket.

    A pair's size is that of its *largest* instance of the class in the image. ``boxes[i]``:
    k x 5 array of x0, y0, x1, y1, class in cached pixels; ``image_size``: side of the
    square cached images, or (H, W); ``areas[i]`` (optional, aligned with ``boxes[i]``): each
    instance's area in ORIGINAL image pixels, as the data sources record it in
    ``ImageDataset.extras['area']``.

    bins='coco': small < thresholds[0] <= medium < thresholds[1] <= large, COCO's definition [4]
        on the area in original pixels (32^2 and 96^2 by default; COCO's own areas are mask
        areas, voc and digit scenes record box areas). Without ``areas`` (old data, boxes
        only) the original size is unknown: the fallback rescales the box's area relative to
        the cached image to a ``reference_size`` x ``reference_size`` image (640, COCO's
        longest side), right for COCO-like photos only; a 64-px scene would be all "large".
    bins=n (int): n bins with equal numbers of positive pairs by relative area (box area /
        image area, unchanged by the squish; paper 003, supp. D: "equally-sized bins, grouped
        by relative area"); named bin0 (smallest) ...

    Returns ``(bucket, names, edges)``: ``bucket`` int64 N x C holds the bucket index of
    each positive pair with a box and -1 elsewhere (negatives, ignored entries, positives
    without a box); ``edges`` are the boundaries between buckets in the measure used:
    pixels^2 of the original image for 'coco' with areas, else relative area.
    """
    targets = to_tensor(targets, "targets")
    if targets.ndim != 2:
        raise TaglessError(f"targets must be N x C, got shape {tuple(targets.shape)}")
    n, c = targets.shape
    h, w = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if h <= 0 or w <= 0:
        raise TaglessError(f"image_size must be positive, got {image_size}")
    if len(thresholds) != 2 or not 0 < thresholds[0] < thresholds[1]:
        raise TaglessError(f"thresholds must be (small, large) with 0 < small < large, got {tuple(thresholds)}")
    rel, pix = _pair_sizes(boxes, areas, n, c, h, w)
    size = rel
    if bins == "coco":
        names = ["small", "medium", "large"]
        if pix is not None:
            size, edges = pix, torch.tensor([float(t) for t in thresholds], dtype=torch.float64)
        else:
            edges = torch.tensor([t / reference_size**2 for t in thresholds], dtype=torch.float64)
    elif isinstance(bins, (int, np.integer)) and not isinstance(bins, bool) and bins >= 1:
        names = [f"bin{i}" for i in range(bins)]
        vals = rel[(targets.cpu() == 1) & (rel >= 0)]
        if vals.numel() == 0:
            edges = torch.zeros(bins - 1, dtype=torch.float64)
        else:
            edges = torch.quantile(vals, torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1])
    else:
        raise TaglessError(f"bins must be 'coco' or a positive int, got {bins!r}")
    size = size.to(targets.device)
    has = (targets == 1) & (size >= 0)
    bucket = torch.bucketize(size, edges.to(size.device), right=True)  # edges[i-1] <= size < edges[i]
    bucket = torch.where(has, bucket, torch.full_like(bucket, -1))
    return bucket, names, edges.to(size.device)
