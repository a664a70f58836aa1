"""`Listing`: what a source found (files or raw arrays, labels, boxes) before decoding."""
from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Listing:
    """Images to decode with their labels. Exactly one of `paths` / `arrays` is set.

    boxes are in source-image pixels (scaled when decoding); `arrays` are uint8 N x h x w x C
    already-decoded images (CIFAR) with `row_ids` naming their rows in `key_files`."""

    targets: np.ndarray
    classes: list[str]
    label_kind: str
    name: str
    paths: list[str] | None = None
    arrays: np.ndarray | None = None
    row_ids: np.ndarray | None = None
    boxes: list[np.ndarray] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    key_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the source inferred, for `tagless data`

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, idx) -> Listing:
        """The listing restricted to rows `idx` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)

        def pick(seq):
            if seq is None:
                return None
            return seq[idx] if isinstance(seq, np.ndarray) else [seq[i] for i in idx]

        return Listing(
            targets=self.targets[idx], classes=self.classes, label_kind=self.label_kind,
            name=self.name, paths=pick(self.paths), arrays=pick(self.arrays),
            row_ids=pick(self.row_ids), boxes=pick(self.boxes),
            extras={k: pick(v) for k, v in self.extras.items()}, key_files=self.key_files, notes=self.notes,
        )

    @staticmethod
    def concat(parts: list[Listing]) -> Listing:
        """Rows of several listings with the same classes, one after another."""
        first = parts[0]
        if len(parts) == 1:
            return first

        def join(seqs):
            if seqs[0] is None:
                return None
            return (np.concatenate(seqs) if isinstance(seqs[0], np.ndarray)
                    else functools.reduce(operator.iadd, seqs, []))

        return Listing(
            targets=np.concatenate([p.targets for p in parts]), classes=first.classes,
            label_kind=first.label_kind, name=first.name,
            paths=join([p.paths for p in parts]), arrays=join([p.arrays for p in parts]),
            row_ids=join([p.row_ids for p in parts]), boxes=join([p.boxes for p in parts]),
            extras={k: join([p.extras[k] for p in parts]) for k in first.extras},
            key_files=functools.reduce(operator.iadd, (p.key_files for p in parts), []),
            notes=list(dict.fromkeys(n for p in parts for n in p.notes)),
        )
