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
    scores = label_scores(all_labels, train.targets, train.label_kind)
    text = (f"{len(sizes)} clusters on head 0 over {len(labels)} images; sizes from {int(sizes[sizes > 0].min())} to "
            f"{int(sizes.max())} (an equipartition gives {len(labels) / len(sizes):.1f}).")
    if "nmi" in scores[0]:
        text = f"Head 0's labels reach NMI {scores[0]['nmi']:.1f} against the true classes. " + text
    return [{"title": "Self-labels", "text": text, "table": scores, "images": [grid]},
            {"title": "Cluster sizes (head 0)", "text": size_text(sizes), "table": size_table(sizes), "folded": True}]


def size_table(sizes: np.ndarray, per_row: int = 10, most: int = 200) -> list[dict]:
    """Cluster sizes, largest first, ``per_row`` clusters a row (cells ``c<id>: <images>``), so
    the table stays narrow and short; past ``most`` clusters, the largest and smallest
    ``most / 2``."""
    order = np.argsort(-sizes, kind="stable")
    ranks = np.arange(len(order))
    if len(order) > most:
        ranks = np.concatenate([ranks[: most // 2], ranks[-(most // 2):]])
    rows = []
    for start in range(0, len(ranks), per_row):
        chunk = ranks[start : start + per_row]
        row = {"ranks": f"{chunk[0] + 1}-{chunk[-1] + 1}"}
        row.update({f"+{j}": f"c{int(order[r])}: {int(sizes[order[r]])}" for j, r in enumerate(chunk)})
        rows.append(row)
    return rows


def size_text(sizes: np.ndarray, most: int = 200) -> str:
    q = np.percentile(sizes, [10, 50, 90])
    text = (f"Images per cluster, largest first, {len(sizes)} clusters ({int((sizes == 0).sum())} empty); "
            f"10th / 50th / 90th percentile {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}.")
    if len(sizes) > most:
        text += f" The {most // 2} largest and the {most // 2} smallest are listed."
    return text
