"""The frozen-feature scores the demo and the run reports print: weighted kNN and an L-BFGS
linear probe of single-label features (one scorer, so the two never disagree)."""

from __future__ import annotations

import numpy as np
import torch


def score_single_label(x_tr, y_tr, x_te, y_te, k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                       device="cpu") -> tuple[list[dict], np.ndarray]:
    """Weighted kNN (top-1, top-5) and an L-BFGS linear probe (L2 chosen on a val split) of
    frozen features; unlabelled (-1) training rows are dropped. Returns (rows, kNN predictions)."""
    from tagless.eval import knn_accuracy, knn_predict, linear_probe

    keep = np.asarray(y_tr) >= 0
    t = lambda a: torch.as_tensor(np.asarray(a), device=device)
    bank, bank_labels, queries = t(x_tr[keep]), t(y_tr[keep]), t(x_te)
    pred = knn_predict(bank, bank_labels, queries, k=k, temperature=temperature, num_classes=num_classes)
    knn = knn_accuracy(bank, bank_labels, queries, t(y_te), k=k, temperature=temperature, num_classes=num_classes)
    probe = linear_probe(x_tr[keep], y_tr[keep], x_te, y_te, protocol="val", device=device)
    rows = [
        {"evaluation": f"weighted kNN (k={k}, T={temperature})", "top-1 (%)": 100 * knn["top1"], "top-5 (%)": 100 * knn["top5"]},
        {"evaluation": f"linear probe (L-BFGS, L2 {probe.l2:.1e} chosen on val)", "top-1 (%)": 100 * probe.score},
    ]
    return rows, pred.cpu().numpy()
