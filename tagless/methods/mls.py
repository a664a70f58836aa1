"""MLS: multi-label self-supervised learning, MoCo-v2 with pseudo-labels mined from a queue.

[0] Zhu, Fu & Wu, Multi-Label Self-Supervised Learning with Scene Images, ICCV 2023
    (Sec. 3, Eq. 9; supplement A.2 for the architecture, B.1 for the ablation losses).

MLS is MoCo-v2 (methods/moco.py) plus a backbone queue Q_g aligned entry by entry with the
embedding queue Q_z: both hold the key view's features (backbone g2, projection z2 = k2), are
detached and are enqueued with the keys of every rank, one entry per image (view 2's, also
with the symmetric loss). For each query, the top-k entries of Q_g nearest (cosine) to the
query view's own backbone feature g1 ([0] Fig. 2: "the embedding g1 picks its top k nearest
embeddings from the queue Q_g"; ``mine_view: key`` mines with g2 instead) are positive
pseudo-labels over the D entries of Q_z, and the query embedding q = z1 is trained with a
binary cross-entropy over the D logits q.z_i / tau (Eq. 9), added to MoCo's InfoNCE:
``loss = InfoNCE + w x MLS``.
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

Diagnostics per epoch: ``queue_mean_norm`` (MoCo's: the norm of the mean of Q_z, near 1 when the
keys collapse to one direction) and, when the data has labels (never used for training),
``positive_precision``: the share of mined positives that share a class with their query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tagless.errors import TaglessError
from tagless.losses import contrastive_accuracy, info_nce
from tagless.losses.mls import MLS_LOSSES, topk_positives
from tagless.methods.common import KeyQueue, set_bn_groups, shuffled
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
    mine_view: str = "query"  # query: mine with g1, the query view's backbone feature ([0] Fig. 2) | key: g2

    def validate(self) -> None:
        super().validate()
        if self.queue_keys != "one":
            raise TaglessError("method.queue_keys: MLS keeps one entry per image (Q_g, Q_z and the index queue "
                               "are aligned entry by entry)")
        if self.loss not in MLS_LOSSES:
            raise TaglessError(f"method.loss: expected one of {', '.join(MLS_LOSSES)}, got {self.loss!r}")
        if self.mine_view not in ("query", "key"):
            raise TaglessError(f"method.mine_view: expected query or key, got {self.mine_view!r}")
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
        self._pending: tuple[torch.Tensor, ...] | None = None
        labelled = data is not None and data.label_kind != "none" and data.targets is not None
        self._targets = data.targets if labelled else None  # for positive_precision only
        self._precision = torch.zeros(2)  # (sum of per-query precisions, queries) this epoch

    @property
    def tau(self) -> float:
        return self.cfg.mls_temperature or self.cfg.temperature

    @torch.no_grad()
    def key_features(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, g): the key encoder's projection and pooled backbone feature of ``x``, both
        L2-normalised, from one pass (encoder_k.net = backbone, projector), through shuffle-BN."""
        def encode(v):
            g = self.encoder_k.net[0](v)
            k = self.encoder_k.net[1](g)
            return torch.cat([F.normalize(k.float(), dim=1), F.normalize(g.float(), dim=1)], dim=1)

        groups = self.bn_groups(x.shape[0])
        set_bn_groups(self.encoder_k, groups)
        kg = shuffled(encode, x, generator, groups) if self.cfg.bn_mode == "shuffle" else encode(x)
        d = self.cfg.proj_dim
        return kg[:, :d], kg[:, d:]

    def query_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, g): the query encoder's projection (with gradient) and its pooled backbone
        feature g1 (detached: mining sends no gradient), from one pass."""
        set_bn_groups(self.encoder_q, self.bn_groups(x.shape[0]))
        g = self.encoder_q[0](x)
        return self.encoder_q[1](g).float(), g.detach().float()

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
        for a, b in pairs:  # (query view, key view)
            q, g_query = self.query_features(crops[a])
            k, g_key = self.key_features(crops[b], batch.generator)
            infonce = infonce + info_nce(q, k, bank_z, self.cfg.temperature)
            labels, index, top = topk_positives(g_query if self.cfg.mine_view == "query" else g_key, bank_g,
                                                self.cfg.topk, valid)
            mls = mls + MLS_LOSSES[self.cfg.loss](q, bank_z, labels, self.tau, valid)
            acc = acc + contrastive_accuracy(q.detach(), k, bank_z)
            sim = sim + top.mean()
            self._count_precision(batch.index, index, filled >= self.cfg.topk)
            if (a, b) == (0, 1):
                self._pending = (k, g_key, batch.index)  # one queue entry per image: view 2's
        n = len(pairs)
        infonce, mls = infonce / n, torch.where(active, mls / n, torch.zeros_like(mls))
        loss = infonce + self.cfg.mls_weight * mls
        logs = {"loss": loss.detach(), "infonce": infonce.detach(), "mls": mls.detach(),
                "contrastive_acc": acc / n, "topk_sim": torch.where(active, sim / n, torch.zeros_like(sim)),
                "queue_filled": filled.float()}
        return loss, logs

    @torch.no_grad()
    def _count_precision(self, query_index: torch.Tensor, picks: torch.Tensor, active: torch.Tensor) -> None:
        """Add this step's share of mined positives (``picks``: B x k queue positions) whose
        image shares a class with the query's image (no host sync)."""
        if self._targets is None:
            return
        t = self._targets
        neighbours = self.queue_index.items[picks].clamp(min=0)  # dataset indices, B x k
        if t.dim() == 1:  # single labels: the same known class
            q = t[query_index][:, None]
            share = (t[neighbours] == q) & (q >= 0)
        else:  # multi-label: at least one common positive
            share = ((t[neighbours] == 1) & (t[query_index][:, None] == 1)).any(-1)
        per_query = share.float().mean(1)
        on = active.float()
        self._precision = self._precision.to(per_query.device) + on * torch.stack(
            [per_query.sum(), torch.tensor(float(len(per_query)), device=per_query.device)])

    def epoch_logs(self) -> dict:
        logs = super().epoch_logs()
        if self._targets is not None and float(self._precision[1]) > 0:
            logs["positive_precision"] = float(100 * self._precision[0] / self._precision[1])
        self._precision = torch.zeros_like(self._precision)
        return logs

    @torch.no_grad()
    def after_step(self) -> None:
        """Momentum update, then enqueue (k2, g2, index) of every rank at one pointer."""
        self.encoder_k.update(self.encoder_q)
        if not self._pending:
            return
        k, g, index = self._pending
        ptr = self.queue.ptr.clone()
        for queue, rows in ((self.queue, k), (self.queue_g, g), (self.queue_index, index)):
            queue.ptr.copy_(ptr)  # queue.ptr is the one pointer; the others follow it
            queue.enqueue(rows)
        self._pending = None
