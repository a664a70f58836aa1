"""``tagless labels RUN_DIR``: a self-labelling run's per-image labels as a CSV, scored against
the true labels when the data has them, and the self-labels section of its report (cluster
sizes, NMI / aNMI / ARI per head, an image grid per cluster, most confident first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagless.errors import TaglessError


@dataclass
class RunLabels:
    labels: np.ndarray  # T x N
    confidence: np.ndarray | None  # N (head 0)
    dataset: object  # the run's training split
    run_dir: Path


def load_run_labels(run_dir: str | Path) -> RunLabels:
    """The labels a run's last checkpoint holds, with its training data (rebuilt from the
    run's own data config, through the cache)."""
    from tagless.config import config_from_dict
    from tagless.data import build_dataset
    from tagless.engine.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    state = ckpt.get("method", {})
    if "labels" not in state:
        raise TaglessError(f"{run_dir}: the run's method ({ckpt['config']['method']['name']}) keeps no per-image "
                           f"labels; tagless labels reads self-labelling runs (method.name=sela)")
    cfg = config_from_dict(ckpt["config"])
    dataset = build_dataset(cfg.data, "train")
    labels = state["labels"].cpu().numpy()
    if labels.shape[1] != len(dataset):
        raise TaglessError(f"{run_dir}: {labels.shape[1]} labels but the data now has {len(dataset)} training images "
                           f"(did the data change since the run?)")
    conf = state["confidence"].cpu().numpy() if "confidence" in state else None
    return RunLabels(labels, conf, dataset, run_dir)


def head_scores(run: RunLabels) -> list[dict]:
    """Per head: clusters used, the largest / smallest cluster, and NMI / aNMI / ARI (x100)
    against the true single labels where they exist (paper 002, Table A.1)."""
    from tagless.eval import adjusted_nmi, ari, nmi

    truth = np.asarray(run.dataset.targets)
    single = run.dataset.label_kind == "single" and truth.ndim == 1
    known = truth >= 0 if single else np.zeros(len(truth), bool)
    rows = []
    for h, lab in enumerate(run.labels):
        sizes = np.bincount(lab)
        row = {"head": h, "clusters used": int((sizes > 0).sum()), "largest": int(sizes.max()),
               "smallest": int(sizes[sizes > 0].min())}
        if known.any():
            row.update(nmi=100 * nmi(truth[known], lab[known]), anmi=100 * adjusted_nmi(truth[known], lab[known]),
                       ari=100 * ari(truth[known], lab[known]))
        rows.append(row)
    return rows


def export_labels(run_dir: str | Path, out: str | Path | None = None) -> dict:
    """Write ``index,path,head_0,...`` (default RUN_DIR/labels.csv); returns the file and the
    per-head scores."""
    from tagless.methods.sela_labels import write_labels_csv
    from tagless.tables import format_table

    run = load_run_labels(run_dir)
    path = write_labels_csv(out or run.run_dir / "labels.csv", run.labels, run.dataset.paths)
    rows = head_scores(run)
    print(format_table(rows, title=f"self-labels of {run.run_dir} ({run.labels.shape[1]} images, "
                                   f"{len(rows)} heads; nmi/anmi/ari against the true labels, x100)"))
    print(f"labels: {path}")
    return {"file": str(path), "images": int(run.labels.shape[1]), "heads": rows}


def cluster_sections(run_dir: str | Path, out_dir: Path, per_cluster: int = 8, max_clusters: int = 20) -> list[dict]:
    """The report sections of a self-labelling run (none for runs without labels)."""
    from tagless.report.plots import plot_image_grid

    try:
        run = load_run_labels(run_dir)
    except TaglessError:
        return []
    labels = run.labels[0]
    sizes = np.bincount(labels)
    order = np.argsort(-sizes)[:max_clusters]
    conf = run.confidence if run.confidence is not None else np.zeros(len(labels))
    picks, titles = [], []
    for c in order:
        members = np.flatnonzero(labels == c)
        members = members[np.argsort(-conf[members], kind="stable")][:per_cluster]
        for j in range(per_cluster):
            picks.append(members[j] if j < len(members) else None)
            titles.append(f"c{c} ({sizes[c]})" if j == 0 else "")
    blank = np.zeros_like(run.dataset.images[0])
    images = np.stack([run.dataset.images[i] if i is not None else blank for i in picks])
    grid = plot_image_grid(images, out_dir / "clusters.png", titles=titles, nrow=per_cluster,
                           suptitle=f"head 0: the {len(order)} largest clusters, most confident images first")
    size_rows = [{"cluster": int(c), "images": int(sizes[c])} for c in np.argsort(-sizes)]
    text = (f"{len(sizes)} clusters on head 0 over {len(labels)} images; sizes from {int(sizes[sizes > 0].min())} to "
            f"{int(sizes.max())} (an equipartition gives {len(labels) / len(sizes):.1f}).")
    return [{"title": "Self-labels", "text": text, "table": head_scores(run), "images": [grid]},
            {"title": "Cluster sizes (head 0)", "text": "", "table": size_rows}]
