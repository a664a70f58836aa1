"""ImageNet ReaL scores (Beyer et al. 2020; paper 003, Table K.1): a prediction against the
multi-label "reassessed" labels of each validation image.

* ReaL top-1: the share of images whose top-scoring class is in the image's ReaL list;
* ReaL mAP: mAP@class of the scores against the lists as multi-label targets (a class is
  positive for the image when it is in the list, negative otherwise; classes with no positive
  are left out, as :func:`tagless.eval.multilabel.map_class` does).

Images with an empty list are left out of both, as the authors do. Arrays in, numbers out
(fractions in [0, 1]); reading ``real.json`` is :mod:`tagless.data.real_labels`.
"""

from __future__ import annotations

import numpy as np
import torch

from tagless.errors import TaglessError
from tagless.eval.multilabel import map_class


def real_targets(real: list[list[int]], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept image indices, their K x C 0/1 targets) of the non-empty lists."""
    kept = np.array([i for i, labels in enumerate(real) if labels], dtype=np.int64)
    targets = np.zeros((len(kept), num_classes), dtype=np.int8)
    for row, i in enumerate(kept):
        labels = real[i]
        if max(labels) >= num_classes:
            raise TaglessError(f"ReaL label {max(labels)} of image {i} is outside the {num_classes} scored classes")
        targets[row, labels] = 1
    return kept, targets


def real_scores(scores, real: list[list[int]]) -> dict:
    """ReaL top-1 and ReaL mAP of ``scores`` (N x C, one row per image of ``real``), with the
    number of images kept and left out and the mean labels per kept image."""
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    if scores.ndim != 2 or scores.shape[0] != len(real):
        raise TaglessError(f"ReaL: scores of shape {tuple(scores.shape)} for {len(real)} images "
                           f"(expected {len(real)} x classes)")
    kept, targets = real_targets(real, scores.shape[1])
    if len(kept) == 0:
        raise TaglessError("ReaL: every image has an empty list of labels")
    top = scores[torch.as_tensor(kept)].argmax(1).numpy()
    hit = targets[np.arange(len(kept)), top] == 1
    return {"real_top1": float(hit.mean()),
            "real_map": map_class(scores[torch.as_tensor(kept)], torch.as_tensor(targets)),
            "images": len(kept), "left_out": len(real) - len(kept),
            "labels_per_image": float(targets.sum(1).mean())}
