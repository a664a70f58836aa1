"""Label modes of multi-label training: full, partial and single-positive labels drawn from
the full labels, with a clean validation carve-out, saved and reloaded as ``.npz``.

[0] Cole et al., "Multi-label learning from single positive labels", CVPR 2021, code
    ``elijahcole/single-positive-multi-label`` (``preproc/generate_observed_labels.py``,
    ``datasets.generate_split``); ``shared/notes/multilabel.md`` §3.4.
[1] Zhang et al., Hill / SPLC (arXiv 2112.07368): COCO splits keeping 75% / 40% of the
    positive labels, every image keeping at least one (notes §5.4). Their split script is not
    public; :func:`build_label_split` reconstructs it (see there).
[2] Paper 003 (Verelst et al., WACV 2023), supp. Tables K.1-K.3: annotation statistics of
    the single-positive splits ("34% of the 193,078 COCO train annotations").

Observed labels (``LabelSplit.observed``): in 'partial' and 'single_positive' mode the kept
positives are 1 and everything else is -1 (unknown): no observed negatives, as in [0] and
[1]. An image with no positive in the full labels is kept, with every observed label -1 (it
only adds unknowns; Cole's preprocessing drops such images before drawing, so a dataset
listed as they do has none). 'full' mode leaves the targets unchanged (1 / 0 / -1).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np

from tagless.config_io import Range, Seed
from tagless.errors import TaglessError
from tagless.files import write_bytes_atomic

LABEL_MODES = ("full", "partial", "single_positive")
_KIND = {"full": "multi", "partial": "partial", "single_positive": "single_positive"}
_SPLIT_FORMAT = "tagless-label-split-v1"
KeepFraction = Annotated[float, Range(0, 1, low_open=True)]
HeldOut = Annotated[float, Range(0, 1, high_open=True)]  # a share carved out: below 1, something is left


@dataclass
class LabelsConfig:
    """Which labels a multi-label run trains on (run-config section ``labels``)."""

    mode: str = "full"  # full | partial | single_positive
    keep_fraction: KeepFraction = 1.0  # partial: share of the positive labels kept ([1]: 0.75, 0.4); >= 1 per image
    seed: Seed = 0  # RNG of the split (Cole [0] uses 1200)
    val_fraction: HeldOut = 0.0  # training images carved out as a clean-label validation set ([0]: 0.2)
    split_file: str = ""  # a saved split (.npz) to reload instead of drawing one

    def validate(self) -> None:
        if self.mode not in LABEL_MODES:
            raise TaglessError(f"labels.mode must be one of {', '.join(LABEL_MODES)}, got {self.mode!r}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise TaglessError(f"labels.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.keep_fraction != 1.0 and self.mode != "partial":
            raise TaglessError(f"labels.keep_fraction applies to mode 'partial' only (mode is {self.mode!r})")
        if not 0.0 <= self.val_fraction < 1.0:
            raise TaglessError(f"labels.val_fraction must be in [0, 1), got {self.val_fraction}")


@dataclass
class LabelSplit:
    """A drawn split: rows of the dataset's train split and the labels a run trains on.

    train_index / val_index: sorted int64 indices into the train split; observed: int8
    len(train_index) x C, the training labels; full: int8, the clean labels of the same rows
    (for statistics only)."""

    train_index: np.ndarray
    val_index: np.ndarray
    observed: np.ndarray
    full: np.ndarray
    mode: str
    keep_fraction: float
    seed: int
    val_fraction: float = 0.0

    @property
    def label_kind(self) -> str:
        """The ImageDataset label_kind of the observed labels (multi, partial, single_positive)."""
        return _KIND[self.mode]


def _check_targets(full_targets) -> np.ndarray:
    t = np.asarray(full_targets)
    if t.ndim != 2:
        raise TaglessError(f"label modes need multi-label targets (N x C), got shape {t.shape}")
    if not np.isin(t, (-1, 0, 1)).all():
        raise TaglessError("label modes need targets of 1 (positive), 0 (negative) or -1 (unknown)")
    return t.astype(np.int8)


def val_carve_out(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) sorted indices: the last round(val_fraction n) of a RandomState(seed)
    permutation are val, as Cole's ``generate_split`` [0]."""
    n_val = int(np.round(val_fraction * n))
    perm = np.random.RandomState(seed).permutation(n).astype(np.int64)
    return np.sort(perm[: n - n_val]), np.sort(perm[n - n_val:])


