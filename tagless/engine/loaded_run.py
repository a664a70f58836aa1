"""A run directory read back once: its last checkpoint, resolved config, backbone (eval mode,
with its eval view) and data splits, each built on first use and then shared.

``tagless report``, ``tagless labels`` and the report's sections (features, classifier, self-
labels, MLS neighbours) take one :class:`LoadedRun` instead of each re-reading ``last.pt`` and
rebuilding the same split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tagless.checkpoint import load_checkpoint
from tagless.data import DataConfig, ImageDataset, build_dataset
from tagless.engine.checkpoint_features import LoadedBackbone, backbone_from_checkpoint, data_config_for, data_origin
from tagless.engine.classifier_eval import checkpoint_classifier
from tagless.engine.run_config import RunConfig, config_from_dict
from tagless.errors import TaglessError

LAST = Path("checkpoints") / "last.pt"
BEST = Path("checkpoints") / "best.pt"  # chosen on the validation split (train.select_metric)


@dataclass
class LoadedRun:
    run_dir: Path
    checkpoint: dict  # the raw checkpoint (tensors on the CPU)
    config: RunConfig  # the run's resolved config
    backbone: LoadedBackbone  # on the requested device, eval mode
    data: DataConfig  # the data section splits are built from (the run's own unless overridden)
    _splits: dict[str, ImageDataset] = field(default_factory=dict, repr=False)
    _classifier: list = field(default_factory=list, repr=False)

    @property
    def method_state(self) -> dict:
        return self.checkpoint.get("method", {})

    @property
    def device(self) -> torch.device:
        return next(self.backbone.backbone.parameters()).device

    def split(self, name: str) -> ImageDataset:
        """The ``name`` split of :attr:`data`, built once."""
        if name not in self._splits:
            self._splits[name] = build_dataset(self.data, name)
        return self._splits[name]

    def classifier(self) -> torch.nn.Module | None:
        """The checkpoint's own classifier (method multilabel) on the backbone, or None."""
        if not self._classifier:
            self._classifier.append(checkpoint_classifier(self.method_state, self.backbone))
        return self._classifier[0]

    def self_labels(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(labels T x N, confidence N or None)`` of a self-labelling run (SeLa) over its
        training split; a run without per-image labels is a one-line error."""
        state = self.method_state
        if "labels" not in state:
            raise TaglessError(f"{self.run_dir}: the run's method ({self.config.method.name}) keeps no per-image "
                               f"labels; tagless labels reads self-labelling runs (method.name=sela)")
        labels = state["labels"].cpu().numpy()
        n = len(self.split("train"))
        if labels.shape[1] != n:
            raise TaglessError(f"{self.run_dir}: {labels.shape[1]} labels but the data now has {n} training images "
                               f"(did the data change since the run?)")
        conf = state["confidence"].cpu().numpy() if "confidence" in state else None
        return labels, conf


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", data_path: str | None = None,
             data_overrides: list[str] = (), which: str = "last", announce: bool = True) -> LoadedRun:
    """Read ``RUN_DIR/checkpoints/last.pt`` (``which="best"``: best.pt, the epoch chosen on the
    validation split) once. ``data_path`` / ``data_overrides`` replace or amend the data section
    stored in the checkpoint (see :func:`data_config_for`); ``announce`` prints which data the
    splits will be read from (a shared run directory's data section may point anywhere)."""
    run_dir = Path(run_dir).absolute()
    path = run_dir / (BEST if which == "best" else LAST)
    ckpt = load_checkpoint(path, map_location="cpu")
    backbone = backbone_from_checkpoint(ckpt, path, device)
    config = config_from_dict(ckpt["config"])
    data = data_config_for(backbone, data_path, list(data_overrides))
    if announce:
        print(data_origin(backbone, data, data_path, list(data_overrides)), flush=True)
    return LoadedRun(run_dir, ckpt, config, backbone, data)
