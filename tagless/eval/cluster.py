"""Clustering quality against ground-truth labels, and k-means on the device.

[0] Paper 002 (SeLa, ICLR 2020), appendix Table A.1: NMI, adjusted NMI and adjusted Rand
    index of the self-labels against ImageNet validation labels; K-means baseline.
[1] Vinh, Epps, Bailey, Information Theoretic Measures for Clusterings Comparison, JMLR
    2010: NMI, the expected mutual information E[MI] under the hypergeometric model and
    AMI = (MI - E[MI]) / (mean(H(U), H(V)) - E[MI]) (eq. 24a with the arithmetic mean).
[2] Hubert & Arabie, Comparing Partitions, J. Classification 1985: adjusted Rand index.
[3] Arthur & Vassilvitskii, k-means++, SODA 2007 (greedy variant with 2 + log k candidate
    centres per step, as scikit-learn uses).

Conventions follow scikit-learn's ``normalized_mutual_info_score`` /
``adjusted_mutual_info_score`` (``average_method='arithmetic'``) / ``adjusted_rand_score``,
including their limit cases (two identical labelings score 1). Metrics are computed in
float64 on the CPU from the contingency table; labels may be any integers.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln

from tagless.errors import TaglessError

_EPS = np.finfo(np.float64).eps


def _labels(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise TaglessError(f"{name} must be 1-D, got shape {x.shape}")
    return x


def contingency_matrix(labels_true, labels_pred) -> np.ndarray:
    """n_true_classes x n_pred_clusters table of co-occurrence counts (int64)."""
    t, p = _labels(labels_true, "labels_true"), _labels(labels_pred, "labels_pred")
    if t.shape != p.shape:
        raise TaglessError(f"labels_true has {t.shape[0]} entries but labels_pred has {p.shape[0]}")
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    n_t = int(ti.max()) + 1 if t.size else 0
    n_p = int(pi.max()) + 1 if p.size else 0
    table = np.zeros((n_t, n_p), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts / n
    return float(-(p * np.log(p)).sum())


def _mutual_info(table: np.ndarray) -> float:
    n = table.sum()
    i, j = np.nonzero(table)
    nij = table[i, j].astype(np.float64)
    a = table.sum(1).astype(np.float64)[i]
    b = table.sum(0).astype(np.float64)[j]
    mi = (nij / n * (np.log(nij) + math.log(n) - np.log(a) - np.log(b))).sum()
    return float(max(mi, 0.0))


def _trivial(table: np.ndarray) -> bool:
    """Both labelings have one class (or no samples): scikit-learn scores this 1."""
    return table.shape[0] == table.shape[1] and table.shape[0] <= 1


def nmi(labels_true, labels_pred) -> float:
    """Normalised mutual information MI / ((H(U) + H(V)) / 2) [1] (scikit-learn's default)."""
    table = contingency_matrix(labels_true, labels_pred)
    if _trivial(table):
        return 1.0
    mi = _mutual_info(table)
    if mi <= 0:
        return 0.0
    normalizer = 0.5 * (_entropy(table.sum(1)) + _entropy(table.sum(0)))
    return float(mi / max(normalizer, _EPS))


def expected_mutual_info(table: np.ndarray, chunk: int = 1 << 22) -> float:
    """E[MI] of two labelings with the table's marginals under the permutation
    (hypergeometric) model [1] eq. 24b, vectorised over (i, j, n_ij) in chunks of rows."""
    n = int(table.sum())
    a = table.sum(1).astype(np.int64)
    b = table.sum(0).astype(np.int64)
    a, b = a[a > 0], b[b > 0]
    if n == 0 or len(a) == 0 or len(b) == 0:
        return 0.0
    lg_n = gammaln(n + 1)
    lg_a, lg_na = gammaln(a + 1), gammaln(n - a + 1)
    lg_b, lg_nb = gammaln(b + 1), gammaln(n - b + 1)
    total = 0.0
    # the number of (i, j, n_ij) terms of one row is sum_j len(range(lo_ij, hi_ij + 1))
    rows_per_chunk = max(1, chunk // max(1, int(np.minimum(a.max(), b).sum())))
    for start in range(0, len(a), rows_per_chunk):
        ai = a[start:start + rows_per_chunk][:, None]  # R x 1
        lo = np.maximum(1, ai + b[None, :] - n)  # R x K
        hi = np.minimum(ai, b[None, :])
        length = np.maximum(hi - lo + 1, 0).reshape(-1)
        if length.sum() == 0:
            continue
        pair = np.repeat(np.arange(length.size), length)
        offset = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
        nij = lo.reshape(-1)[pair] + offset
        r = pair // len(b) + start
        c = pair % len(b)
        av, bv = a[r], b[c]
        log_p = (lg_a[r] + lg_b[c] + lg_na[r] + lg_nb[c] - lg_n - gammaln(nij + 1)
                 - gammaln(av - nij + 1) - gammaln(bv - nij + 1) - gammaln(n - av - bv + nij + 1))
        term = nij / n * (np.log(nij) + math.log(n) - np.log(av) - np.log(bv))
        total += float((term * np.exp(log_p)).sum())
    return total


def adjusted_nmi(labels_true, labels_pred) -> float:
    """Adjusted mutual information (the 'adjusted NMI' of paper 002) [1]:
    (MI - E[MI]) / ((H(U) + H(V)) / 2 - E[MI]); equals scikit-learn's
    ``adjusted_mutual_info_score`` (arithmetic mean), implemented from the E[MI] formula."""
    table = contingency_matrix(labels_true, labels_pred)
    if _trivial(table):
        return 1.0
    mi = _mutual_info(table)
    emi = expected_mutual_info(table)
    normalizer = 0.5 * (_entropy(table.sum(1)) + _entropy(table.sum(0)))
    denominator = normalizer - emi
    # keep the sign when rounding makes E[MI] exceed the normaliser (a perfect match)
    denominator = min(denominator, -_EPS) if denominator < 0 else max(denominator, _EPS)
    return float((mi - emi) / denominator)


def ari(labels_true, labels_pred) -> float:
    """Adjusted Rand index [2] from pair counts (exact integer arithmetic)."""
    table = contingency_matrix(labels_true, labels_pred)
    n = int(table.sum())

    def comb2(v: np.ndarray) -> int:
        v = v.astype(np.int64)
        return int((v * (v - 1) // 2).sum())

    sum_ij, sum_a, sum_b = comb2(table), comb2(table.sum(1)), comb2(table.sum(0))
    pairs = n * (n - 1) // 2
    if sum_a == sum_b == sum_ij:  # identical partitions (includes the 0 / 0 limit cases)
        return 1.0
    expected = sum_a * sum_b / pairs
    return float((sum_ij - expected) / (0.5 * (sum_a + sum_b) - expected))


def hungarian_accuracy(labels_true, labels_pred) -> float:
    """Accuracy under the best one-to-one map of clusters to classes (Hungarian matching
    with ``scipy.optimize.linear_sum_assignment``). Clusters left unmatched (more clusters
    than classes) count as errors."""
    table = contingency_matrix(labels_true, labels_pred)
    if table.size == 0:
        raise TaglessError("no labels to score")
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def purity(labels_true, labels_pred) -> float:
    """Fraction of samples whose cluster's majority class is their class."""
    table = contingency_matrix(labels_true, labels_pred)
    if table.size == 0:
        raise TaglessError("no labels to score")
    return float(table.max(0).sum() / table.sum())


def cluster_scores(labels_true, labels_pred) -> dict[str, float]:
    """All clustering metrics of paper 002 (Table A.1) plus Hungarian accuracy and purity,
    as fractions: ``{'nmi', 'anmi', 'ari', 'accuracy', 'purity'}``."""
    return {
        "nmi": nmi(labels_true, labels_pred),
        "anmi": adjusted_nmi(labels_true, labels_pred),
        "ari": ari(labels_true, labels_pred),
        "accuracy": hungarian_accuracy(labels_true, labels_pred),
        "purity": purity(labels_true, labels_pred),
    }


# ----------------------------------------------------------------------------- k-means


def _sq_dists(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, clamped at 0 (rounding)."""
    return (x_sq[:, None] - 2 * (x @ c.T) + c.pow(2).sum(1)[None, :]).clamp_(min=0)


def _assign(x, x_sq, c, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre and squared distance of every row, chunked over rows."""
    labels, dists = [], []
    for s in range(0, x.shape[0], chunk):
        d = _sq_dists(x[s:s + chunk], x_sq[s:s + chunk], c)
        m, i = d.min(dim=1)
        labels.append(i)
        dists.append(m)
    return torch.cat(labels), torch.cat(dists)


def _kmeans_pp(x, x_sq, k: int, gen: torch.Generator, chunk: int) -> torch.Tensor:
    """Greedy k-means++ [3]: sample 2 + log(k) candidates proportionally to D^2 and keep
    the one that lowers the potential most."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=gen, device=x.device)
    centres = [x[first]]
    closest = _sq_dists(x, x_sq, x[first])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:  # fewer distinct points than k: any point will do
            cand = torch.randint(n, (trials,), generator=gen, device=x.device)
        else:
            cand = torch.multinomial(closest / total, trials, replacement=True, generator=gen)
        d = torch.minimum(closest[None, :], torch.cat([_sq_dists(x[s:s + chunk], x_sq[s:s + chunk], x[cand])
                                                       for s in range(0, n, chunk)]).T)
        best = int(d.sum(1).argmin())
        closest = d[best]
        centres.append(x[cand[best]][None])
    return torch.cat(centres)


def _lloyd(x, x_sq, centres, iters, tol_abs, chunk):
    k = centres.shape[0]
    for _ in range(iters):
        labels, dists = _assign(x, x_sq, centres, chunk)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = sums / counts.clamp(min=1)[:, None]
        empty = counts == 0
        if empty.any():  # relocate empty clusters to the points farthest from their centres
            far = dists.topk(int(empty.sum())).indices
            new[empty] = x[far]
        shift = (new - centres).pow(2).sum()
        centres = new
        if shift <= tol_abs:
            break
    return centres


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 100,
    n_init: int = 1,
    seed: int = 0,
    tol: float = 1e-4,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Lloyd's k-means with greedy k-means++ initialisation [3], on x's device (paper 002's
    K-means baseline).

    Args:
        x: N x D features (float tensor, CPU or CUDA); computed in fp32 (fp64 if given).
        k: number of clusters. iters: Lloyd iterations per run. n_init: runs with
            different seeds; the lowest inertia wins. seed: seeds a ``torch.Generator``.
        tol: stop when the squared centre shift is <= tol * mean per-feature variance
            (scikit-learn's convention).
        chunk_size: rows per distance block (default: ~64 MB of distances).

    Returns:
        (centroids k x D, assignments N int64, inertia = sum of squared distances to the
        assigned centroid).
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise TaglessError("x must be an N x D tensor")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise TaglessError(f"k={k} must be in [1, number of points {n}]")
    if n_init < 1 or iters < 1:
        raise TaglessError("iters and n_init must be >= 1")
    x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if chunk_size is None:
        chunk_size = max(1, (64 * 2**20) // (max(k, 1) * x.element_size()))
    x_sq = x.pow(2).sum(1)
    tol_abs = float(tol * x.var(0, unbiased=False).mean())
    best = None
    for run in range(n_init):
        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed + run)
        centres = _lloyd(x, x_sq, _kmeans_pp(x, x_sq, k, gen, chunk_size), iters, tol_abs, chunk_size)
        labels, _ = _assign(x, x_sq, centres, chunk_size)
        # exact inertia from differences (the expanded form loses precision far from 0)
        inertia = float(sum((x[s:s + chunk_size] - centres[labels[s:s + chunk_size]]).pow(2).sum()
                            for s in range(0, n, chunk_size)))
        if best is None or inertia < best[2]:
            best = (centres, labels, inertia)
    return best
