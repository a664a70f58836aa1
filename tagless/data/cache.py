"""On-disk cache of decoded datasets: one folder per key, written atomically.

A cache entry `<cache_dir>/<name>-<split>-<size>px-<key>/` holds `images.npy` (uint8
N x H x W x 3, opened memory-mapped), `meta.npz` (targets, boxes, extras; plain arrays, read
with allow_pickle=False) and `manifest.json` (classes, label kind, paths, skipped files).
The key hashes the format version, source, root, split, image size, the corrupt-file
policy, every image file's path, size and mtime, and the labels, so any change of the
inputs makes a new entry. An entry is built in a temporary folder renamed into place at
the end: an interrupted build leaves no entry (only a `.tmp-*` folder that is ignored).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagless.data.dataset import ImageDataset
from tagless.files import chmod_default

log = logging.getLogger("tagless.data")

FORMAT = "tagless-data-cache-v1"


def _stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _hash_arrays(h, seqs) -> None:
    for a in seqs:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())


def cache_key(cfg, listing, split: str) -> str:
    """Hex digest identifying the decoded result of `listing` under `cfg`."""
    h = hashlib.sha256()
    head = {
        "format": FORMAT, "source": cfg.source, "split": split, "name": listing.name,
        "root": os.path.realpath(cfg.root) if cfg.root else "",
        "image_size": cfg.image_size, "on_corrupt": cfg.on_corrupt,
        "classes": list(listing.classes), "label_kind": listing.label_kind,
        "key_files": [[f, _stat(f)] for f in listing.key_files],
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    if listing.paths is not None:
        h.update(json.dumps([[p, _stat(p)] for p in listing.paths]).encode())
    if listing.row_ids is not None:
        _hash_arrays(h, [listing.row_ids.astype(np.int64)])
    _hash_arrays(h, [listing.targets])
    if listing.boxes is not None:
        _hash_arrays(h, listing.boxes)
    for k in sorted(listing.extras):
        h.update(k.encode())
        v = listing.extras[k]
        _hash_arrays(h, [v] if isinstance(v, np.ndarray) else v)
    return h.hexdigest()


def _ragged_save(arrays: dict, name: str, seq: list[np.ndarray]) -> None:
    arrays[name] = np.concatenate([np.asarray(a) for a in seq])
    arrays[name + "_offsets"] = np.cumsum([0] + [len(a) for a in seq]).astype(np.int64)


def _ragged_load(meta, name: str) -> list[np.ndarray]:
    flat, off = meta[name], meta[name + "_offsets"]
    return [flat[off[i]: off[i + 1]] for i in range(len(off) - 1)]


def _write(folder: Path, key: str, ds: ImageDataset, skipped: list[str], total: int) -> None:
    images_file = folder / "images.npy"
    if images_file.exists():  # `build` wrote it (memory-mapped) itself
        if isinstance(ds.images, np.memmap) and ds.images.mode != "r":
            ds.images.flush()
    else:
        np.save(images_file, np.ascontiguousarray(ds.images))
    arrays = {"targets": ds.targets}
    if ds.source_sizes is not None:
        arrays["source_sizes"] = ds.source_sizes
    if ds.boxes is not None:
        _ragged_save(arrays, "boxes", ds.boxes)
    kinds = {}
    for k, v in ds.extras.items():
        kinds[k] = "array" if isinstance(v, np.ndarray) else "ragged"
        if kinds[k] == "array":
            arrays["extra_" + k] = v
        else:
            _ragged_save(arrays, "extra_" + k, v)
    np.savez(folder / "meta.npz", **arrays)
    manifest = {
        "format": FORMAT, "key": key, "name": ds.name, "classes": list(ds.classes),
        "label_kind": ds.label_kind, "paths": ds.paths, "count": len(ds),
        "has_boxes": ds.boxes is not None, "extras": kinds, "skipped": skipped, "total": total,
    }
    with open(folder / "manifest.json", "w") as f:  # written last
        json.dump(manifest, f)


def load_entry(folder: Path, key: str, warn_skipped: bool = True) -> ImageDataset | None:
    """The cached dataset in `folder`, or None when there is no complete entry for `key`."""
    manifest_file = folder / "manifest.json"
    if not manifest_file.is_file():
        return None
    with open(manifest_file) as f:
        m = json.load(f)
    if m.get("format") != FORMAT or m.get("key") != key:
        return None
    images = np.load(folder / "images.npy", mmap_mode="r")
    with np.load(folder / "meta.npz", allow_pickle=False) as meta:
        extras = {
            k: meta["extra_" + k] if kind == "array" else _ragged_load(meta, "extra_" + k)
            for k, kind in m["extras"].items()
        }
        ds = ImageDataset(
            images=images, targets=meta["targets"], classes=m["classes"],
            label_kind=m["label_kind"], boxes=_ragged_load(meta, "boxes") if m["has_boxes"] else None,
            paths=m["paths"], name=m["name"], extras=extras, skipped=list(m["skipped"]), cache_path=str(folder),
            source_sizes=meta["source_sizes"] if "source_sizes" in meta.files else None,
        )
    if m["skipped"] and warn_skipped:
        log.warning("%s: %d of %d images were skipped as unreadable when this cache was built "
                    "(%s)", ds.name, len(m["skipped"]), m["total"], folder)
    return ds


def cached(folder: Path, key: str,
           build: Callable[[Path], tuple[ImageDataset, list[str], int]]) -> ImageDataset:
    """Load the entry in `folder`, or build it with `build(tmp_folder)` and publish it atomically.

    `build` returns (dataset, skipped paths, number of images tried); it may write
    `images.npy` into the temporary folder itself (memory-mapped) to avoid a copy."""
    try:
        ds = load_entry(folder, key)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("rebuilding unreadable cache entry %s (%s)", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        ds = None
    if ds is not None:
        log.info("using cached %s (%d images) from %s", ds.name, len(ds), folder)
        return ds
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    chmod_default(tmp, directory=True)  # mkdtemp's 0700 would hide the cache from other users
    try:
        built, skipped, total = build(tmp)
        _write(tmp, key, built, skipped, total)
        del built
        if folder.exists():  # a stale or foreign entry with the same name
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if load_entry(folder, key, warn_skipped=False) is None:  # not a concurrent build of the same key
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("cached %s in %s", folder.name, folder)
    ds = load_entry(folder, key, warn_skipped=False)
    assert ds is not None
    return ds
