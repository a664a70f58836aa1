"""Online kNN monitor: weighted kNN of the frozen backbone on a held-out split (paper 004's
monitor: k = 20, T = 0.07, cosine similarity)."""

from __future__ import annotations

import numpy as np
import torch

from tagless import distributed as dist
from tagless.engine.features import extract_features


def knn_monitor(backbone, train_set, held_out, cfg, device: torch.device) -> float | None:
    """Top-1 (%) of weighted kNN with the training images as the bank; None for datasets
    without single labels. Computed on rank 0's device by every rank (small and cheap)."""
    from tagless.eval import knn_predict

    if held_out is None or train_set.label_kind != "single" or held_out.label_kind != "single":
        return None
    bank_idx = np.arange(len(train_set))
    labelled = train_set.targets[bank_idx] >= 0
    bank_idx = bank_idx[labelled]
    limit = cfg.train.knn_max_bank
    if limit and len(bank_idx) > limit:
        bank_idx = np.sort(np.random.default_rng(cfg.seed).choice(bank_idx, limit, replace=False))
    size, mean, std = cfg.views.global_size, cfg.views.mean, cfg.views.std
    bank = extract_features(backbone, train_set.images[bank_idx], size, mean, std, device=device)
    queries = extract_features(backbone, held_out.images, size, mean, std, device=device)
    bank_labels = torch.as_tensor(train_set.targets[bank_idx], device=device)
    test_labels = torch.as_tensor(held_out.targets, device=device)
    pred = knn_predict(bank, bank_labels, queries, k=cfg.train.knn_k, temperature=cfg.train.knn_temperature,
                       num_classes=len(train_set.classes))
    keep = test_labels >= 0
    acc = (pred[keep] == test_labels[keep]).float().mean() * 100
    return float(dist.all_reduce_mean(acc))
