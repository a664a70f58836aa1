"""The method contract: what the engine hands a method and what it calls on it.

A method is an ``nn.Module`` built by ``cls(backbone, views, cfg, data, seed=...)`` and
registered in ``tagless.methods.METHODS``. The engine calls, every step::

    loss, logs = method.step(batch)           # under autocast; views are made inside
    loss.backward()                           # one backward for every optimiser
    method.before_optimizer_step(name, opt)   # optional, per optimiser, in declared order
    opt.step()  (main first, then each extra optimiser)
    method.after_step()                       # optional: momentum updates, queues

and, between epochs, ``method.on_epoch_start(epoch, ctx)`` (before the epoch's first step,
the first epoch included) and ``method.epoch_logs()`` (after its last step). Everything else a
method keeps (pseudo-labels, EMA scores, heatmaps, label estimates) lives in registered
buffers, so ``state_dict`` carries it into checkpoints and ``--resume`` restores it.

Only ``backbone``, ``step`` and ``param_groups`` are required; the engine looks the optional
hooks up by name (:data:`OPTIONAL_HOOKS`), so a method implements only what it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn


@dataclass
class Batch:
    """One step's data on the device (this rank's share of the global batch).

    images: uint8 B x C x H x W. index: int64 B dataset indices, global across ranks (the
    same numbering as :class:`DataInfo` and the epoch pass). target: the stored labels,
    int64 B for single labels or int8 B x C of 1 / 0 / -1 for multi-label and partial data;
    -1 means unknown (all -1 for unlabelled data). step: the global optimiser step (0-based).
    epoch: ``step // steps_per_epoch``. generator: the step's RNG, a pure function of
    (seed, rank, step), so a resumed run draws the same views.
    """

    images: torch.Tensor
    index: torch.Tensor
    target: torch.Tensor
    step: int
    epoch: int
    generator: torch.Generator


@dataclass
class DataInfo:
    """Facts about the training data, given to a method at construction.

    ``read(indices)`` returns those training images as uint8 B x C x H x W on the device;
    ``targets`` holds every stored label (as ``Batch.target``, on the device); ``paths`` the
    image files, when the source has files; ``expected_positives`` the mean number of positives
    per image of the clean labels (the validation carve-out's, else the training split's;
    paper 003's K), for multi-label data. ``clean_targets``: the training images' labels before
    the run's label mode hid some (int8 N x C on the device, rows as ``targets``; None when
    nothing was hidden), for diagnostics only: a method never trains on them.
    """

    num_images: int
    classes: list[str]
    label_kind: str  # none | single | multi | partial | single_positive
    image_size: int
    read: Callable[[Any], torch.Tensor]
    targets: torch.Tensor
    paths: list[str] | None = None
    expected_positives: float | None = None
    clean_targets: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_arrays(cls, images: np.ndarray, targets: np.ndarray, classes: list[str], label_kind: str,
                    device: torch.device | str = "cpu") -> DataInfo:
        """Facts for uint8 N x H x W x C ``images`` held in memory (tests, notebooks)."""
        data = torch.as_tensor(np.array(images)).permute(0, 3, 1, 2).to(device)  # a writable copy
        return cls(len(images), list(classes), label_kind, int(images.shape[1]),
                   lambda idx: data[torch.as_tensor(idx, device=data.device)],
                   torch.as_tensor(targets, device=device))


@dataclass
class OptimizerSpec:
    """An extra named optimiser a method declares (LoGo's critic, say).

    ``param_groups`` as for the main optimiser; ``overrides`` replace fields of the run's
    ``optim`` section for this optimiser only, e.g. ``{"schedule": "constant"}`` or
    ``{"lr_per_256": 0.03, "weight_decay": 1e-4}``, or ``{"lr": 1e-3}`` for an absolute lr.
    Each optimiser has its own schedule array and its own slot in the checkpoint
    (``optimizers[name]``).
    """

    name: str
    param_groups: list[dict]
    overrides: dict = field(default_factory=dict)


class EpochContext(Protocol):
    """What ``on_epoch_start`` gets: dataset-wide passes and collectives (see engine/epoch.py)."""

    epoch: int
    epochs: int  # of the whole run (label-update schedules are fractions of it)
    device: torch.device
    rank: int
    world_size: int
    data: DataInfo

    def indices(self) -> np.ndarray:
        """The dataset indices this rank covers in ``dataset_pass`` (a contiguous block)."""

    def dataset_pass(self, fn: Callable, views: Callable | None = None, batch_size: int = 512,
                     gather: bool = True) -> tuple[torch.Tensor, Any]:
        """``fn`` over every training image without gradients; see engine/epoch.py."""

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of every rank in rank order (shards of any size)."""

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks."""


@runtime_checkable
class Method(Protocol):
    """The required part of the contract. Parameter groups are dicts ``{"params": [...]}``
    with optional ``lr_scale`` (times the scheduled lr; 10 for a fresh head, say),
    ``weight_decay`` (this group's own) and ``fixed_lr`` (keep the base lr, no schedule)."""

    backbone: nn.Module

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """(loss, logs): logs are scalars (tensors are read only on log steps)."""

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """``return self.step(batch)``: DDP calls ``forward``."""

    def param_groups(self) -> list[dict]:
        """The main optimiser's parameter groups."""


class MethodHooks(Protocol):
    """The optional hooks, each looked up by name; implement only those you need."""

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        """Before the first step of ``epoch`` (also after ``--resume`` at an epoch boundary;
        not after a mid-epoch resume: the checkpoint holds what the hook computed)."""

    def after_step(self) -> None:
        """After every optimiser step (momentum encoders, queues, EMA state)."""

    def epoch_logs(self) -> dict:
        """Numbers written to metrics.jsonl (split 'epoch') and the progress bar at epoch end."""

    def optimizers(self) -> list[OptimizerSpec]:
        """Extra named optimisers beside the main one ('main', from ``param_groups``)."""

    def before_optimizer_step(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Called after the backward, before ``optimizer.step()``; may rewrite ``.grad``."""

    def pseudo_labels(self) -> torch.Tensor | None:
        """Per-image cluster labels (N, or N x heads: head 0 is monitored) for the NMI monitor."""

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits B x C of normalised eval views, for the multi-label mAP monitor."""


OPTIONAL_HOOKS = ("on_epoch_start", "after_step", "epoch_logs", "optimizers", "before_optimizer_step",
                  "pseudo_labels", "class_scores")


def hook(method: nn.Module, name: str):
    """The bound optional hook ``name`` of ``method``, or None."""
    assert name in OPTIONAL_HOOKS, name
    return getattr(method, name, None)
