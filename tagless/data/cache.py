"""On-disk cache of decoded datasets: one folder per key, published atomically, safe to share
between processes that build and read it at the same time.

A cache entry `<cache_dir>/<name>-<split>-<size>px-<key>/` holds `images.npy` (uint8
N x H x W x 3, opened memory-mapped), `meta.npz` (targets, boxes, extras; plain arrays, read
with allow_pickle=False) and `manifest.json` (classes, label kind, paths, skipped files).
The key hashes the format version, source, root, split, image size, the corrupt-file
policy, every image file's path, size and mtime, and the labels, so any change of the
inputs makes a new entry.

Publishing: an entry is built in a temporary folder `.tmp-*` (its files fsynced), which is
renamed into place at the end. A rename never replaces a finished entry: when two processes
build the same entry at once, the second rename fails, and the loser discards its own folder
and reads the winner's. An interrupted build leaves no entry, only a `.tmp-*` folder; those
older than a day whose builder is gone (a build holds a lock on its folder) are removed by the
next build in the same cache folder. An entry that cannot be read is moved aside and deleted
only under a lock on the cache folder (`fcntl.flock`), after a second look under that lock,
so a process never deletes an entry another one has just published.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tagless.data.config import PILLOW_MAX_PIXELS
from tagless.data.dataset import ImageDataset
from tagless.errors import TaglessError
from tagless.files import FileLock, chmod_default, fsync_dir, is_locked

log = logging.getLogger("tagless.data")

FORMAT = "tagless-data-cache-v1"
TMP_PREFIX = ".tmp-"
STALE_AFTER_S = 24 * 3600  # an unlocked `.tmp-*` folder untouched this long is a dead build's
# what reading a damaged, truncated or foreign entry raises
_DAMAGED = (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile)


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
    max_pixels = getattr(cfg, "max_image_pixels", PILLOW_MAX_PIXELS)
    if max_pixels != PILLOW_MAX_PIXELS:  # keyed only when set, so entries built before the limit stay valid
        head["max_image_pixels"] = max_pixels
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


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write(folder: Path, key: str, ds: ImageDataset, skipped: list[str], total: int) -> None:
    """The entry's files in `folder`, each fsynced, the manifest last."""
    images_file = folder / "images.npy"
    if images_file.exists():  # `build` wrote it (memory-mapped) itself
        if isinstance(ds.images, np.memmap) and ds.images.mode != "r":
            ds.images.flush()
    else:
        np.save(images_file, np.ascontiguousarray(ds.images))
    _fsync(images_file)
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
    with open(folder / "meta.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    manifest = {
        "format": FORMAT, "key": key, "name": ds.name, "classes": list(ds.classes),
        "label_kind": ds.label_kind, "paths": ds.paths, "count": len(ds),
        "has_boxes": ds.boxes is not None, "extras": kinds, "skipped": skipped, "total": total,
    }
    with open(folder / "manifest.json", "w") as f:  # written last
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)


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


def _try_load(folder: Path, key: str, warn_skipped: bool = True) -> tuple[ImageDataset | None, str | None]:
    """``(dataset, None)`` for a readable entry of `key`; ``(None, None)`` when there is no
    entry; ``(None, why)`` when the folder holds a damaged, incomplete or foreign one."""
    if not folder.exists():
        return None, None
    try:
        ds = load_entry(folder, key, warn_skipped)
    except _DAMAGED as exc:
        return None, f"unreadable: {type(exc).__name__}: {exc}"
    return (ds, None) if ds is not None else (None, "no manifest of this key")


