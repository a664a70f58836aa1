"""Self-supervised and weakly-supervised methods: an explicit table from name to class.

A method is one file and one line here. Its class follows :mod:`tagless.methods.contract`
and names its config dataclass (a subclass of :class:`MethodConfig`) as ``Config``.
"""

from __future__ import annotations

import torch.nn as nn

from tagless.methods.classifier import Classifier, ClassifierConfig
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo, EpochContext, Method, OptimizerSpec, hook
from tagless.methods.logo import Logo, LogoConfig
from tagless.methods.mls import MLS, MlsConfig
from tagless.methods.moco import MoCo, MocoConfig
from tagless.methods.multilabel import MultiLabel, MultiLabelConfig
from tagless.methods.sela import SeLa, SelaConfig
from tagless.methods.simsiam import SimSiam, SimSiamConfig
from tagless.methods.swav import SwAV, SwavConfig

METHODS: dict[str, type[nn.Module]] = {"moco": MoCo, "simsiam": SimSiam, "sela": SeLa, "swav": SwAV, "logo": Logo,
                                     "mls": MLS, "multilabel": MultiLabel, "classifier": Classifier}


def build_method(cfg: MethodConfig, backbone: nn.Module, views, data: DataInfo, seed: int = 0, loss=None) -> nn.Module:
    """The method named by ``cfg.name``, built on ``backbone`` with its views and data facts;
    a method with ``uses_loss`` (multilabel) also gets the run's ``loss`` section."""
    from tagless.config_io import tagged, to_dict

    method = METHODS.get(cfg.name)
    if method is None or not isinstance(cfg, method.Config):
        cfg = tagged(to_dict(cfg), MethodConfig, "method")  # a bare MethodConfig(name=...) gets its defaults
    cls = METHODS[cfg.name]
    if getattr(cls, "uses_loss", False):
        return cls(backbone, views, cfg, data, seed=seed, loss=loss)
    return cls(backbone, views, cfg, data, seed=seed)


__all__ = [
    "METHODS",
    "MLS",
    "Batch",
    "Classifier",
    "ClassifierConfig",
    "DataInfo",
    "EpochContext",
    "Logo",
    "LogoConfig",
    "Method",
    "MethodConfig",
    "MlsConfig",
    "MoCo",
    "MocoConfig",
    "MultiLabel",
    "MultiLabelConfig",
    "OptimizerSpec",
    "SeLa",
    "SelaConfig",
    "SimSiam",
    "SimSiamConfig",
    "SwAV",
    "SwavConfig",
    "build_method",
    "hook",
]
