"""SimSiam: siamese networks with a predictor and a stop-gradient.

[0] Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021 (Algorithm 1, Eq. 3).
Official code: facebookresearch/simsiam ``simsiam/builder.py``: 3-layer projector with BN
(last BN without affine), 2-layer bottleneck predictor, predictor lr kept fixed (``--fix-pred-lr``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from tagless import distributed as dist
from tagless.config_io import AtLeastOne
from tagless.losses import negative_cosine
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo
from tagless.models.heads import mlp


@dataclass
class SimSiamConfig(MethodConfig):
    name: str = "simsiam"
    proj_dim: AtLeastOne = 2048  # output of projector and predictor (ImageNet setting of [0])
    proj_hidden_dim: AtLeastOne = 2048
    pred_hidden_dim: AtLeastOne = 512  # predictor bottleneck
    proj_layers: AtLeastOne = 3  # [0] uses 3 on ImageNet, 2 on CIFAR
    fix_predictor_lr: bool = True  # [0] Sec. 4.3: a constant predictor lr works best
    sync_bn: bool = True  # global-batch BN under DDP, as [0] uses SyncBN


class SimSiam(nn.Module):
    """L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with z = projector(backbone(x)), p = predictor(z)."""

    Config = SimSiamConfig

    def __init__(self, backbone: nn.Module, views, cfg: SimSiamConfig, data: DataInfo | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.views = views
        self.backbone = backbone
        self.projector = mlp(backbone.out_dim, cfg.proj_hidden_dim, cfg.proj_dim,
                             num_layers=cfg.proj_layers, bn=True, last_bn=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, num_layers=2, bn=True)
        self.encoder = nn.Sequential(self.backbone, self.projector)
        if cfg.sync_bn:
            self.encoder = dist.convert_sync_batchnorm(self.encoder)
            self.predictor = dist.convert_sync_batchnorm(self.predictor)
            self.backbone, self.projector = self.encoder[0], self.encoder[1]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        return self.step(batch)

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        views = self.views(batch.images, batch.generator)
        x1, x2 = views.crops[0], views.crops[1]
        z = self.encoder(torch.cat([x1, x2]))  # one pass over both views
        z1, z2 = z.chunk(2)
        p1, p2 = self.predictor(z).chunk(2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        # A collapsed representation has per-dimension std near 0; [0] Fig. 2 monitors
        # the std of the l2-normalised output against 1/sqrt(d).
        z_std = nn.functional.normalize(z1.detach().float(), dim=1).std(dim=0).mean()
        return loss, {"loss": loss.detach(), "z_std": z_std}

    def param_groups(self) -> list[dict]:
        return [
            {"params": list(self.encoder.parameters())},
            {"params": list(self.predictor.parameters()), "fixed_lr": self.cfg.fix_predictor_lr},
        ]
