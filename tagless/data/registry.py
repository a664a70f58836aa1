"""`SOURCES` (name -> loader) and `build_dataset(cfg, split)`."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tagless.data.config import DataConfig, check_split
from tagless.data.dataset import ImageDataset
from tagless.data.sources.cifar import load_cifar10, load_cifar100
from tagless.data.sources.coco import load_coco
from tagless.data.sources.csvfile import load_csv
from tagless.data.sources.digits import load_digit_scenes, load_digits
from tagless.data.sources.folder import load_image_folder
from tagless.data.sources.voc import load_voc
from tagless.errors import TaglessError

SOURCES: dict[str, Callable[[DataConfig, str], ImageDataset]] = {
    "digits": load_digits,
    "digit_scenes": load_digit_scenes,
    "image_folder": load_image_folder,
    "csv": load_csv,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "coco": load_coco,
    "voc": load_voc,
}


def build_dataset(cfg: DataConfig, split: str = "train") -> ImageDataset:
    """Load `split` ('train' | 'test' | 'all') of `cfg.source`, decoded to uint8 N x S x S x 3."""
    cfg.validate()
    check_split(split)
    ds = SOURCES[cfg.source](cfg, split)
    if split == "train" and (cfg.imbalance != "none" or cfg.class_keep):
        ds = ds.subset(imbalanced_indices(ds, cfg))
    if len(ds) == 0:
        raise TaglessError(f"data source {cfg.source!r}: the {split!r} split is empty")
    return ds


def class_keep_fractions(cfg: DataConfig, num_classes: int) -> list[float]:
    """Paper 002, Sec. 4.5 (imbalanced CIFAR-10): light removes 50% of one class (the last,
    CIFAR-10's truck); heavy removes "10% of one class, 20% of the second class and so on",
    read here as class c keeping 1 - 0.1 c (class 0 untouched, the last keeping 10% of ten).
    Or ``class_keep``, one fraction per class."""
    if cfg.class_keep:
        if len(cfg.class_keep) != num_classes:
            raise TaglessError(f"data.class_keep has {len(cfg.class_keep)} fractions for {num_classes} classes")
        return list(cfg.class_keep)
    if cfg.imbalance == "light":
        return [1.0] * (num_classes - 1) + [0.5]
    return [max(0.0, 1 - 0.1 * c) for c in range(num_classes)]


def imbalanced_indices(ds: ImageDataset, cfg: DataConfig) -> np.ndarray:
    """Sorted indices kept: a seeded share of each class (data.split_seed)."""
    if ds.label_kind != "single":
        raise TaglessError(f"data.imbalance / data.class_keep need single labels, got {ds.label_kind}")
    keep = class_keep_fractions(cfg, len(ds.classes))
    rng = np.random.default_rng([cfg.split_seed, 45])
    targets = np.asarray(ds.targets)
    chosen = [np.flatnonzero(targets < 0)]
    for c, fraction in enumerate(keep):
        members = np.flatnonzero(targets == c)
        chosen.append(rng.permutation(members)[: round(fraction * len(members))])
    return np.sort(np.concatenate(chosen))