def _discard_damaged(folder: Path, key: str, why: str) -> None:
    """Move a damaged entry aside and delete it, under the cache folder's lock and only when a
    second look under the lock still finds it damaged (another process may have replaced it)."""
    with FileLock(folder.parent):
        ds, why_now = _try_load(folder, key, warn_skipped=False)
        del ds
        if why_now is None:  # readable now, or gone
            return
        log.warning("rebuilding damaged cache entry %s (%s)", folder, why_now or why)
        aside = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}-damaged-", dir=folder.parent))
        try:
            os.rename(folder, aside)  # onto the empty folder just made: atomic for every reader
        except FileNotFoundError:
            aside.rmdir()
            return
        except OSError as e:
            shutil.rmtree(aside, ignore_errors=True)
            raise TaglessError(f"cannot remove the damaged cache entry {folder}: {e.strerror or e}") from None
        # an empty folder of the entry's name is replaced by a rename: if a builder published into
        # it between the look and the move, the entry moved aside is good: put it back
        ds, why_aside = _try_load(aside, key, warn_skipped=False)
        del ds
        if why_aside is None:
            try:
                os.rename(aside, folder)
                return
            except OSError:
                pass  # another good entry is in place
    shutil.rmtree(aside, ignore_errors=True)


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for p in folder.iterdir():
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times)


def clean_stale(cache_dir: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the `.tmp-*` folders of dead builds: untouched for `max_age_s` and not locked by a
    running build. Returns the folders removed."""
    removed = []
    now = time.time()
    for p in Path(cache_dir).glob(f"{TMP_PREFIX}*"):
        try:
            if not p.is_dir() or now - _newest_mtime(p) < max_age_s or is_locked(p):
                continue
        except OSError:
            continue
        shutil.rmtree(p, ignore_errors=True)
        log.info("removed the leftover of an interrupted cache build: %s", p)
        removed.append(p)
    return removed


def _build_and_publish(folder: Path, key: str,
                       build: Callable[[Path], tuple[ImageDataset, list[str], int]]) -> bool:
    """Build the entry in a temporary folder and rename it into place; False when another
    process published the entry first (ours is discarded)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}-", dir=folder.parent))
    except OSError as e:
        raise TaglessError(f"cannot write to the data cache folder {folder.parent}: {e.strerror or e}") from None
    building = FileLock(tmp)  # tells clean_stale this folder is in use
    try:
        chmod_default(tmp, directory=True)  # mkdtemp's 0700 would hide the cache from other users
        built, skipped, total = build(tmp)
        _write(tmp, key, built, skipped, total)
        del built
        try:
            os.rename(tmp, folder)  # fails on a finished entry: a rename never deletes one
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            log.info("another process published %s first: using its entry", folder)
            return False
        fsync_dir(folder.parent)
        log.info("cached %s in %s", folder.name, folder)
        return True
    except OSError as e:
        raise TaglessError(f"cannot write the data cache entry {folder}: {e.strerror or e}") from None
    finally:
        building.release()
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename


def cached(folder: Path, key: str,
           build: Callable[[Path], tuple[ImageDataset, list[str], int]]) -> ImageDataset:
    """Load the entry in `folder`, or build it with `build(tmp_folder)` and publish it atomically.

    `build` returns (dataset, skipped paths, number of images tried); it may write
    `images.npy` into the temporary folder itself (memory-mapped) to avoid a copy. Several
    processes may call this for the same entry at once (see the module docstring)."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TaglessError(f"cannot create the data cache folder {folder.parent}: {e.strerror or e}") from None
    ds, why = _try_load(folder, key)
    if ds is not None:
        log.info("using cached %s (%d images) from %s", ds.name, len(ds), folder)
        return ds
    clean_stale(folder.parent)
    for _ in range(3):
        if why is not None:
            _discard_damaged(folder, key, why)
            ds, why = _try_load(folder, key)  # another process may have published a good one meanwhile
            if ds is not None:
                return ds
            if why is not None:
                continue
        published = _build_and_publish(folder, key, build)
        ds, why = _try_load(folder, key, warn_skipped=not published)
        if ds is not None:
            return ds
        why = why or "missing right after it was published"
    raise TaglessError(f"data cache entry {folder} is still unreadable after three builds ({why}); "
                       f"remove it, or set data.cache_dir to another folder")