def _one_positive_each(positive: np.ndarray, seed: int) -> np.ndarray:
    """Column of the chosen positive of every row (-1 for rows without one): Cole's procedure
    [0], a RandomState(seed) walking the rows in order, shuffling the row's positives and
    keeping the first. Their loop also shuffles the row's other entries (their 'negatives',
    with num_neg = 0 none kept); we draw that shuffle too so the stream, hence the choice,
    equals theirs for the same rows, order and seed."""
    rng = np.random.RandomState(seed)
    chosen = np.full(len(positive), -1, np.int64)
    for i, row in enumerate(positive):
        pos, others = np.flatnonzero(row), np.flatnonzero(~row)
        rng.shuffle(pos)
        rng.shuffle(others)
        if len(pos):
            chosen[i] = pos[0]
    return chosen


def _observed_labels(full: np.ndarray, cfg: LabelsConfig) -> np.ndarray:
    """Observed labels of every row of ``full`` (drawn on all rows, see build_label_split)."""
    if cfg.mode == "full":
        return full.copy()
    positive = full == 1
    observed = np.full(full.shape, -1, np.int8)
    chosen = _one_positive_each(positive, cfg.seed)
    rows = np.flatnonzero(chosen >= 0)
    observed[rows, chosen[rows]] = 1
    if cfg.mode == "partial":
        # Reconstruction of [1]: one positive per image as above, then uniformly chosen other
        # positives up to round(keep_fraction x all positives), so the kept share is exact
        # whenever it allows one per image (else one per image is all that is kept).
        rest = np.flatnonzero((positive & (observed != 1)).ravel())
        extra = int(np.round(cfg.keep_fraction * positive.sum())) - len(rows)
        if extra > 0:
            pick = np.random.default_rng([cfg.seed, 75]).permutation(rest)[:extra]
            observed.flat[pick] = 1
    return observed


def build_label_split(full_targets: np.ndarray, cfg: LabelsConfig) -> LabelSplit:
    """The split of ``cfg`` for ``full_targets`` (N x C of 1 / 0 / -1, the train split's
    clean labels); a pure function of both.

    The val carve-out comes first (:func:`val_carve_out`, seed ``cfg.seed``). The observed
    labels are drawn on all N rows in order from a fresh RNG of the same seed, then the train
    rows are kept: as in [0], where the observed labels are drawn on the whole train pool
    before the split, so an image's observed label does not depend on val_fraction. With
    Cole's image order and seed 1200 this gives their single-positive files and split."""
    cfg.validate()
    full = _check_targets(full_targets)
    train, val = val_carve_out(len(full), cfg.val_fraction, cfg.seed)
    observed = _observed_labels(full, cfg)[train]
    return LabelSplit(train_index=train, val_index=val, observed=observed, full=full[train], mode=cfg.mode,
                      keep_fraction=float(cfg.keep_fraction), seed=int(cfg.seed), val_fraction=float(cfg.val_fraction))


def save_label_split(split: LabelSplit, path) -> Path:
    """Write ``split`` (indices, observed labels, the config values, N and C) as ``.npz``."""
    n = len(split.train_index) + len(split.val_index)
    buffer = io.BytesIO()  # written whole and atomically: a crash never leaves half a split
    np.savez(buffer, format=np.array(_SPLIT_FORMAT), train_index=split.train_index.astype(np.int64),
             val_index=split.val_index.astype(np.int64), observed=split.observed.astype(np.int8),
             mode=np.array(split.mode), keep_fraction=np.float64(split.keep_fraction),
             seed=np.int64(split.seed), val_fraction=np.float64(split.val_fraction),
             num_images=np.int64(n), num_classes=np.int64(split.observed.shape[1]))
    return write_bytes_atomic(path, buffer.getvalue())


