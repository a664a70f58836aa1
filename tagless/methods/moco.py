"""MoCo-v2: momentum contrast with a queue of negatives.

[0] He et al., Momentum Contrast for Unsupervised Visual Representation Learning, CVPR 2020
    (Algorithm 1). [1] Chen et al., Improved Baselines with Momentum Contrastive Learning
    (MoCo-v2), arXiv 2003.04297: MLP head, T = 0.2, blur augmentation, cosine schedule.
Official code: facebookresearch/moco ``moco/builder.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from tagless import distributed as dist
from tagless.config_io import AtLeastOne, Count
from tagless.errors import TaglessError
from tagless.losses import contrastive_accuracy, info_nce
from tagless.methods.common import (
    KeyQueue,
    MomentumEncoder,
    convert_split_batchnorm,
    resolve_bn_groups,
    set_bn_groups,
    shuffled,
)
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo
from tagless.models.heads import mlp


@dataclass
class MocoConfig(MethodConfig):
    """MoCo-v2 hyper-parameters (defaults from [1] and the official code)."""

    name: str = "moco"
    proj_dim: AtLeastOne = 128  # output of the MLP head
    proj_hidden_dim: Count = 0  # 0 = the backbone's width, as in [1]
    queue_size: int = 65536  # K
    momentum: float = 0.999  # m of the key encoder
    temperature: float = 0.2  # T (0.07 in MoCo-v1 and in LoGo's code)
    symmetric: bool = False  # also use (view2 as query, view1 as key), as common on CIFAR; the queue
    # still gets one key per image (view 2's), as the paper's asymmetric MoCo-v2, unless queue_keys=both
    queue_keys: str = "one"  # one (view 2's key per image, as MoCo-v2) | both (symmetric: MoCo's CIFAR demo)
    bn_mode: str = "shuffle"  # shuffle (across ranks; across BN groups on one process) | sync (global BN) | local
    bn_groups: int = 0  # shuffle on one process: BN statistics per group of the batch, as that many GPUs;
    # 0 = auto (batch / 32, between 2 and 8)

    def validate(self) -> None:
        if self.queue_keys not in ("one", "both"):
            raise TaglessError(f"method.queue_keys: expected one or both, got {self.queue_keys!r}")
        if self.bn_mode not in ("shuffle", "sync", "local"):
            raise TaglessError(f"method.bn_mode: expected shuffle, sync or local, got {self.bn_mode!r}")
        if self.queue_size < 1 or not 0.0 <= self.momentum < 1.0 or self.temperature <= 0 or self.bn_groups < 0:
            raise TaglessError("method (moco): need queue_size >= 1, 0 <= momentum < 1, temperature > 0, "
                               "bn_groups >= 0")


class MoCo(nn.Module):
    """Query encoder f_q = projector(backbone), key encoder f_k = EMA(f_q), queue of keys."""

    Config = MocoConfig

    def __init__(self, backbone: nn.Module, views, cfg: MocoConfig, data: DataInfo | None = None, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.views = views
        self.backbone = backbone
        hidden = cfg.proj_hidden_dim or backbone.out_dim
        self.projector = mlp(backbone.out_dim, hidden, cfg.proj_dim, num_layers=2, bn=False)
        self.encoder_q = nn.Sequential(self.backbone, self.projector)
        if cfg.bn_mode == "sync":
            self.encoder_q = dist.convert_sync_batchnorm(self.encoder_q)
            self.backbone, self.projector = self.encoder_q[0], self.encoder_q[1]
        elif cfg.bn_mode == "shuffle":
            convert_split_batchnorm(self.encoder_q)  # the key encoder below is a copy: split too
        self.encoder_k = MomentumEncoder(self.encoder_q, cfg.momentum)
        self.queue = KeyQueue(cfg.queue_size, cfg.proj_dim, seed=seed)
        self._keys: torch.Tensor | None = None

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        return self.step(batch)

    def bn_groups(self, batch: int) -> int:
        """Split-BN groups of this process for a local batch (1 unless bn_mode is shuffle)."""
        return resolve_bn_groups(self.cfg.bn_groups, batch) if self.cfg.bn_mode == "shuffle" else 1

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """q = f_q(x), BN statistics per group of the batch on one process (shuffle mode)."""
        set_bn_groups(self.encoder_q, self.bn_groups(x.shape[0]))
        return self.encoder_q(x)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """k = f_k(x), L2-normalised, through shuffle-BN (across ranks under DDP, across BN groups
        on one process)."""
        encode = lambda v: nn.functional.normalize(self.encoder_k(v), dim=1)
        if self.cfg.bn_mode != "shuffle":
            return encode(x)
        groups = self.bn_groups(x.shape[0])
        set_bn_groups(self.encoder_k, groups)
        return shuffled(encode, x, generator, groups)

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        views = self.views(batch.images, batch.generator)
        x1, x2 = views.crops[0], views.crops[1]
        negatives = self.queue.items.clone()
        q1 = self.query(x1)
        k2 = self.keys(x2, batch.generator)
        loss = info_nce(q1, k2, negatives, self.cfg.temperature)
        acc = contrastive_accuracy(q1.detach(), k2, negatives)
        self._keys = k2  # one key per image
        if self.cfg.symmetric:
            q2 = self.query(x2)
            k1 = self.keys(x1, batch.generator)
            loss = 0.5 * (loss + info_nce(q2, k1, negatives, self.cfg.temperature))
            if self.cfg.queue_keys == "both":
                self._keys = torch.cat([k1, k2])
        return loss, {"loss": loss.detach(), "contrastive_acc": acc}

    def epoch_logs(self) -> dict:
        """The norm of the mean of the filled queue entries: near 1 when every key points the same
        way (a collapse), near 0 for keys spread over the sphere."""
        filled = int(self.queue.filled)
        return {"queue_mean_norm": float(self.queue.items[:filled].mean(0).norm())} if filled else {}

    @torch.no_grad()
    def after_step(self) -> None:
        """Algorithm 1 of [0], after the SGD update: momentum update, then enqueue the keys."""
        self.encoder_k.update(self.encoder_q)
        if self._keys is not None:
            self.queue.enqueue(self._keys)
            self._keys = None

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.encoder_q.parameters() if p.requires_grad]}]
