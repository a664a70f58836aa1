"""A trained multi-label classifier scored on the test split: the numbers ``tagless train``
reports (``TrainResult.test``, ``test.json``) and ``tagless compare`` tabulates.

- mAP@class and mAP@sample (paper 001, Sec. 5; tagless.eval.map_class / map_sample);
- mAP@class per object size (COCO's small / medium / large in original pixels^2, the
  thresholds of ``data.object_size_thresholds``; paper 003, supp. D);
- the logit bias of paper 001 (mean logit of positives and of negatives) and the mean number
  of confident classes per image (sigmoid > 0.5; paper 003, Fig. F.1: AN collapses to one).

A single-label classifier (method ``classifier``) gets top-1 and mean-per-class accuracy instead.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from tagless.engine.monitor import classifier_scores
from tagless.files import write_bytes_atomic

SCORES_FILE = "test_scores.npz"  # logits (float16) and clean targets of the test split


def save_test_scores(run_dir: Path, scores: torch.Tensor, targets: torch.Tensor) -> None:
    """``RUN_DIR/test_scores.npz``: the logits and clean targets the report and compare read
    (written atomically)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=scores.numpy().astype(np.float16), targets=targets.numpy().astype(np.int8))
    write_bytes_atomic(Path(run_dir) / SCORES_FILE, buffer.getvalue())


def test_scores(method, dataset, cfg, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits N x C on the CPU, clean targets N x C) of ``dataset`` in the eval view."""
    was = method.training
    method.eval()
    try:
        scores = classifier_scores(method, dataset.images, cfg, device).float().cpu()
    finally:
        method.train(was)
    return scores, torch.as_tensor(np.asarray(dataset.targets))


def single_label_numbers(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """A single-label classifier's (method ``classifier``) top-1 and mean-per-class accuracy (%),
    over the labelled images (paper 000's transfer tables report top-1)."""
    keep = targets >= 0
    y = targets[keep].long()
    correct = (scores[keep].argmax(1) == y).double()
    per_class = torch.stack([correct[y == c].mean() for c in torch.unique(y)])
    return {"top1": 100 * float(correct.mean()), "mean_per_class": 100 * float(per_class.mean())}


def score_numbers(scores: torch.Tensor, targets: torch.Tensor, dataset=None, cfg=None) -> dict[str, float]:
    """The numbers of the module docstring (percentages for the mAPs); for single labels (N
    targets), :func:`single_label_numbers`."""
    if targets.ndim == 1:
        return single_label_numbers(scores, targets)
    from tagless.eval import map_class, map_sample
    from tagless.eval.multilabel_analysis import confident_counts, logit_bias

    out = {"map_class": 100 * map_class(scores, targets), "map_sample": 100 * map_sample(scores, targets)}
    if dataset is not None and dataset.boxes is not None:
        from tagless.eval.multilabel import map_by_object_size

        areas = dataset.extras.get("area")
        thresholds = tuple(cfg.data.object_size_thresholds) if cfg is not None else (32.0**2, 96.0**2)
        sizes = map_by_object_size(scores, targets, dataset.boxes, int(dataset.images.shape[1]),
                                   thresholds=thresholds, areas=areas)
        out.update({f"map_{name}": 100 * v for name, v in sizes.items() if not math.isnan(v)})
    bias = logit_bias(scores, targets)
    out.update(mean_pos_logit=float(bias["mean_pos_logit"]), mean_neg_logit=float(bias["mean_neg_logit"]),
               confident_per_image=float(np.mean(confident_counts(scores))))
    return out


class _CheckpointClassifier(torch.nn.Module):
    """Backbone + the 1x1-conv classifier of a ``multilabel`` checkpoint: class logits."""

    def __init__(self, backbone, layer: str, head):
        super().__init__()
        self.backbone, self.layer, self.head = backbone, layer, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x, self.layer)[self.layer])[0]


def checkpoint_classifier(method_state: dict, loaded) -> torch.nn.Module | None:
    """The classifier in a checkpoint's ``method`` state (method ``multilabel``) on the backbone
    ``loaded`` (:class:`tagless.engine.checkpoint_features.LoadedBackbone`), or None when it has none."""
    from tagless.models.heads import CamClassifier

    weight = method_state.get("head.classifier.weight")
    if weight is None:
        return None
    layer = loaded.config.get("method", {}).get("feature_layer") or loaded.backbone.layer_names[-1]
    head = CamClassifier(weight.shape[1], weight.shape[0])
    head.classifier.load_state_dict({"weight": weight, "bias": method_state["head.classifier.bias"]})
    device = next(loaded.backbone.parameters()).device
    return _CheckpointClassifier(loaded.backbone, layer, head.to(device)).eval()


def load_classifier(path, device="cpu"):
    """``(loaded backbone, classifier or None)`` of a checkpoint, read from disk once."""
    from tagless.checkpoint import load_checkpoint
    from tagless.engine.checkpoint_features import backbone_from_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu")
    loaded = backbone_from_checkpoint(ckpt, path, device)
    return loaded, checkpoint_classifier(ckpt.get("method", {}), loaded)


def checkpoint_test_scores(model, loaded, data, test=None) -> tuple[object, torch.Tensor]:
    """``(test split of the data section, the classifier's logits N x C on the CPU)`` in the
    checkpoint's own eval view (``eval map --checkpoint`` and the report); ``test``: that
    split already built."""
    from tagless.data import build_dataset
    from tagless.engine.features import extract_features

    test = test if test is not None else build_dataset(data, "test")
    device = next(model.parameters()).device
    scores = extract_features(model, test.images, loaded.size, loaded.mean, loaded.std, device=device,
                              crop_fraction=loaded.crop_fraction)
    return test, scores.float().cpu()
