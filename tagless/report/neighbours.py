"""The MLS neighbour grid of a run's report (paper 000, supplement Fig. 5-6: top-k neighbours
of query images, found in the backbone queue Q_g).

For a run whose last checkpoint holds MLS's queues (``method`` state keys ``queue_g.items``,
``queue_index.items`` and ``queue.filled``, see tagless/methods/mls.py), a few training images
are sampled as queries; their pooled backbone features (eval view; the key encoder's backbone
``encoder_k.net.0.*`` when the checkpoint has it, since Q_g holds the key encoder's features,
else the checkpoint's backbone) are matched by cosine similarity against the filled entries
of Q_g, and each query is drawn in one row followed by the training images of its k nearest
entries (their ``queue_index``). A query's own image may appear among its neighbours: the
queue holds earlier augmented views of it.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tagless.report.plots import plot_image_grid

QUEUE_KEYS = ("queue_g.items", "queue_index.items", "queue.filled")


def queue_neighbours(features: torch.Tensor, queue_g: torch.Tensor, filled: int,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions B x k, cosine B x k): the k filled entries (0..filled-1) of ``queue_g`` nearest
    to each row of ``features``, most similar first."""
    sim = F.normalize(features.float(), dim=1) @ F.normalize(queue_g[:filled].float(), dim=1).t()
    top, pos = sim.topk(min(k, filled), dim=1)
    return pos.numpy(), top.numpy()


def neighbour_sections(run, out_dir, queries: int = 6, k: int = 8, seed: int = 0) -> list[dict]:
    """The "MLS neighbours" report section of an MLS run (:class:`tagless.engine.loaded_run.
    LoadedRun`; [] for other runs): a PNG grid, one row per sampled query image (first) and its
    k nearest Q_g entries, and a table of indices."""
    from tagless.engine.checkpoint_features import compute_features

    state = run.method_state
    if not all(key in state for key in QUEUE_KEYS):
        return []
    filled = int(state["queue.filled"])
    if filled == 0:
        return [{"title": "MLS neighbours", "text": "The queue Q_g of the last checkpoint is still empty."}]
    dataset = run.split("train")
    prefix = "encoder_k.net.0."
    key_backbone = {name[len(prefix):]: v for name, v in state.items() if name.startswith(prefix)}
    loaded = run.backbone
    if key_backbone:  # a copy: the run's own backbone stays what the other sections score
        loaded = dataclasses.replace(loaded, backbone=copy.deepcopy(loaded.backbone))
        loaded.backbone.load_state_dict(key_backbone)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(dataset), size=min(queries, len(dataset)), replace=False))
    feats = torch.as_tensor(compute_features(loaded, dataset.images[picks], device=run.device)).cpu()
    pos, sim = queue_neighbours(feats, state["queue_g.items"], filled, k)
    index = state["queue_index.items"].cpu().numpy()[pos]  # dataset indices of the neighbours
    rows, titles, table = [], [], []
    for i, q in enumerate(picks):
        rows += [q, *index[i]]
        titles += [f"query {q}", *(f"{j} ({s:.2f})" for j, s in zip(index[i], sim[i]))]
        table.append({"query": int(q), "neighbours (dataset index)": " ".join(str(int(j)) for j in index[i]),
                      "mean cosine": float(sim[i].mean())})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = plot_image_grid(dataset.images[np.asarray(rows)], out_dir / "mls_neighbours.png", titles=titles,
                                 nrow=pos.shape[1] + 1, suptitle="MLS: query, then its nearest entries of Q_g")
    text = (f"{len(picks)} random training images (first column) and their {pos.shape[1]} nearest entries of the "
            f"backbone queue Q_g ({filled} filled entries, cosine similarity in brackets) under the key encoder's "
            f"backbone: the positives MLS would mine for them. A query's own image can appear: Q_g holds earlier "
            f"views of it.")
    return [{"title": "MLS neighbours", "text": text, "table": table, "images": [grid]}]
