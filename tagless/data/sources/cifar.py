"""CIFAR-10 / CIFAR-100 in the "python version" pickle format.

`root` is the `cifar-10-batches-py` folder (`data_batch_1..5`, `test_batch`, `batches.meta`)
or the `cifar-100-python` folder (`train`, `test`, `meta`; the 100 fine labels). Each batch
is a pickled dict with bytes keys: b'data' (N x 3072 uint8, rows of R, G, B planes of
32 x 32) and b'labels' / b'fine_labels'.

Pickle can run arbitrary code while loading, and a CIFAR folder may come from anywhere (a
download, a colleague's run directory whose checkpoint names it). The files are read with a
restricted unpickler that builds only what a CIFAR batch holds (dicts, lists, bytes, strings,
numbers, numpy arrays and dtypes) and refuses any other global with a one-line error naming
the file, before anything is called.
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


def _text_to_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3's protocol-2 pickles call (``_codecs.encode``) to rebuild a bytes object;
    only the text encodings, never a codec that runs other code."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"bytes in encoding {encoding!r}")
    return text.encode(encoding)


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The numpy callables an array, a dtype or a numpy scalar is pickled with, under the module
    names numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) write."""
    rebuild_array = np.zeros(1, np.uint8).__reduce__()[0]  # multiarray._reconstruct
    from_buffer = np.zeros(1, np.uint8).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5)
    scalar = np.int64(0).__reduce__()[0]  # multiarray.scalar
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = rebuild_array
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = from_buffer
    allowed[("_codecs", "encode")] = _text_to_bytes
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Builds plain containers, numbers, bytes and numpy arrays; every other global is refused
    (pickle looks every callable up here, so nothing else can run)."""

    ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str):
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id")


def _unpickle(path: Path) -> dict:
    """One CIFAR pickle (bytes keys, latin1-era format), read without running code from it."""
    with open(require_file(path, "CIFAR file"), "rb") as f:
        try:
            value = _CifarUnpickler(f, encoding="bytes").load()
        except Exception as exc:  # noqa: BLE001 - a damaged or crafted pickle raises anything
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise TaglessError(f"{path}: not a CIFAR batch ({reason}); a CIFAR file holds only arrays, lists, "
                               f"bytes and numbers") from None
    if not isinstance(value, dict):
        raise TaglessError(f"{path}: not a CIFAR batch (a {type(value).__name__}, not a dict)")
    return value


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
