"""`ImageDataset`: decoded images (uint8 N x H x W x C) with their labels and boxes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

LABEL_KIND_NAMES = ("none", "single", "multi", "partial", "single_positive")


@dataclass
class ImageDataset:
    """Images and labels of one split.

    targets: label_kind 'single' (or 'none'): int64 N, -1 = unlabelled; 'multi', 'partial',
    'single_positive': int8 N x C with 1 = positive, 0 = negative, -1 = unknown / ignored.
    boxes: per image float32 k x 5 (x0, y0, x1, y1 in cached-image pixels, class index).
    extras: per-image side data, each value an array with first dimension N or a list of N
    arrays aligned with `boxes` (e.g. voc 'difficult', coco 'crowd').
    """

    images: np.ndarray
    targets: np.ndarray
    classes: list[str]
    label_kind: str
    boxes: list[np.ndarray] | None = None
    paths: list[str] | None = None
    name: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    # What the source reported: unreadable files it skipped, the cache entry, what it inferred
    # (notes), and each image's size before the resize to image_size (N x 2 of width, height;
    # None when unknown). A subset keeps the first three and its rows of the sizes.
    skipped: list[str] = field(default_factory=list)
    cache_path: str = ""
    notes: list[str] = field(default_factory=list)
    source_sizes: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.label_kind not in LABEL_KIND_NAMES:
            raise ValueError(f"unknown label_kind {self.label_kind!r}")
        if len(self.targets) != n:
            raise ValueError(f"{len(self.targets)} targets for {n} images")
        for what, seq in (("boxes", self.boxes), ("paths", self.paths), *self.extras.items()):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{len(seq)} {what} for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices) -> ImageDataset:
        """A new dataset of the given rows (int indices or a bool mask); images are copied."""
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64).reshape(-1)

        def pick(seq):
            if seq is None:
                return None
            return seq[idx] if isinstance(seq, np.ndarray) else [seq[i] for i in idx]

        return ImageDataset(
            images=np.ascontiguousarray(self.images[idx]),
            targets=self.targets[idx],
            classes=list(self.classes),
            label_kind=self.label_kind,
            boxes=pick(self.boxes),
            paths=pick(self.paths),
            name=self.name,
            extras={k: pick(v) for k, v in self.extras.items()},
            skipped=list(self.skipped), cache_path=self.cache_path, notes=list(self.notes),
            source_sizes=pick(self.source_sizes),
        )
