"""MLS: multi-label self-supervised learning, MoCo-v2 with pseudo-labels mined from a queue.

[0] Zhu, Fu & Wu, Multi-Label Self-Supervised Learning with Scene Images, ICCV 2023
    (Sec. 3, Eq. 9; supplement A.2 for the architecture, B.1 for the ablation losses).

MLS is MoCo-v2 (methods/moco.py) plus a backbone queue Q_g aligned entry by entry with the
embedding queue Q_z: both hold the key view's features (backbone g2, projection z2 = k2), are
detached and are enqueued with the keys of every rank. For each query, the top-k entries of
Q_g nearest (cosine) to its key's backbone feature g2 are positive pseudo-labels over the D
entries of Q_z, and the query embedding q = z1 is trained with a binary cross-entropy over
the D logits q.z_i / tau (Eq. 9), added to MoCo's InfoNCE: ``loss = InfoNCE + w x MLS``.
``loss: knn_softmax`` and ``loss: bce_pos`` are the supplement's ablations (Eq. 10, Eq. 15).

Queues (checkpoint keys under ``method``): ``queue.items`` (Q_z, D x proj_dim),
``queue_g.items`` (Q_g, D x backbone width, L2-normalised), ``queue_index.items`` (int64
dataset index of each entry, -1 before filled; for the neighbour report), each with
``ptr`` / ``filled``. The three are written at ``queue.ptr`` (one pointer) and stay aligned
through the wrap-around. Only filled entries (``queue.filled``, entries 0..filled-1) are
neighbours or enter the MLS term; the term is 0 while fewer than k are filled. The key's own
image is not special-cased: an earlier view of it in the queue is a legitimate neighbour.
NOTE: supplement A.2 says once that Q_g stores "g_1 of view1", then that both queues hold
view2's features; we follow the latter (the key view), as MoCo's queue does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tagless import distributed as dist
from tagless.errors import TaglessError
from tagless.losses import contrastive_accuracy, info_nce
from tagless.losses.mls import MLS_LOSSES, topk_positives
from tagless.methods.common import KeyQueue, shuffle_across_ranks, unshuffle_across_ranks
from tagless.methods.contract import Batch, DataInfo
from tagless.methods.moco import MoCo, MocoConfig


@dataclass
class MlsConfig(MocoConfig):
    """MLS hyper-parameters: MoCo-v2's (queue_size is D) and the label mining's ([0]: k = 20, BCE)."""

    name: str = "mls"
    loss: str = "bce"  # bce (Eq. 9) | knn_softmax (Eq. 10, ablation) | bce_pos (Eq. 15, ablation)
    topk: int = 20  # k: positives per query, mined from Q_g
    mls_weight: float = 1.0  # loss = InfoNCE + mls_weight x MLS term
    mls_temperature: float = 0.0  # tau of the MLS term; 0 = method.temperature
    mls_start_epochs: int = 0  # epochs of plain MoCo-v2 before the MLS term joins (0 = from the start)

    def validate(self) -> None:
        super().validate()
        if self.loss not in MLS_LOSSES:
            raise TaglessError(f"method.loss: expected one of {', '.join(MLS_LOSSES)}, got {self.loss!r}")
        if (not 1 <= self.topk <= self.queue_size or self.mls_weight < 0 or self.mls_temperature < 0
                or self.mls_start_epochs < 0):
            raise TaglessError("method (mls): need 1 <= topk <= queue_size, mls_weight, mls_temperature and "
                               "mls_start_epochs >= 0")


class MLS(MoCo):
    """MoCo-v2's encoders and Q_z, plus Q_g (backbone features) and the queue of dataset indices."""

    Config = MlsConfig

    def __init__(self, backbone, views, cfg: MlsConfig, data: DataInfo | None = None, seed: int = 0):
        super().__init__(backbone, views, cfg, data, seed=seed)
        self.queue_g = KeyQueue(cfg.queue_size, self.backbone.out_dim, seed=seed + 1)
        self.queue_index = KeyQueue(cfg.queue_size, 1, normalize=False)
        self.queue_index.items = torch.full((cfg.queue_size,), -1, dtype=torch.long)
        self._pending: list[tuple[torch.Tensor, ...]] | None = None

    @property
    def tau(self) -> float:
        return self.cfg.mls_temperature or self.cfg.temperature

    @torch.no_grad()
    def key_features(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, g): the key encoder's projection and pooled backbone feature of ``x``, both
        L2-normalised, from one pass (encoder_k.net = backbone, projector); shuffle-BN under DDP."""
        shuffle = self.cfg.bn_mode == "shuffle" and dist.world_size() > 1
        if shuffle:
            x, inverse = shuffle_across_ranks(x, generator)
        g = self.encoder_k.net[0](x)
        k = self.encoder_k.net[1](g)
        kg = torch.cat([F.normalize(k.float(), dim=1), F.normalize(g.float(), dim=1)], dim=1)
        if shuffle:
            kg = unshuffle_across_ranks(kg, inverse)
        return kg[:, : k.shape[1]], kg[:, k.shape[1] :]

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        crops = self.views(batch.images, batch.generator).crops
        bank_z, bank_g = self.queue.items.clone(), self.queue_g.items.clone()
        filled = self.queue.filled.clone()
        # a tensor condition (no host sync); the epoch is a host int
        active = (filled >= self.cfg.topk) & (batch.epoch >= self.cfg.mls_start_epochs)
        # Before k entries exist the term is computed over the whole (random) queue, so it stays
        # finite, and multiplied by 0: the step has no data-dependent branch.
        valid = (torch.arange(bank_z.shape[0], device=bank_z.device) < filled) | ~active
        pairs = ((0, 1), (1, 0)) if self.cfg.symmetric else ((0, 1),)
        infonce = mls = acc = sim = 0.0
        self._pending = []
        for a, b in pairs:  # (query view, key view)
            q = self.encoder_q(crops[a]).float()
            k, g = self.key_features(crops[b], batch.generator)
            infonce = infonce + info_nce(q, k, bank_z, self.cfg.temperature)
            labels, _, top = topk_positives(g, bank_g, self.cfg.topk, valid)
            mls = mls + MLS_LOSSES[self.cfg.loss](q, bank_z, labels, self.tau, valid)
            acc = acc + contrastive_accuracy(q.detach(), k, bank_z)
            sim = sim + top.mean()
            self._pending.append((k, g, batch.index))
        n = len(pairs)
        infonce, mls = infonce / n, torch.where(active, mls / n, torch.zeros_like(mls))
        loss = infonce + self.cfg.mls_weight * mls
        logs = {"loss": loss.detach(), "infonce": infonce.detach(), "mls": mls.detach(),
                "contrastive_acc": acc / n, "topk_sim": torch.where(active, sim / n, torch.zeros_like(sim)),
                "queue_filled": filled.float()}
        return loss, logs

    @torch.no_grad()
    def after_step(self) -> None:
        """Momentum update, then enqueue (k2, g2, index) of every rank at one pointer."""
        self.encoder_k.update(self.encoder_q)
        if not self._pending:
            return
        k, g, index = (torch.cat(parts) for parts in zip(*self._pending))
        ptr = self.queue.ptr.clone()
        for queue, rows in ((self.queue, k), (self.queue_g, g), (self.queue_index, index)):
            queue.ptr.copy_(ptr)  # queue.ptr is the one pointer; the others follow it
            queue.enqueue(rows)
        self._pending = None
