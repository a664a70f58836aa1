"""Self-supervised methods: an explicit table from name to (config field, class)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from tagless.errors import TaglessError
from tagless.methods.moco import MoCo, MocoConfig
from tagless.methods.simsiam import SimSiam, SimSiamConfig

METHODS = {"moco": MoCo, "simsiam": SimSiam}


@dataclass
class MethodConfig:
    name: str = "moco"
    moco: MocoConfig = field(default_factory=MocoConfig)
    simsiam: SimSiamConfig = field(default_factory=SimSiamConfig)

    def validate(self) -> None:
        if self.name not in METHODS:
            raise TaglessError(f"method.name: unknown method {self.name!r} (valid: {', '.join(METHODS)})")


def build_method(cfg: MethodConfig, backbone: nn.Module, views, seed: int = 0) -> nn.Module:
    """The method named by ``cfg.name`` with its own section of the config."""
    cfg.validate()
    return METHODS[cfg.name](backbone, views, getattr(cfg, cfg.name), seed=seed)


__all__ = ["METHODS", "MethodConfig", "MoCo", "MocoConfig", "SimSiam", "SimSiamConfig", "build_method"]