def load_label_split(path, full_targets: np.ndarray) -> LabelSplit:
    """The split saved in ``path``, checked against the data's train-split labels: same N
    and C, and observed positives that are true positives (a mismatch is a TaglessError
    naming the file)."""
    path = Path(path)
    full = _check_targets(full_targets)
    if not path.is_file():
        raise TaglessError(f"label split file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            a = {k: f[k] for k in f.files}
        if str(a["format"]) != _SPLIT_FORMAT:
            raise ValueError(f"format {a['format']}")
        split = LabelSplit(train_index=a["train_index"].astype(np.int64), val_index=a["val_index"].astype(np.int64),
                           observed=a["observed"].astype(np.int8), full=np.empty((0, 0), np.int8),
                           mode=str(a["mode"]), keep_fraction=float(a["keep_fraction"]), seed=int(a["seed"]),
                           val_fraction=float(a["val_fraction"]))
        n, c = int(a["num_images"]), int(a["num_classes"])
    except Exception as exc:  # noqa: BLE001 - anything unreadable is the same user error
        raise TaglessError(f"{path}: not a tagless label split ({type(exc).__name__}: {exc})") from None
    if (n, c) != full.shape:
        raise TaglessError(f"{path}: the split is for {n} images x {c} classes but the data has "
                           f"{full.shape[0]} x {full.shape[1]}")
    idx = np.concatenate([split.train_index, split.val_index])
    if (split.mode not in LABEL_MODES or split.observed.shape != (len(split.train_index), c)
            or len(idx) != n or not np.array_equal(np.sort(idx), np.arange(n))):
        raise TaglessError(f"{path}: inconsistent label split (indices or observed labels do not fit)")
    split.full = full[split.train_index]
    if ((split.observed == 1) & (split.full != 1)).any() or (
            split.mode == "full" and not np.array_equal(split.observed, split.full)):
        raise TaglessError(f"{path}: its observed labels do not fit the data's labels "
                           "(did the data change since the split was drawn?)")
    return split


def resolve_label_split(full_targets: np.ndarray, cfg: LabelsConfig) -> LabelSplit:
    """``cfg.split_file`` reloaded when set (its mode and keep_fraction must be the config's;
    its seed and val carve-out are the file's), else a split drawn by build_label_split."""
    if not cfg.split_file:
        return build_label_split(full_targets, cfg)
    split = load_label_split(cfg.split_file, full_targets)
    if split.mode != cfg.mode or (cfg.mode == "partial" and split.keep_fraction != cfg.keep_fraction):
        raise TaglessError(f"{cfg.split_file}: holds a {split.mode} split (keep_fraction {split.keep_fraction}) "
                           f"but labels.mode is {cfg.mode} (keep_fraction {cfg.keep_fraction})")
    return split


def split_dataset(ds, split: LabelSplit):
    """(train, val) ImageDatasets: the train rows with the observed labels (label_kind of the
    mode) and the val rows with their clean labels (None without a carve-out)."""
    if len(ds) != len(split.train_index) + len(split.val_index):
        raise TaglessError(f"the label split is for {len(split.train_index) + len(split.val_index)} images, "
                           f"the dataset has {len(ds)}")
    train = ds.subset(split.train_index)
    train.targets, train.label_kind = split.observed.copy(), split.label_kind
    val = ds.subset(split.val_index) if len(split.val_index) else None
    return train, val


def label_statistics(split: LabelSplit, classes) -> list[dict]:
    """Rows of [2] Tables K.2 / K.3 for the training rows of ``split``: a totals row ('all
    classes', with images and positives per image before / after) then one row per class:
    positives in the full labels, observed positives, and the share kept (%)."""
    classes = [str(c) for c in classes]
    full_pos = (split.full == 1).sum(0)
    obs_pos = (split.observed == 1).sum(0)
    if len(classes) != len(full_pos):
        raise TaglessError(f"{len(classes)} class names for {len(full_pos)} classes")

    def share(kept, total):
        return 100.0 * float(kept) / float(total) if total else float("nan")

    n = len(split.train_index)
    total = {"class": "all classes", "positives": int(full_pos.sum()), "observed": int(obs_pos.sum()),
             "kept (%)": share(obs_pos.sum(), full_pos.sum()), "images": n,
             "positives/image": float(full_pos.sum()) / n if n else float("nan"),
             "observed/image": float(obs_pos.sum()) / n if n else float("nan")}
    rows = [{"class": name, "positives": int(p), "observed": int(o), "kept (%)": share(o, p)}
            for name, p, o in zip(classes, full_pos, obs_pos)]
    return [total, *rows]
