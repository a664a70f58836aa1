"""SeLa: self-labelling via simultaneous clustering and representation learning.

[0] Asano, Rupprecht & Vedaldi, ICLR 2020 (paper 002). Sec. 3.1: alternate Step 1, training the
    network with cross-entropy against the current labels (Eq. 1), and Step 2, re-labelling the
    whole dataset by the equipartition transport problem (Eq. 6-8, solved by Sinkhorn-Knopp,
    lambda = 25). Sec. 3.5: T heads of K clusters each, [K x T]. Appendix A.1: M label
    updates at t_i = (i / (M - 1))^2 x epochs.
Official code: yukimasano/self-label (``main.py``, ``sinkhornknopp.py``): balanced random
initial labels, the loss averaged over heads, P = softmax of each head.

Baselines of [0], each a config switch in the same loop: ``labeller: kmeans`` (labels from
K-means on the features, Sec. 3.3 / Table 8's "ours (K-means)"), ``labeller: random`` (the
initial random labels, never updated: Table 1's 0 updates), ``prior`` (non-uniform cluster
marginals), and ``labels_csv`` (label transfer, Sec. 4.3: train on exported labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tagless.errors import TaglessError
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo, EpochContext
from tagless.methods.sela_labels import cluster_prior, kmeans_labels, read_labels_csv
from tagless.models.heads import MultiHead, mlp
from tagless.ot import sinkhorn


@dataclass
class SelaConfig(MethodConfig):
    """SeLa [K x T]; defaults are paper 002's ImageNet setting [3k x 1] (lambda 25)."""

    name: str = "sela"
    num_clusters: int = 3000  # K of every head
    num_heads: int = 1  # T
    head_clusters: list[int] = field(default_factory=list)  # per-head K instead (e.g. [10, 30, 30])
    hidden_layers: int = 0  # MLP between backbone and heads (AlexNet's fc6-fc7: 2)
    hidden_dim: int = 4096
    label_updates: int = 100  # M: label updates at t_i = (i / (M - 1))^2 x epochs
    labeller: str = "sinkhorn"  # sinkhorn | kmeans | random
    lam: float = 25.0  # lambda of Eq. 7
    sinkhorn_tol: float = 1e-4  # L1 error of the cluster marginals
    sinkhorn_max_iters: int = 1000
    label_pass: str = "eval"  # eval: the eval view | augmented: training views (Sec. 3.4), eval-mode BN
    label_views: int = 1  # augmented: average log P over this many views (E_t of Sec. 3.4)
    prior: str = "uniform"  # cluster marginals: uniform | zipf | gauss (ordered by predicted mass)
    prior_param: float = 1.0  # zipf exponent s, or gauss relative std
    labels_csv: str = ""  # label transfer: start from these labels (tagless labels RUN_DIR)

    def validate(self) -> None:
        for key, valid in (("labeller", ("sinkhorn", "kmeans", "random")), ("label_pass", ("eval", "augmented")),
                           ("prior", ("uniform", "zipf", "gauss"))):
            if getattr(self, key) not in valid:
                raise TaglessError(f"method.{key}: expected one of {', '.join(valid)}, got {getattr(self, key)!r}")
        if min(self.clusters(), default=0) < 2 or self.label_updates < 0 or self.lam <= 0 or self.label_views < 1:
            raise TaglessError("method (sela): need >= 2 clusters per head, label_updates >= 0, lam > 0, "
                               "label_views >= 1")

    def clusters(self) -> list[int]:
        return list(self.head_clusters) or [self.num_clusters] * self.num_heads


def update_epochs(updates: int, epochs: int) -> list[int]:
    """Epochs that start with a label update: floor(t_i) for t_i = (i / (M - 1))^2 x epochs,
    i = 0..M-1 ([0] appendix A.1); updates that fall in one epoch happen once, and t = epochs
    (after training) is dropped. The first is epoch 0, before any training."""
    if updates <= 0:
        return []
    t = (np.arange(updates) / max(updates - 1, 1)) ** 2 * epochs
    return sorted({int(e) for e in np.floor(t) if e < epochs})


