"""scikit-learn's digits (1797 real 8x8 handwritten digits) and scenes composed from them."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from tagless.data.dataset import ImageDataset
from tagless.data.decode import resize_batch
from tagless.data.scenes import digit_scenes
from tagless.data.splits import choose, split_indices

_SPLIT_CODE = {"train": 0, "test": 1, "all": 2}


@lru_cache(maxsize=1)
def digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 1797 x 8 x 8 with 0..16 scaled to 0..255, int64 labels); read-only arrays."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    grey = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    grey.flags.writeable = labels.flags.writeable = False
    return grey, labels


def load_digits(cfg, split: str) -> ImageDataset:
    """Digits upscaled (bilinear) to image_size, grey replicated to RGB; seeded split."""
    grey, labels = digit_arrays()
    idx = choose(len(grey), cfg, split)
    return ImageDataset(images=resize_batch(grey[idx], cfg.image_size), targets=labels[idx].copy(),
                        classes=[str(d) for d in range(10)], label_kind="single", name="digits")


def scene_count(cfg, split: str) -> int:
    """Scenes in a split: scene_count is shared by train and test as test_fraction says."""
    n_test = round(cfg.scene_count * cfg.test_fraction)
    count = {"train": cfg.scene_count - n_test, "test": n_test, "all": cfg.scene_count}[split]
    return min(count, cfg.limit) if cfg.limit else count


def load_digit_scenes(cfg, split: str) -> ImageDataset:
    """Scenes of the split's digits ('train' scenes use only the train digits of `digits`)."""
    grey, labels = digit_arrays()
    pool = np.sort(split_indices(len(grey), split, cfg.test_fraction, cfg.split_seed))
    return digit_scenes(
        grey[pool], labels[pool], scene_count(cfg, split), image_size=cfg.image_size,
        digits_per_scene=tuple(cfg.scene_digits), digit_size=tuple(cfg.scene_digit_size),
        max_overlap=cfg.scene_max_overlap, noise_std=cfg.scene_noise_std,
        seed=[cfg.split_seed, _SPLIT_CODE[split]],
    )
