"""Backbones by name: an explicit table of factories, a typed config, and the kwargs to rebuild.

``BACKBONES[name](**kwargs)`` builds a backbone. A checkpoint stores ``backbone_name`` and
``backbone_kwargs(cfg)`` beside the state dict, so ``build_backbone(name, **kwargs)`` rebuilds
the exact module without the config that trained it.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from tagless.checkpoint import load_checkpoint
from tagless.config_io import Range
from tagless.errors import TaglessError
from tagless.models.alexnet import alexnet, alexnet_small
from tagless.models.base import Backbone
from tagless.models.resnet import resnet18, resnet34, resnet50
from tagless.models.trainable import WORDS, freeze, frozen_layers

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "alexnet_small": alexnet_small,
    "alexnet": alexnet,
}


@dataclass
class ModelConfig:
    """Which backbone to build.

    backbone: a key of `BACKBONES`.
    stem: 'cifar' (small inputs: 3x3 stride-1 ResNet stem without max-pool, or the
        small-input AlexNet geometry) or 'imagenet' (224-pixel geometry).
    width: multiplier of the filter counts (0.25 gives a tiny CPU model).
    zero_init_residual: ResNets only; start each residual block as the identity.
    init_checkpoint: a tagless checkpoint whose backbone weights start the run (fine-tuning,
        or self-labelling on top of a pre-trained network); its backbone must match.
    trainable: which backbone blocks train (paper 002, Table 7: "fc6-8" vs "all"): all | head
        (the backbone frozen, the method's layers train) | a block name such as layer3 (it and
        the later blocks train). Frozen weights are in no optimiser, and the BatchNorms of frozen
        blocks keep their running statistics (eval mode, as fine-tuning practice does).
    """

    backbone: str = "resnet18"
    stem: str = "cifar"
    width: Annotated[float, Range(0, 64, low_open=True)] = 1.0
    zero_init_residual: bool = False
    init_checkpoint: str = ""
    trainable: str = "all"  # all | head | a block name (layer3): it and later blocks train; frozen BN in eval mode

    def validate(self) -> None:
        if self.trainable not in WORDS:
            import torch

            with torch.device("meta"):  # the block names only: no memory, no initialisation cost
                names = build_backbone(self.backbone, **backbone_kwargs(self)).layer_names
            frozen_layers(names, self.trainable)


def _factory(name: str) -> Callable[..., Backbone]:
    if name not in BACKBONES:
        raise TaglessError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build backbone `name` (a key of `BACKBONES`) with its factory's keyword arguments."""
    factory = _factory(name)
    accepted = inspect.signature(factory).parameters
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        raise TaglessError(
            f"backbone {name!r} takes no argument {unknown[0]!r}; valid: {', '.join(accepted)}"
        )
    return factory(**kwargs)


def backbone_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    """The keyword arguments `build_backbone(cfg.backbone, **kwargs)` needs for `cfg`.

    Only arguments the backbone's factory accepts are included (AlexNet has no
    `zero_init_residual`); all values are primitives, safe for ``torch.load(weights_only=True)``.
    """
    accepted = inspect.signature(_factory(cfg.backbone)).parameters
    candidates = {"stem": cfg.stem, "width": float(cfg.width),
                  "zero_init_residual": bool(cfg.zero_init_residual)}
    return {key: value for key, value in candidates.items() if key in accepted}


def build_backbone_from_config(cfg: ModelConfig) -> Backbone:
    """`build_backbone(cfg.backbone, **backbone_kwargs(cfg))`, with the weights of
    `cfg.init_checkpoint` when set and the blocks `cfg.trainable` leaves out frozen."""
    backbone = build_backbone(cfg.backbone, **backbone_kwargs(cfg))
    if cfg.init_checkpoint:
        load_backbone_weights(backbone, cfg.init_checkpoint, cfg.backbone, backbone_kwargs(cfg))
    freeze(backbone, cfg.trainable)
    return backbone


def load_backbone_weights(backbone: Backbone, path: str, name: str, kwargs: dict) -> None:
    """Copy the backbone of a tagless checkpoint into ``backbone``; a different architecture
    is a one-line error naming both."""
    ckpt = load_checkpoint(path)
    theirs = (ckpt.get("backbone_name"), ckpt.get("backbone_kwargs"))
    if theirs != (name, kwargs):
        raise TaglessError(f"model.init_checkpoint {path} holds {theirs[0]} {theirs[1]}, but this run builds "
                           f"{name} {kwargs}: set model.* to match it")
    backbone.load_state_dict(ckpt["backbone"])
