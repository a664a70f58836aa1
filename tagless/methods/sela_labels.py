"""SeLa's label pieces besides Sinkhorn: the K-means labeller (the paper's ablation), cluster
priors (non-uniform marginals), and the labels CSV that ``tagless labels`` writes and label
transfer reads (``index,path,head_0,...,head_{T-1}``), and the per-head scores of labels
against the true classes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tagless.errors import TaglessError


def kmeans_labels(features: torch.Tensor, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels from K-means on the L2-normalised features (DeepCluster's Step 2, paper 002
    Sec. 3.3), and a confidence per image: the softmax over clusters of the cosine similarity
    to the centroids (T = 0.1), taken at the assigned cluster. Same seed, same labels on
    every rank."""
    from tagless.eval import kmeans

    x = F.normalize(features.float(), dim=1)
    centres, labels, _ = kmeans(x, k, iters=50, n_init=1, seed=seed)
    sims = x @ F.normalize(centres, dim=1).T
    conf = torch.softmax(sims / 0.1, dim=1).gather(1, labels[:, None]).squeeze(1)
    return labels, conf


def cluster_prior(kind: str, param: float, logits: torch.Tensor, ctx) -> torch.Tensor | None:
    """Column marginals for Sinkhorn: None (uniform) or a fixed shape (zipf: c_r ~ r^-s;
    gauss: c ~ max(0.05, 1 + s z) with seeded z) assigned to the clusters in the order of their
    current predicted mass sum_i softmax(logits)_i (the largest prior mass to the cluster the
    network already favours), as the official code's non-uniform variant does."""
    if kind == "uniform":
        return None
    k = logits.shape[1]
    mass = ctx.all_reduce_sum(torch.softmax(logits.double(), dim=1).sum(0))
    if kind == "zipf":
        shape = torch.arange(1, k + 1, dtype=torch.float64) ** -param
    else:
        z = torch.randn(k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        shape = (1 + param * z).clamp_min(0.05).sort(descending=True).values
    prior = torch.empty(k, dtype=torch.float64)
    prior[torch.argsort(mass.cpu(), descending=True)] = shape
    return (prior / prior.sum()).to(logits.device)


def write_labels_csv(path: str | Path, labels: np.ndarray, paths: list[str] | None) -> Path:
    """``index,path,head_0,...`` for T x N labels (path empty without files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, n = labels.shape
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "path", *[f"head_{h}" for h in range(t)]])
        for i in range(n):
            w.writerow([i, paths[i] if paths else "", *labels[:, i].tolist()])
    return path


def read_labels_csv(path: str | Path, num_images: int, clusters: list[int],
                    paths: list[str] | None = None) -> np.ndarray:
    """T x N labels from a labels CSV, checked against the dataset: every index once, the
    heads the method needs, labels inside each head's K, and the same files when both sides
    have paths. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise TaglessError(f"method.labels_csv: file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["index", "path"]:
        raise TaglessError(f"{path}: expected a header 'index,path,head_0,...' (written by tagless labels)")
    heads = [h for h in rows[0][2:] if h.startswith("head_")]
    if len(heads) < len(clusters):
        raise TaglessError(f"{path}: has {len(heads)} head columns, the method needs {len(clusters)}: set "
                           f"method.head_clusters to the exporting run's")
    labels = np.full((len(clusters), num_images), -1, dtype=np.int64)
    for line, row in enumerate(rows[1:], start=2):
        try:
            i = int(row[0])
            values = [int(v) for v in row[2 : 2 + len(clusters)]]
        except (ValueError, IndexError):
            raise TaglessError(f"{path}:{line}: expected integers for index and heads, got {row}") from None
        if not 0 <= i < num_images:
            raise TaglessError(f"{path}:{line}: index {i} outside the dataset's {num_images} images")
        if paths and row[1] and Path(row[1]).name != Path(paths[i]).name:
            raise TaglessError(f"{path}:{line}: index {i} is {row[1]!r} in the CSV but {paths[i]!r} in the data")
        for h, (v, k) in enumerate(zip(values, clusters)):
            if not 0 <= v < k:
                raise TaglessError(f"{path}:{line}: head_{h} label {v} outside 0..{k - 1}")
        labels[:, i] = values
    missing = np.flatnonzero(labels[0] < 0)
    if len(missing):
        raise TaglessError(f"{path}: no labels for {len(missing)} of {num_images} images (first index {missing[0]}); "
                           f"was it exported from a run on the same data?")
    return labels


def label_scores(labels: np.ndarray, truth: np.ndarray, label_kind: str) -> list[dict]:
    """Per head of ``labels`` (T x N): clusters used, the largest / smallest cluster, and NMI /
    aNMI / ARI (x100) against the true single labels ``truth`` where they exist (paper 002,
    Table A.1)."""
    from tagless.eval import adjusted_nmi, ari, nmi

    truth = np.asarray(truth)
    single = label_kind == "single" and truth.ndim == 1
    known = truth >= 0 if single else np.zeros(len(truth), bool)
    rows = []
    for h, lab in enumerate(labels):
        sizes = np.bincount(lab)
        row = {"head": h, "clusters used": int((sizes > 0).sum()), "largest": int(sizes.max()),
               "smallest": int(sizes[sizes > 0].min())}
        if known.any():
            row.update(nmi=100 * nmi(truth[known], lab[known]), anmi=100 * adjusted_nmi(truth[known], lab[known]),
                       ari=100 * ari(truth[known], lab[known]))
        rows.append(row)
    return rows