class SeLa(nn.Module):
    """Backbone -> optional MLP -> T linear heads, trained against per-image labels L (T x N)."""

    Config = SelaConfig

    def __init__(self, backbone: nn.Module, views, cfg: SelaConfig, data: DataInfo, seed: int = 0):
        super().__init__()
        self.cfg, self.views, self.seed = cfg, views, seed
        self.backbone = backbone
        dim = backbone.out_dim
        if cfg.hidden_layers:
            self.hidden = mlp(dim, cfg.hidden_dim, cfg.hidden_dim, num_layers=cfg.hidden_layers, bn=False,
                              last_relu=True)
            dim = cfg.hidden_dim
        else:
            self.hidden = nn.Identity()
        self.heads = MultiHead(dim, cfg.clusters())
        n, ks = data.num_images, cfg.clusters()
        if cfg.labels_csv:  # label transfer (Sec. 4.3)
            labels = read_labels_csv(cfg.labels_csv, n, ks, paths=data.paths)
        else:  # balanced random start, as the official code: i mod K, permuted per head
            rng = np.random.default_rng([seed, 2020])
            labels = np.stack([rng.permutation(np.arange(n) % k) for k in ks])
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.long))  # T x N, per-image state
        self.register_buffer("confidence", torch.zeros(n))  # head 0's plan probability of its label
        self.register_buffer("beta", torch.zeros(len(ks), max(ks), dtype=torch.float64))  # warm starts (0: none yet)
        self._logs: dict = {}

    def forward(self, batch: Batch):
        return self.step(batch)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.backbone(x))

    # ---- Step 1: representation learning (Eq. 1, averaged over heads and views) ----------
    def step(self, batch: Batch):
        views = self.views(batch.images, batch.generator).crops
        logits = self.heads(self.trunk(torch.cat(views)))
        targets = self.labels[:, batch.index].repeat(1, len(views))  # T x (V * B)
        losses = [F.cross_entropy(out.float(), targets[h]) for h, out in enumerate(logits)]
        loss = torch.stack(losses).mean()
        agree = (logits[0].argmax(1) == targets[0]).float().mean()
        return loss, {"loss": loss.detach(), "label_acc": agree.detach()}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.parameters())}]

    # ---- Step 2: self-labelling at the scheduled epochs -----------------------------------
    @torch.no_grad()
    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        if self.cfg.labeller == "random" or epoch not in update_epochs(self.cfg.label_updates, ctx.epochs):
            self._logs = {}
            return
        feats = self._features(ctx)
        scores = (self._log_probs(ctx) if self.cfg.label_pass == "augmented" and self.cfg.labeller == "sinkhorn"
                  else None)
        before = self.labels.clone()
        logs = {}
        for h, head in enumerate(self.heads.heads):
            k = head.out_features
            if self.cfg.labeller == "kmeans":
                labels, conf = kmeans_labels(ctx.gather(feats), k, seed=self.seed + 1000 * epoch + h)
            else:  # this rank's rows, N_local x K: logits, or log P averaged over views
                logits = head(feats).float() if scores is None else scores[h]
                prior = cluster_prior(self.cfg.prior, self.cfg.prior_param, logits, ctx)
                warm = self.beta[h, :k] if bool(self.beta[h, :k].any()) else None
                res = sinkhorn(logits, lam=self.cfg.lam, col_marginals=prior, beta=warm,
                               tol=self.cfg.sinkhorn_tol, max_iters=self.cfg.sinkhorn_max_iters,
                               output="probs", inplace=True, dtype=torch.float64)
                self.beta[h, :k] = res.beta
                labels = ctx.gather(res.labels)
                conf = ctx.gather(res.probs.gather(1, res.labels[:, None]).squeeze(1))
                logs.update({f"sinkhorn_iters_{h}": res.iterations, f"sinkhorn_error_{h}": res.error})
            self.labels[h] = labels
            if h == 0:
                self.confidence.copy_(conf)
        logs["labels_changed"] = float((self.labels != before).float().mean())
        logs["label_update_epoch"] = float(epoch)
        truth = ctx.data.targets
        if ctx.data.label_kind == "single" and bool((truth >= 0).any()):  # the monitor of each re-labelling
            from tagless.eval import nmi

            known = (truth >= 0).cpu().numpy()
            logs["label_nmi"] = 100 * nmi(truth.cpu().numpy()[known], self.labels[0].cpu().numpy()[known])
        self._logs = logs

    def _features(self, ctx: EpochContext) -> torch.Tensor:
        """This rank's trunk features of every training image, eval view, eval-mode BN."""
        was = self.training
        self.eval()
        _, feats = ctx.dataset_pass(self.trunk, gather=False)
        self.train(was)
        return feats.float()

    def _log_probs(self, ctx: EpochContext) -> list[torch.Tensor]:
        """Per head, this rank's log P averaged over ``label_views`` training views: [0] Sec. 3.4,
        P_yi = E_t[log softmax h(Phi(t x_i))], so the labels are transformation invariant."""
        sizes = self.cfg.clusters()
        if ctx.data.num_images * sum(sizes) * 4 > 16 * 2**30:
            raise TaglessError(f"method.label_views={self.cfg.label_views} keeps log P of every head for every image "
                               f"({ctx.data.num_images} x {sum(sizes)} floats); "
                               f"use method.label_pass=eval at this size")
        was = self.training
        self.eval()
        total = 0
        for v in range(self.cfg.label_views):
            views = lambda images, g, v=v: self.views(images,
                                                      torch.Generator(g.device).manual_seed(g.initial_seed() + v))
            fn = lambda vw: torch.cat([F.log_softmax(out.float(), 1) for out in self.heads(self.trunk(vw.crops[0]))], 1)
            total = total + ctx.dataset_pass(fn, views=views, gather=False)[1]
        self.train(was)
        return list((total / self.cfg.label_views).split(sizes, dim=1))

    def epoch_logs(self) -> dict:
        return self._logs

    def pseudo_labels(self) -> torch.Tensor:
        """N x T: the current label of every image under every head."""
        return self.labels.T
