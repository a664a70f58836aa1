"""SeLa: self-labelling via simultaneous clustering and representation learning.

[0] Asano, Rupprecht & Vedaldi, ICLR 2020 (paper 002). Sec. 3.1: alternate Step 1, training the
    network with cross-entropy against the current labels (Eq. 1), and Step 2, re-labelling the
    whole dataset by the equipartition transport problem (Eq. 6-8, solved by Sinkhorn-Knopp,
    lambda = 25). Sec. 3.5: T heads of K clusters each, [K x T]. Appendix A.1: M label
    updates at t_i = (i / (M - 1))^2 x epochs.
Official code: yukimasano/self-label (``main.py``, ``sinkhornknopp.py``, ``models/alexnet.py``):
balanced random initial labels, the loss averaged over heads, P = softmax of each head; AlexNet's
fc6-fc7 as Dropout(0.5), Linear, ReLU twice; every Linear drawn from N(0, 0.01) with zero bias;
labels from one pass of the shuffled training loader with the network in train mode
(``label_pass: train`` here).

Baselines of [0], each a config switch in the same loop: ``labeller: kmeans`` (labels from
K-means on the features, Sec. 3.3 / Table 8's "ours (K-means)"), ``labeller: random`` (the
initial random labels, never updated: Table 1's 0 updates), ``prior`` (non-uniform cluster
marginals), and ``labels_csv`` (label transfer, Sec. 4.3: train on exported labels).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tagless.config_io import AtLeastOne, Count, Positive
from tagless.errors import TaglessError
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo, EpochContext
from tagless.methods.sela_labels import cluster_prior, kmeans_labels, read_labels_csv
from tagless.models.heads import MultiHead, mlp, normal_init
from tagless.ot import sinkhorn


@dataclass
class SelaConfig(MethodConfig):
    """SeLa [K x T]; defaults are paper 002's ImageNet setting [3k x 1] (lambda 25).

    label_pass: eval (eval view, eval mode) | augmented (training views, eval mode; Sec. 3.4) | train (official)

    ``label_pass: train`` is the official code's pass: one training view per image with the
    network in train mode (BN on batch statistics, also updating its running averages; dropout
    on), images drawn in a seeded random order in batches of ``label_batch_size``.
    """

    name: str = "sela"
    num_clusters: int = 3000  # K of every head
    num_heads: int = 1  # T
    head_clusters: list[int] = field(default_factory=list)  # per-head K instead (e.g. [10, 30, 30])
    hidden_layers: Count = 0  # MLP between backbone and heads (AlexNet's fc6-fc7: 2)
    hidden_dim: AtLeastOne = 4096
    hidden_dropout: float = 0.5  # Dropout(p) before each hidden Linear (official AlexNet fc6-fc7); 0: none
    init_std: float = 0.01  # hidden and head Linear weights ~ N(0, std), bias 0 (the official init); 0: PyTorch's
    label_updates: int = -1  # M: updates at t_i = (i / (M - 1))^2 x epochs; -1 = auto: 100, or 0 with labels_csv
    labeller: str = "sinkhorn"  # sinkhorn | kmeans | random
    lam: float = 25.0  # lambda of Eq. 7
    sinkhorn_tol: Positive = 1e-4  # L1 error of the cluster marginals
    sinkhorn_max_iters: AtLeastOne = 1000  # a solve stopping here unconverged is logged and warned about (once)
    label_pass: str = "eval"
    label_views: int = 1  # augmented / train: average log P over this many views (E_t of Sec. 3.4)
    label_batch_size: int = 256  # train: images per forward over all ranks (its BN batch; official: the training batch)
    prior: str = "uniform"  # cluster marginals: uniform | zipf | gauss (ordered by predicted mass)
    prior_param: Positive = 1.0  # zipf exponent s, or gauss relative std
    labels_csv: str = ""  # label transfer: start from these labels (tagless labels RUN_DIR); never re-labelled at 0

    def validate(self) -> None:
        for key, valid in (("labeller", ("sinkhorn", "kmeans", "random")),
                           ("label_pass", ("eval", "augmented", "train")), ("prior", ("uniform", "zipf", "gauss"))):
            if getattr(self, key) not in valid:
                raise TaglessError(f"method.{key}: expected one of {', '.join(valid)}, got {getattr(self, key)!r}")
        if min(self.clusters(), default=0) < 2 or self.label_updates < -1 or self.lam <= 0 or self.label_views < 1:
            raise TaglessError("method (sela): need >= 2 clusters per head, label_updates >= 0 (or -1: auto), "
                               "lam > 0, label_views >= 1")
        if not 0 <= self.hidden_dropout < 1 or self.init_std < 0 or self.label_batch_size < 2:
            raise TaglessError("method (sela): need 0 <= hidden_dropout < 1, init_std >= 0, label_batch_size >= 2")

    def clusters(self) -> list[int]:
        return list(self.head_clusters) or [self.num_clusters] * self.num_heads

    def updates(self) -> int:
        """M, with the auto default (-1) resolved: 0 with labels_csv (train on the transferred
        labels, Sec. 4.3), else 100 (appendix A.1's ImageNet setting)."""
        if self.label_updates >= 0:
            return self.label_updates
        return 0 if self.labels_csv else 100


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
                              last_relu=True, dropout=cfg.hidden_dropout)
            for layer in self.hidden.modules():
                if isinstance(layer, nn.Linear) and cfg.init_std:
                    normal_init(layer, cfg.init_std)
            dim = cfg.hidden_dim
        else:
            self.hidden = nn.Identity()
        self.trunk_dim = dim
        self.heads = MultiHead(dim, cfg.clusters(), init_std=cfg.init_std)
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
        self._warned_unconverged = False

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
    def schedule(self, epochs: int) -> list[int]:
        """The epochs that start with a label update. With ``labels_csv`` the update at epoch 0
        (on the untrained network) is dropped: it would overwrite the transferred labels."""
        epochs_ = update_epochs(self.cfg.updates(), epochs)
        return [e for e in epochs_ if e > 0] if self.cfg.labels_csv else epochs_

    @torch.no_grad()
    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        if self.cfg.labeller == "random" or epoch not in self.schedule(ctx.epochs):
            self._logs = {}
            return
        sinkhorn_pass = self.cfg.labeller == "sinkhorn"
        if sinkhorn_pass and self.cfg.label_pass != "eval" and self.cfg.label_views > 1:
            feats, scores = None, self._log_probs(ctx)
        else:  # K-means clusters the eval-view features, whatever the label pass
            feats, scores = self._features(ctx, self.cfg.label_pass if sinkhorn_pass else "eval"), None
        before = self.labels.clone()
        logs = {}
        for h, head in enumerate(self.heads.heads):
            k = head.out_features
            if self.cfg.labeller == "kmeans":
                labels, conf = kmeans_labels(ctx.gather(feats), k, seed=self.seed + 1000 * epoch + h)
            else:  # this rank's rows, N_local x K: fp32 logits, or log P averaged over views
                logits = self._fp32_heads(feats, h) if scores is None else scores[h]
                prior = cluster_prior(self.cfg.prior, self.cfg.prior_param, logits, ctx)
                stored = self.beta[h, :k]
                usable = bool(torch.isfinite(stored).all() and (stored >= 0).all() and (stored > 0).any())
                res = sinkhorn(logits, lam=self.cfg.lam, col_marginals=prior, beta=stored if usable else None,
                               tol=self.cfg.sinkhorn_tol, max_iters=self.cfg.sinkhorn_max_iters,
                               output="probs", inplace=True, dtype=torch.float64)
                self.beta[h, :k] = res.beta
                labels = ctx.gather(res.labels)
                conf = ctx.gather(res.probs.gather(1, res.labels[:, None]).squeeze(1))
                logs.update({f"sinkhorn_iters_{h}": res.iterations, f"sinkhorn_error_{h}": res.error,
                             f"sinkhorn_converged_{h}": float(res.converged)})
                if not res.converged:
                    self._warn_unconverged(h, epoch, res.error)
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

    def _warn_unconverged(self, head: int, epoch: int, error: float) -> None:
        if not self._warned_unconverged:
            self._warned_unconverged = True
            warnings.warn(f"SeLa: Sinkhorn stopped at method.sinkhorn_max_iters={self.cfg.sinkhorn_max_iters} with "
                          f"marginal error {error:.3g} > method.sinkhorn_tol={self.cfg.sinkhorn_tol} (head {head}, "
                          f"epoch {epoch}); the labels come from an unconverged plan (sinkhorn_converged_* in the "
                          f"epoch logs). Warned once per run.", stacklevel=2)

    def _fp32_heads(self, feats: torch.Tensor, h: int | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Head ``h``'s logits (or every head's, ``h=None``) in fp32 whatever the ambient autocast:
        Sinkhorn raises P to the power lambda, so bf16 logits would be off by exp(lambda x 2^-8 |l|)."""
        device_type = feats.device.type
        off = (torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type)
               else contextlib.nullcontext())
        with off:
            x = feats.float()
            return self.heads(x) if h is None else self.heads.heads[h](x)

    def _features(self, ctx: EpochContext, label_pass: str = "eval") -> torch.Tensor:
        """This rank's trunk features of every training image: the eval view in eval mode
        (``eval``), one training view in eval mode (``augmented``) or in train mode, shuffled
        (``train``)."""
        if label_pass == "train":
            return self._train_mode_pass(ctx, 0)
        was = self.training
        self.eval()
        if label_pass == "eval":
            _, feats = ctx.dataset_pass(self.trunk, gather=False)
        else:
            _, feats = ctx.dataset_pass(lambda vw: self.trunk(vw.crops[0]), views=self._view_maker(0), gather=False)
        self.train(was)
        return feats.float()

    def _view_maker(self, v: int):
        """The run's training views, the ``v``-th draw of the epoch pass's generator."""
        return lambda images, g: self.views(images, torch.Generator(g.device).manual_seed(g.initial_seed() + v))

    @torch.no_grad()
    def _train_mode_pass(self, ctx: EpochContext, v: int, fn=None, dim: int | None = None) -> torch.Tensor:
        """``fn`` (default: the trunk; ``dim`` outputs) of this rank's images, one training view
        each, with the network in train mode, in a seeded random order and batches of about
        ``label_batch_size / world_size`` (the official label pass: the shuffled training loader,
        so a batch's BN statistics do not follow the dataset's order). Rows come back in index
        order. Runs under the caller's autocast (the epoch context does not say whether
        ``train.amp`` is on)."""
        fn = fn or self.trunk
        idx = ctx.indices()
        order = np.random.default_rng([self.seed, 2020, ctx.epoch, ctx.rank, v]).permutation(len(idx))
        per_rank = max(2, self.cfg.label_batch_size // max(ctx.world_size, 1))
        was = self.training
        self.train()
        outs = []
        for part in np.array_split(order, max(1, round(len(order) / per_rank))):  # no batch of 1 for BN
            pick = idx[part]
            seed = int(np.random.SeedSequence([self.seed, 2020, ctx.epoch, v, int(pick[0])]).generate_state(1)[0])
            images = ctx.data.read(pick)
            outs.append(fn(self.views(images, torch.Generator(images.device).manual_seed(seed)).crops[0]).float())
        self.train(was)
        if not outs:
            return torch.empty(0, dim or self.trunk_dim, device=ctx.device)
        out = torch.cat(outs)  # row j is local image order[j]
        return torch.empty_like(out).index_copy_(0, torch.as_tensor(order, device=out.device), out)

    def _log_probs(self, ctx: EpochContext) -> list[torch.Tensor]:
        """Per head, this rank's log P averaged over ``label_views`` training views: [0] Sec. 3.4,
        P_yi = E_t[log softmax h(Phi(t x_i))], so the labels are transformation invariant. The
        heads run in fp32 (`_fp32_heads`); the network in eval mode, or train mode for
        ``label_pass: train``."""
        sizes = self.cfg.clusters()
        if ctx.data.num_images * sum(sizes) * 4 > 16 * 2**30:
            raise TaglessError(f"method.label_views={self.cfg.label_views} keeps log P of every head for every image "
                               f"({ctx.data.num_images} x {sum(sizes)} floats); "
                               f"use method.label_views=1 at this size")
        fn = lambda x: torch.cat([F.log_softmax(out, 1) for out in self._fp32_heads(self.trunk(x))], 1)
        was = self.training
        self.eval()
        total = 0
        for v in range(self.cfg.label_views):
            if self.cfg.label_pass == "train":
                scores = self._train_mode_pass(ctx, v, fn, dim=sum(sizes))
            else:
                scores = ctx.dataset_pass(lambda vw: fn(vw.crops[0]), views=self._view_maker(v), gather=False)[1]
            total = total + scores
        self.train(was)
        return list((total / self.cfg.label_views).split(sizes, dim=1))

    def epoch_logs(self) -> dict:
        return self._logs

    def pseudo_labels(self) -> torch.Tensor:
        """N x T: the current label of every image under every head."""
        return self.labels.T
