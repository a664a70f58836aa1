"""Seeded train/test splits and the `limit` rule, shared by all sources."""
from __future__ import annotations

import numpy as np

from tagless.errors import TaglessError


def split_indices(n: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Indices of `split` ('train' | 'test' | 'all') in seeded-shuffle order.

    The test part is the first round(n * test_fraction) items of one permutation of range(n)
    drawn from `seed`, so train and test are disjoint and cover everything."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    return {"train": perm[n_test:], "test": perm[:n_test], "all": perm}[split]


def choose(n: int, cfg, split: str) -> np.ndarray:
    """Sorted indices of a seeded split, cut to the first `cfg.limit` of its shuffled order."""
    part = split_indices(n, split, cfg.test_fraction, cfg.split_seed)
    if cfg.limit:
        part = part[: cfg.limit]
    return np.sort(part)


def limit_only(n: int, cfg) -> np.ndarray:
    """For sources with a given split: all indices, or `cfg.limit` of them after a seeded shuffle."""
    if not cfg.limit or cfg.limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.split_seed).permutation(n)[: cfg.limit])


def split_names(cfg, split: str, defaults: tuple[str, str] = ("train", "test")) -> list[str]:
    """On-disk names of a split for sources with given splits ('all' = train then test): the
    config's names, or the source's ``defaults`` where the config leaves them empty."""
    train = cfg.train_split_name or defaults[0]
    test = cfg.test_split_name or defaults[1]
    return {"train": [train], "test": [test]}.get(split, [train, test])


def require_dir(path: str, what: str):
    """Return `path` as a Path, or raise TaglessError naming it when it is not a folder."""
    from pathlib import Path

    if not path:
        raise TaglessError(f"data.root is empty: set it to the {what}")
    p = Path(path).expanduser().absolute()
    if not p.is_dir():
        raise TaglessError(f"{what} not found: {p}")
    return p


def require_file(path, what: str):
    from pathlib import Path

    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise TaglessError(f"{what} not found: {p}")
    return p
