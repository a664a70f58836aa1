"""The online monitor, by label kind, on the held-out split:

- single labels: weighted kNN top-1 of the frozen backbone (paper 004's monitor: k = 20,
  T = 0.07, cosine similarity, the training images as the bank);
- multi-label and partial labels: mAP@class, from the method's own classifier when it has one
  (``class_scores``), otherwise from multi-label kNN scores;
- a method with ``pseudo_labels``: their NMI against the true training labels (head 0).

Every rank computes the same numbers on its own device (small and cheap).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from tagless.engine.features import view_features
from tagless.methods.contract import hook

MULTI_KINDS = ("multi", "partial", "single_positive")
MONITOR_KEYS = ("knn_top1", "map_class", "map_sample", "pseudo_nmi")  # what ``monitor`` returns


class _ClassScores(nn.Module):
    """Adapter: ``extract_features`` runs ``method.class_scores`` in eval mode."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method.class_scores(x)


def _bank_indices(train_set, cfg) -> np.ndarray:
    idx = np.arange(len(train_set))
    if train_set.label_kind == "single":
        idx = idx[np.asarray(train_set.targets) >= 0]
    limit = cfg.train.knn_max_bank
    if limit and len(idx) > limit:
        idx = np.sort(np.random.default_rng(cfg.seed).choice(idx, limit, replace=False))
    return idx


def classifier_scores(method: nn.Module, images, cfg, device: torch.device) -> torch.Tensor:
    """The method's own class logits (``class_scores``) of ``images`` in the run's eval view."""
    return view_features(_ClassScores(method), images, cfg.views, device)


def monitor(method: nn.Module, train_set, held_out, cfg, device: torch.device) -> dict[str, float]:
    """The monitor's numbers (percentages), keyed as :data:`MONITOR_KEYS`."""
    from tagless.eval import knn_multilabel_scores, knn_predict, map_class, map_sample, nmi

    features = lambda module, images: view_features(module, images, cfg.views, device)
    out: dict[str, float] = {}
    kind = held_out.label_kind if held_out is not None else "none"
    if kind == "single" and train_set.label_kind == "single":
        bank_idx = _bank_indices(train_set, cfg)
        bank = features(method.backbone, train_set.images[bank_idx])
        queries = features(method.backbone, held_out.images)
        labels = torch.as_tensor(np.asarray(held_out.targets), device=device)
        pred = knn_predict(bank, torch.as_tensor(np.asarray(train_set.targets)[bank_idx], device=device), queries,
                           k=min(cfg.train.knn_k, len(bank_idx)), temperature=cfg.train.knn_temperature,
                           num_classes=len(train_set.classes))
        keep = labels >= 0
        out["knn_top1"] = float((pred[keep] == labels[keep]).float().mean() * 100)
    elif kind in MULTI_KINDS:
        targets = torch.as_tensor(np.asarray(held_out.targets), device=device)
        if hook(method, "class_scores") is not None:
            scores = features(_ClassScores(method), held_out.images)
        else:
            bank_idx = _bank_indices(train_set, cfg)
            bank = features(method.backbone, train_set.images[bank_idx])
            bank_targets = torch.as_tensor(np.asarray(train_set.targets)[bank_idx], device=device)
            scores = knn_multilabel_scores(bank, bank_targets, features(method.backbone, held_out.images),
                                           k=min(cfg.train.knn_k, len(bank_idx)), temperature=cfg.train.knn_temperature)
        out["map_class"] = 100 * map_class(scores.cpu(), targets.cpu())
        out["map_sample"] = 100 * map_sample(scores.cpu(), targets.cpu())
    pseudo = hook(method, "pseudo_labels")
    labels = pseudo() if pseudo is not None else None
    if labels is not None and train_set.label_kind == "single":
        truth = np.asarray(train_set.targets)
        pred = labels.reshape(len(truth), -1)[:, 0].cpu().numpy()
        known = truth >= 0
        if known.any():
            out["pseudo_nmi"] = 100 * nmi(truth[known], pred[known])
    return out
