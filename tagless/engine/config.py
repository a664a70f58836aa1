"""Config sections owned by the engine: optimisation and the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from tagless.config_io import AtLeastOne, Count, Fraction, NonNegative, Positive, Range
from tagless.errors import TaglessError

Beta = Annotated[float, Range(0, 1, high_open=True)]  # a momentum or an Adam beta


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | lars | adam (L2 in the gradient, Cole et al.'s) | adamw (decoupled decay)
    lr_per_256: Positive = 0.03  # lr = lr_per_256 * global_batch / 256 (the linear scaling rule)
    lr: NonNegative = 0.0  # an absolute lr whatever the batch (Cole et al.'s grids); 0 = from lr_per_256
    momentum: Beta = 0.9
    nesterov: bool = False  # sgd: Nesterov momentum (paper 001's recipe)
    weight_decay: NonNegative = 1e-4
    betas: tuple[Beta, Beta] = (0.9, 0.999)  # adam, adamw
    lars_eta: Positive = 0.02  # LARS trust coefficient
    exclude_bias_and_norm: bool = False  # no weight decay / LARS adaptation on biases and norms
    schedule: str = "cosine"  # cosine | constant | step
    warmup_epochs: NonNegative = 0.0
    final_lr_fraction: Fraction = 0.0  # cosine ends at lr * final_lr_fraction
    step_milestones_epochs: tuple[Count, ...] = ()  # schedule=step: multiply by step_gamma at these
    step_gamma: Annotated[float, Range(0, 1, low_open=True)] = 0.1

    def validate(self) -> None:
        if self.name not in ("sgd", "lars", "adam", "adamw"):
            raise TaglessError(f"optim.name: expected sgd, lars, adam or adamw, got {self.name!r}")
        if self.schedule not in ("cosine", "constant", "step"):
            raise TaglessError(f"optim.schedule: expected cosine, constant or step, got {self.schedule!r}")
        if self.lr_per_256 <= 0:
            raise TaglessError("optim.lr_per_256: must be > 0")
        if self.lr < 0:
            raise TaglessError(f"optim.lr: must be >= 0 (0 = from lr_per_256), got {self.lr}")

    def base_lr(self, global_batch: int) -> float:
        """The peak lr: ``lr`` when set, else ``lr_per_256 x global_batch / 256``."""
        return self.lr if self.lr > 0 else self.lr_per_256 * global_batch / 256


SELECT_METRICS = ("auto", "none", "knn_top1", "map_class", "map_sample", "pseudo_nmi")


@dataclass
class TrainConfig:
    epochs: AtLeastOne = 100
    batch_size: AtLeastOne = 256  # global, over all processes
    max_steps: Count = 0  # stop after this many optimizer steps (0 = run all epochs)
    grad_clip_norm: NonNegative = 0.0  # 0 = no clipping
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    channels_last: str = "auto"  # auto (on CUDA) | on | off
    compile: bool = False  # torch.compile the backbone
    checkpoint_every_steps: AtLeastOne = 500  # plus one at every epoch end
    log_every_steps: AtLeastOne = 10
    preload_max_mb: Count = 4096  # put the whole uint8 dataset on the device when it fits
    knn_every_epochs: Count = 1  # online kNN monitor on the held-out split (0 = off)
    knn_k: AtLeastOne = 20  # paper 004's monitor: weighted kNN, k=20, T=0.07
    knn_temperature: Positive = 0.07
    knn_max_bank: Count = 50000  # subsample the bank for speed (0 = all)
    tensorboard: bool = False
    # checkpoints/best.pt: the epoch whose monitor number on the VALIDATION split (labels.val_fraction)
    # is best, never the test split: auto (map_class for multi-label, knn_top1 for single labels) |
    # knn_top1 | map_class | map_sample | pseudo_nmi | none. Needs the monitor (knn_every_epochs >= 1).
    select_metric: str = "auto"

    def validate(self) -> None:
        for key in ("epochs", "batch_size", "checkpoint_every_steps", "log_every_steps", "knn_k"):
            if getattr(self, key) < 1:
                raise TaglessError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "knn_every_epochs", "knn_max_bank", "preload_max_mb"):
            if getattr(self, key) < 0:
                raise TaglessError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if self.knn_temperature <= 0 or self.grad_clip_norm < 0:
            raise TaglessError("train.knn_temperature must be > 0 and train.grad_clip_norm >= 0")
        if self.select_metric not in SELECT_METRICS:
            raise TaglessError(f"train.select_metric: expected one of {', '.join(SELECT_METRICS)}, "
                               f"got {self.select_metric!r}")
        for key in ("amp", "channels_last"):
            if getattr(self, key) not in ("auto", "on", "off", "bf16"):
                raise TaglessError(f"train.{key}: unexpected value {getattr(self, key)!r}")
