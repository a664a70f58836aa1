"""Listing -> ImageDataset: decode (through the cache), drop unreadable files, scale boxes."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from tagless.data import decode
from tagless.data.cache import cache_key, cached
from tagless.data.dataset import ImageDataset
from tagless.data.listing import Listing
from tagless.errors import TaglessError

log = logging.getLogger("tagless.data")


class _Store:
    """Allocates the image array: in memory, or as `images.npy` in a cache folder."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder

    def new(self, shape) -> np.ndarray:
        if self.folder is None:
            return np.zeros(shape, np.uint8)
        return open_memmap(self.folder / "images.npy", mode="w+", dtype=np.uint8, shape=shape)

    def compact(self, images: np.ndarray, keep: np.ndarray) -> np.ndarray:
        if self.folder is None:
            return images[keep]
        idx = np.flatnonzero(keep)
        kept_file = self.folder / "kept.npy"
        kept = open_memmap(kept_file, mode="w+", dtype=np.uint8, shape=(len(idx), *images.shape[1:]))
        for s in range(0, len(idx), 1024):
            kept[s: s + 1024] = images[idx[s: s + 1024]]
        kept.flush()
        os.replace(kept_file, self.folder / "images.npy")
        return np.load(self.folder / "images.npy", mmap_mode="r")


def _scale_boxes(boxes: list[np.ndarray], sizes: np.ndarray, size: int) -> list[np.ndarray]:
    out = []
    for b, (w, h) in zip(boxes, sizes):
        b = np.array(b, dtype=np.float32).reshape(-1, 5)
        b[:, [0, 2]] *= size / w
        b[:, [1, 3]] *= size / h
        out.append(b)
    return out


def _decode(cfg, listing: Listing, store: _Store) -> tuple[ImageDataset, list[str], int]:
    n, size = len(listing), cfg.image_size
    images = store.new((n, size, size, 3))
    if listing.arrays is not None:
        sizes, errors = decode.resize_into(images, listing.arrays, size), []
    else:
        sizes, errors = decode.decode_into(images, listing.paths, size, cfg.decode_workers,
                                           stop_on_error=cfg.on_corrupt == "fail", max_pixels=cfg.max_image_pixels)
    skipped = [listing.paths[i] for i, _ in errors]
    if errors and cfg.on_corrupt == "fail":
        i, reason = errors[0]
        raise TaglessError(f"cannot read image {listing.paths[i]}: {reason}")
    keep = np.ones(n, bool)
    for i, reason in errors:
        keep[i] = False
        log.warning("skipping unreadable image %s (%s)", listing.paths[i], reason)
    if errors:
        log.warning("%s: skipped %d of %d images", listing.name, len(errors), n)
        if not keep.any():
            raise TaglessError(f"{listing.name}: none of the {n} images could be read")
        images = store.compact(images, keep)
        listing, sizes = listing.take(np.flatnonzero(keep)), sizes[keep]
    ds = ImageDataset(
        images=images, targets=listing.targets, classes=list(listing.classes),
        label_kind=listing.label_kind,
        boxes=None if listing.boxes is None else _scale_boxes(listing.boxes, sizes, size),
        paths=listing.paths, name=listing.name, extras=dict(listing.extras),
        skipped=skipped, source_sizes=np.asarray(sizes, np.int64).reshape(-1, 2),
    )
    return ds, skipped, n


def materialize(cfg, listing: Listing, split: str) -> ImageDataset:
    """Decode a listing into an ImageDataset, through the disk cache when `cfg.cache_dir` is set.

    In-memory arrays already at image_size are used as they are (no cache)."""
    if len(listing) == 0:
        raise TaglessError(f"{listing.name}: no images in the {split!r} split")
    size = cfg.image_size
    if listing.arrays is not None and listing.arrays.shape[1:] == (size, size, 3):
        ds = ImageDataset(images=listing.arrays, targets=listing.targets,
                          classes=list(listing.classes), label_kind=listing.label_kind,
                          boxes=listing.boxes, paths=listing.paths, name=listing.name,
                          extras=dict(listing.extras), source_sizes=np.full((len(listing), 2), size))
    elif not cfg.cache_dir:
        ds = _decode(cfg, listing, _Store())[0]
    else:
        key = cache_key(cfg, listing, split)
        folder = Path(cfg.cache_dir).expanduser() / f"{listing.name}-{split}-{size}px-{key[:20]}"
        ds = cached(folder, key, lambda tmp: _decode(cfg, listing, _Store(tmp)))
    ds.notes = list(listing.notes)
    return ds
