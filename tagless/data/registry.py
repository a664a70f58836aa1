"""`SOURCES` (name -> loader) and `build_dataset(cfg, split)`."""
from __future__ import annotations

from typing import Callable

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
    if len(ds) == 0:
        raise TaglessError(f"data source {cfg.source!r}: the {split!r} split is empty")
    return ds
