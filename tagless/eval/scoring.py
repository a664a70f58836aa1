"""The frozen-feature scores the demo, the benchmarks and the run reports print (one scorer,
so they never disagree): weighted kNN, an L-BFGS linear probe and k-means clustering quality
of single-label features; the one-vs-rest linear probe's mAP of multi-label features."""

from __future__ import annotations

import numpy as np
import torch


def score_single_label(x_tr, y_tr, x_te, y_te, k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                       device="cpu") -> tuple[list[dict], np.ndarray]:
    """Weighted kNN (top-1, top-5), an L-BFGS linear probe (L2 chosen on a val split) and
    k-means (k = classes) NMI / ARI on the test features, of frozen features; unlabelled (-1)
    training rows are dropped. Returns (rows, kNN predictions); rows[2] is the k-means one."""
    from tagless.eval import cluster_scores, kmeans, knn_accuracy, knn_predict, linear_probe

    keep = np.asarray(y_tr) >= 0
    t = lambda a: torch.as_tensor(np.asarray(a), device=device)
    bank, bank_labels, queries = t(x_tr[keep]), t(y_tr[keep]), t(x_te)
    pred = knn_predict(bank, bank_labels, queries, k=k, temperature=temperature, num_classes=num_classes)
    knn = knn_accuracy(bank, bank_labels, queries, t(y_te), k=k, temperature=temperature, num_classes=num_classes)
    probe = linear_probe(x_tr[keep], y_tr[keep], x_te, y_te, protocol="val", device=device)
    known = np.asarray(y_te) >= 0
    classes = num_classes or int(max(np.max(y_tr), np.max(y_te))) + 1
    x = torch.nn.functional.normalize(t(x_te[known]).float(), dim=1)
    _, assign, _ = kmeans(x, classes, iters=100, n_init=3, seed=0)
    clusters = cluster_scores(np.asarray(y_te)[known], assign.cpu().numpy())
    rows = [
        {"evaluation": f"weighted kNN (k={k}, T={temperature})", "top-1 (%)": 100 * knn["top1"],
         "top-5 (%)": 100 * knn["top5"]},
        {"evaluation": f"linear probe (L-BFGS, L2 {probe.l2:.1e} chosen on val)", "top-1 (%)": 100 * probe.score},
        {"evaluation": f"k-means (k={classes}) of the test features", "NMI (%)": 100 * clusters["nmi"],
         "ARI (%)": 100 * clusters["ari"]},
    ]
    return rows, pred.cpu().numpy()


def score_multilabel(x_tr, y_tr, x_te, y_te, device="cpu") -> tuple[list[dict], np.ndarray]:
    """The one-vs-rest L-BFGS linear probe of frozen features (L2 chosen on a val split, paper
    000's protocol): its mAP@class / mAP@sample row and its test scores N x C."""
    from tagless.eval import linear_probe, map_class, map_sample

    probe = linear_probe(x_tr, y_tr, x_te, y_te, protocol="val", device=device)
    scores = probe.model.decision_function(torch.as_tensor(x_te, device=device)).cpu().numpy()
    return [{"evaluation": f"one-vs-rest linear probe (L2 {probe.l2:.1e})",
             "mAP@class (%)": 100 * map_class(scores, y_te), "mAP@sample (%)": 100 * map_sample(scores, y_te)}], scores
