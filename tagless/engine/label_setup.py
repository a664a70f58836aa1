"""The run's ``labels`` section applied to its training split: the observed labels (full,
partial or single-positive), the clean validation carve-out, and the split file in the run
directory (``labels.npz``) that ``--resume``, ``labels.split_file`` and the report read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tagless import distributed as dist
from tagless.data.label_modes import LabelSplit, load_label_split, resolve_label_split, save_label_split, split_dataset
from tagless.errors import TaglessError

SPLIT_FILE = "labels.npz"


def labels_active(cfg) -> bool:
    """Whether the ``labels`` section changes anything (a mode, a carve-out or a split file)."""
    lab = cfg.labels
    return lab.mode != "full" or lab.val_fraction > 0 or bool(lab.split_file)


def prepare_labels(cfg, train_set, run_dir: Path, resume: bool):
    """``(train, val or None, split or None)``: the training rows with their observed labels
    and the carved-out rows with their clean labels."""
    if not labels_active(cfg):
        return train_set, None, None
    targets = np.asarray(train_set.targets)
    if targets.ndim != 2:
        raise TaglessError(f"labels.mode={cfg.labels.mode} / labels.val_fraction need multi-label data; "
                           f"{cfg.data.source} gives {train_set.label_kind} labels")
    own = Path(run_dir) / SPLIT_FILE
    split = load_label_split(own, targets) if resume and own.exists() else resolve_label_split(targets, cfg.labels)
    if dist.is_main() and not (resume and own.exists()):
        own.parent.mkdir(parents=True, exist_ok=True)
        save_label_split(split, own)
    train, val = split_dataset(train_set, split)
    kept, images = int((split.observed == 1).sum()), len(split.observed)
    if split.mode == "partial" and dist.is_main() and kept <= images:
        print(f"note: labels.keep_fraction={split.keep_fraction} keeps {kept} positives for {images} images: one per "
              f"image, the same as labels.mode=single_positive on this data", flush=True)
    return train, val, split


def clean_targets(split: LabelSplit | None, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """``DataInfo.clean_targets``: the clean labels of the training rows (int8 N x C on
    ``device``, in the rows of the observed labels) when the run has a label split, else None.
    For a method's diagnostics (EN's selection against the hidden positives), never for training."""
    if split is None:
        return None
    return torch.as_tensor(np.ascontiguousarray(split.full, dtype=np.int8), device=device)


def expected_positives(train_set, val_set, split: LabelSplit | None) -> float | None:
    """Paper 003's K: the mean number of positives per image of the clean labels, on the
    validation carve-out when there is one (as the paper), else on the training split."""
    if val_set is not None:
        clean = np.asarray(val_set.targets)
    elif split is not None:
        clean = np.asarray(split.full)
    else:
        clean = np.asarray(train_set.targets)
    if clean.ndim != 2 or len(clean) == 0:
        return None
    return float((clean == 1).sum(1).mean())
