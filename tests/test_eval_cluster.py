"""Clustering metrics against scikit-learn and brute force; k-means against scikit-learn."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

from tagless.errors import TaglessError
from tagless.eval import adjusted_nmi, ari, cluster_scores, hungarian_accuracy, kmeans, nmi, purity

CASES = [
    (500, 10, 10, 0),
    (300, 3, 7, 1),
    (1000, 20, 5, 2),
    (60, 8, 30, 3),
    (2000, 50, 40, 4),
]


def _labels(n, k_true, k_pred, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k_true, n)
    p = np.where(rng.random(n) < 0.5, t % k_pred, rng.integers(0, k_pred, n)) * 3 - 7  # arbitrary ids
    return t, p


@pytest.mark.parametrize("n,k_true,k_pred,seed", CASES)
def test_metrics_match_sklearn(n, k_true, k_pred, seed):
    t, p = _labels(n, k_true, k_pred, seed)
    assert nmi(t, p) == pytest.approx(normalized_mutual_info_score(t, p), abs=1e-6)
    assert adjusted_nmi(t, p) == pytest.approx(adjusted_mutual_info_score(t, p), abs=1e-6)
    assert ari(t, p) == pytest.approx(adjusted_rand_score(t, p), abs=1e-6)
    # torch inputs give the same
    assert nmi(torch.tensor(t), torch.tensor(p)) == pytest.approx(nmi(t, p))


@pytest.mark.parametrize("t,p", [
    ([0, 0, 1, 1], [5, 5, 2, 2]),      # identical up to names
    ([0, 0, 0, 0], [1, 1, 1, 1]),      # one cluster each
    ([0, 1, 2, 3], [0, 1, 2, 3]),      # all singletons
    ([0, 0, 0, 0], [0, 1, 2, 3]),      # one class, many clusters
    ([0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2]),  # independent
    ([3], [4]),
])
def test_limit_cases_match_sklearn(t, p):
    assert nmi(t, p) == pytest.approx(normalized_mutual_info_score(t, p), abs=1e-6)
    assert adjusted_nmi(t, p) == pytest.approx(adjusted_mutual_info_score(t, p), abs=1e-6)
    assert ari(t, p) == pytest.approx(adjusted_rand_score(t, p), abs=1e-6)


def _brute_accuracy(t, p):
    classes, clusters = np.unique(t), np.unique(p)
    best = 0
    if len(clusters) >= len(classes):
        for chosen in itertools.permutations(clusters, len(classes)):
            best = max(best, sum(((p == c) & (t == k)).sum() for c, k in zip(chosen, classes)))
    else:
        for chosen in itertools.permutations(classes, len(clusters)):
            best = max(best, sum(((p == c) & (t == k)).sum() for c, k in zip(clusters, chosen)))
    return best / len(t)


@pytest.mark.parametrize("k_true,k_pred,seed", [(4, 4, 0), (5, 5, 1), (3, 5, 2), (5, 3, 3)])
def test_hungarian_accuracy_matches_brute_force(k_true, k_pred, seed):
    t, p = _labels(40, k_true, k_pred, seed)
    assert hungarian_accuracy(t, p) == pytest.approx(_brute_accuracy(t, p))


def test_purity_and_scores_dict():
    t = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    p = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    # cluster 0 -> {0, 0}: 2; cluster 1 -> {0, 1, 1, 2}: 2; cluster 2 -> {2, 2}: 2
    assert purity(t, p) == pytest.approx(6 / 8)
    scores = cluster_scores(t, p)
    assert set(scores) == {"nmi", "anmi", "ari", "accuracy", "purity"}
    assert scores["accuracy"] == pytest.approx(6 / 8)
    with pytest.raises(TaglessError):
        nmi(t, p[:-1])


def test_kmeans_inertia_close_to_sklearn():
    x, _ = make_blobs(n_samples=3000, centers=8, n_features=16, cluster_std=2.0, random_state=0)
    ref = KMeans(n_clusters=8, n_init=3, random_state=0).fit(x)
    centres, labels, inertia = kmeans(torch.tensor(x, dtype=torch.float32), 8, n_init=3, seed=0)
    assert centres.shape == (8, 16) and labels.shape == (3000,)
    assert inertia <= ref.inertia_ * 1.01
    # the reported inertia is that of the returned assignment and centres
    xt = torch.tensor(x, dtype=torch.float32)
    assert inertia == pytest.approx(float((xt - centres[labels]).pow(2).sum()), rel=1e-5)
    # assignments are the nearest centres
    assert torch.equal(labels, torch.cdist(xt, centres).argmin(1))


def test_kmeans_deterministic_and_degenerate():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    a = kmeans(x, 6, seed=3)
    b = kmeans(x, 6, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    dup = torch.zeros(10, 3)  # fewer distinct points than k
    _c, lab, inertia = kmeans(dup, 4)
    assert inertia == 0.0 and lab.shape == (10,)
    with pytest.raises(TaglessError):
        kmeans(x, 0)
