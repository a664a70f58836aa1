"""The self-labels sections of a self-labelling run's report (SeLa, paper 002): per-head
cluster sizes and NMI / aNMI / ARI against the true labels, and an image grid per cluster,
most confident images first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagless.errors import TaglessError
from tagless.methods.sela_labels import label_scores
from tagless.report.plots import plot_image_grid


def cluster_sections(run, out_dir: Path, per_cluster: int = 8, max_clusters: int = 20) -> list[dict]:
    """The sections of a run (:class:`tagless.engine.loaded_run.LoadedRun`) that keeps per-image
    labels ([] for other runs)."""
    try:
        all_labels, confidence = run.self_labels()
    except TaglessError:
        return []
    train = run.split("train")
    labels = all_labels[0]
    sizes = np.bincount(labels)
    order = np.argsort(-sizes)[:max_clusters]
    conf = confidence if confidence is not None else np.zeros(len(labels))
    picks, titles = [], []
    for c in order:
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(-conf[members], kind="stable")][:per_cluster]
        for j in range(per_cluster):
            picks.append(members[j] if j < len(members) else None)
            titles.append(f"c{c} ({sizes[c]})" if j == 0 else "")
    blank = np.zeros_like(train.images[0])
    images = np.stack([train.images[i] if i is not None else blank for i in picks])
    grid = plot_image_grid(images, Path(out_dir) / "clusters.png", titles=titles, nrow=per_cluster,
                           suptitle=f"head 0: the {len(order)} largest clusters, most confident images first")
    size_rows = [{"cluster": int(c), "images": int(sizes[c])} for c in np.argsort(-sizes)]
    text = (f"{len(sizes)} clusters on head 0 over {len(labels)} images; sizes from {int(sizes[sizes > 0].min())} to "
            f"{int(sizes.max())} (an equipartition gives {len(labels) / len(sizes):.1f}).")
    return [{"title": "Self-labels", "text": text, "table": label_scores(all_labels, train.targets, train.label_kind),
             "images": [grid]},
            {"title": "Cluster sizes (head 0)", "text": "", "table": size_rows}]
