"""Inputs of ``tagless eval``: arrays from a ``.npz`` file or features computed from a
checkpoint, validated with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagless.errors import TaglessError


@dataclass
class EvalInputs:
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    pred: np.ndarray | None = None  # cluster assignments (cluster) or scores (map)
    scores: np.ndarray | None = None
    boxes: list | None = None  # per test image k x 5 boxes, for mAP per object size
    image_size: int | None = None
    areas: list | None = None  # per test image: each box's area in original pixels (COCO's size buckets)
    size_thresholds: tuple[float, float] | None = None  # small/medium and medium/large limits, pixels^2
    classes: list[str] = field(default_factory=list)
    source: str = ""
    paths: list[str] | None = None  # the test images' files, when the data has files (ReaL's matching)


def _check_features(name: str, x: np.ndarray, source: str) -> np.ndarray:
    if x.ndim != 2 or x.shape[0] == 0:
        raise TaglessError(f"{source}: '{name}' must be a non-empty 2-D array (N x D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TaglessError(f"{source}: '{name}' is not numeric ({x.dtype})")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise TaglessError(f"{source}: '{name}' has NaN or infinite values in {bad} rows")
    return x.astype(np.float32, copy=False)


def _check_labels(name: str, y: np.ndarray, n: int, source: str, num_classes: int | None = None) -> np.ndarray:
    if y.shape[0] != n:
        raise TaglessError(f"{source}: '{name}' has {y.shape[0]} rows but the features have {n}")
    if not np.issubdtype(y.dtype, np.number) or not np.isfinite(y).all() or (np.round(y) != y).any():
        raise TaglessError(f"{source}: '{name}' must hold whole numbers")
    y = y.astype(np.int64)
    if y.ndim == 1:
        if (y < -1).any():
            raise TaglessError(f"{source}: '{name}' has labels below -1 (use -1 for unlabelled)")
        if num_classes is not None and (y >= num_classes).any():
            raise TaglessError(f"{source}: '{name}' has label {int(y.max())} outside the {num_classes} classes")
    elif y.ndim == 2:
        if not np.isin(y, (-1, 0, 1)).all():
            raise TaglessError(f"{source}: multi-label '{name}' must hold only 1, 0 or -1 (unknown)")
    else:
        raise TaglessError(f"{source}: '{name}' must be N labels or an N x C matrix of 1/0/-1")
    return y


def load_npz(path: str | Path, need: tuple[str, ...]) -> EvalInputs:
    """Read and validate arrays; ``need`` lists the arrays this evaluator requires (an
    entry 'a|b' is satisfied by either)."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise TaglessError(f"features file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any np.load failure means an unreadable file
        raise TaglessError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    for req in need:
        if not any(k in arrays for k in req.split("|")):
            wanted = "' or '".join(req.split("|"))
            have = ", ".join(sorted(arrays)) or "none"
            raise TaglessError(f"{path}: missing array '{wanted}' (has: {have})")
    inp = EvalInputs(source=source)
    for split in ("train", "test"):
        x = arrays.get(f"x_{split}")
        if x is not None:
            setattr(inp, f"x_{split}", _check_features(f"x_{split}", x, source))
    if inp.x_train is not None and inp.x_test is not None and inp.x_train.shape[1] != inp.x_test.shape[1]:
        raise TaglessError(f"{source}: x_train has {inp.x_train.shape[1]} dims but x_test has {inp.x_test.shape[1]}")
    for split in ("train", "test"):
        y = arrays.get(f"y_{split}")
        if y is None:
            continue
        x = getattr(inp, f"x_{split}")
        n = x.shape[0] if x is not None else y.shape[0]
        setattr(inp, f"y_{split}", _check_labels(f"y_{split}", y, n, source))
    if inp.y_train is not None and inp.y_test is not None and inp.y_train.ndim != inp.y_test.ndim:
        raise TaglessError(f"{source}: y_train and y_test must both be single labels or both multi-label")
    if (inp.y_train is not None and inp.y_test is not None and inp.y_train.ndim == 2
            and inp.y_train.shape[1] != inp.y_test.shape[1]):
        raise TaglessError(f"{source}: y_train has {inp.y_train.shape[1]} classes but y_test has {inp.y_test.shape[1]}")
    if "pred" in arrays:
        n = inp.y_test.shape[0] if inp.y_test is not None else arrays["pred"].shape[0]
        inp.pred = _check_labels("pred", arrays["pred"], n, source)
    if "scores" in arrays:
        s = _check_features("scores", arrays["scores"], source)
        y = inp.y_test  # multi-label: one score per label; single labels (ReaL): one row per image
        if y is not None and (s.shape != y.shape if y.ndim == 2 else s.shape[0] != y.shape[0]):
            raise TaglessError(f"{source}: 'scores' has shape {s.shape} but y_test has {y.shape}")
        inp.scores = s
    if "classes" in arrays:
        inp.classes = [str(c) for c in arrays["classes"]]
    return inp


def dataset_targets(dataset) -> np.ndarray:
    return np.asarray(dataset.targets).astype(np.int64)
