"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is a plain dict of tensors, numbers and strings (``weights_only=True`` loads it).
The backbone's ``state_dict`` sits under the documented key ``'backbone'`` so that
``torch.load(path, weights_only=True)['backbone']`` loads into the model without tagless.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tagless.errors import TaglessError
from tagless.files import atomic_path

FORMAT = "tagless-checkpoint-v1"


def save_atomic(obj: dict, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``: a crash or
    a full disk leaves the previous file intact (:func:`tagless.files.atomic_path`)."""
    with atomic_path(path, what="checkpoint ") as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a tagless checkpoint; a missing, truncated or foreign file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise TaglessError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError / UnpicklingError / EOFError for bad files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TaglessError(f"{path} is not a readable checkpoint (truncated or not a torch file?): "
                           f"{reason[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TaglessError(f"{path} is not a tagless checkpoint (no '{FORMAT}' format tag)")
    return ckpt
