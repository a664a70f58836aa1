"""CIFAR-10 / CIFAR-100 in the "python version" pickle format.

`root` is the `cifar-10-batches-py` folder (`data_batch_1..5`, `test_batch`, `batches.meta`)
or the `cifar-100-python` folder (`train`, `test`, `meta`; the 100 fine labels). Each batch
is a pickled dict with bytes keys: b'data' (N x 3072 uint8, rows of R, G, B planes of
32 x 32) and b'labels' / b'fine_labels'. Pickle can run arbitrary code while loading: only
point `root` at CIFAR files you trust (the official archive); there is no pickle-free
release of this format.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from tagless.data.listing import Listing
from tagless.data.materialize import materialize
from tagless.data.splits import limit_only, require_dir, require_file
from tagless.errors import TaglessError

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def _unpickle(path: Path) -> dict:
    """Load one trusted CIFAR pickle (bytes keys, latin1-era format)."""
    with open(require_file(path, "CIFAR file"), "rb") as f:
        try:
            return pickle.load(f, encoding="bytes")
        except Exception as exc:
            raise TaglessError(f"cannot read CIFAR pickle {path}: {exc}") from exc


def _field(d: dict, key: str, path: Path):
    value = d.get(key.encode(), d.get(key))
    if value is None:
        raise TaglessError(f"{path}: missing key {key!r}")
    return value


def _text(v) -> str:
    return v.decode("latin1") if isinstance(v, bytes) else str(v)


def _load(cfg, split: str, name: str, files: dict, meta_file: str, label_key: str, names_key: str):
    root = require_dir(cfg.root, f"{name} folder")
    meta_path = root / meta_file
    classes = [_text(v) for v in _field(_unpickle(meta_path), names_key, meta_path)]
    parts = files[split] if split in files else files["train"] + files["test"]
    images, labels, row_ids, offset = [], [], [], 0
    for fname in parts:
        path = root / fname
        batch = _unpickle(path)
        data = np.asarray(_field(batch, "data", path), np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise TaglessError(f"{path}: data must be N x 3072 uint8, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(_field(batch, label_key, path), np.int64))
        row_ids.append(offset + np.arange(len(data)))
        offset += len(data)
    targets = np.concatenate(labels)
    if len(targets) and (targets.min() < 0 or targets.max() >= len(classes)):
        raise TaglessError(f"{name}: labels outside 0..{len(classes) - 1} in {root}")
    listing = Listing(targets=targets, classes=classes, label_kind="single", name=name,
                      arrays=np.ascontiguousarray(np.concatenate(images)),
                      row_ids=np.concatenate(row_ids), key_files=[str(root / p) for p in parts])
    return materialize(cfg, listing.take(limit_only(len(listing), cfg)), split)


def load_cifar10(cfg, split: str):
    return _load(cfg, split, "cifar10", CIFAR10_FILES, "batches.meta", "labels", "label_names")


def load_cifar100(cfg, split: str):
    return _load(cfg, split, "cifar100", CIFAR100_FILES, "meta", "fine_labels", "fine_label_names")
