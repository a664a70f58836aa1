"""LoGo: local crops attract the global crops and repel each other through a learned critic.

[0] Zhang et al., Leverage Your Local and Global Representations: A New Self-Supervised Learning
    Strategy, CVPR 2022 (paper 004): Eq. 3-6, Eq. 9, Algorithm 1; supplement Sec. 1 (crops).
[1] Official code ztt1024/LoGo-SSL (MoCo-LoGo only): ``trainers.train_moco``, ``builder.py``.
Every crop (2 global + n local, ``views.recipe: logo``) passes the encoder once, and MoCo's key
encoder sees the globals only; [1] encodes the locals twice and keys all four crops (notes A.8).
The queue gets one key per image (global crop 2's), as method moco; [1] enqueues both globals.
``objective: all_pairs`` is the supplement's "4-crop" baseline on the same crops (no critic).
The critic T([z_a, z_b]) (2 hidden layers of 256, BN, ReLU) learns the JSD objective on detached
z with its own constant-lr SGD; L_ll calls it with detached parameters, so one backward fills
both (docs/ARCHITECTURE.md). ``ll_mode: weighted`` adds lambda L_ll ([0] Eq. 9); ``clipped`` is
[1]'s MoCo-LoGo: a second SGD step ("logo") along grad L_ll, clipped to clip_ratio x |grad main|.
NOTE: [1] clips to the previous iteration's norm (0 at the first step); we use this step's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.utils import get_total_norm

from tagless import distributed as dist
from tagless.config_io import AtLeastOne, Count
from tagless.errors import TaglessError
from tagless.losses.contrastive import contrastive_accuracy
from tagless.losses.logo import (
    critic_objective,
    derangement,
    local_local,
    moco_all_pairs_loss,
    moco_logo_loss,
    simsiam_all_pairs_loss,
    simsiam_logo_loss,
)
from tagless.methods.common import (
    KeyQueue,
    MomentumEncoder,
    convert_split_batchnorm,
    grouped,
    resolve_bn_groups,
    set_bn_groups,
    shuffled,
)
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo, OptimizerSpec
from tagless.models.heads import mlp


@dataclass
class LogoConfig(MethodConfig):
    """LoGo on MoCo-v2 or SimSiam; defaults from [1] unless noted."""

    name: str = "logo"
    base: str = "moco"  # moco (MoCo-LoGo) | simsiam (SimSiam-LoGo)
    proj_dim: int = 128  # d of z; the critic sees [z_a, z_b] (2d)
    proj_hidden_dim: Count = 0  # 0 = the backbone's width
    proj_layers: int = 2  # simsiam projector (its CIFAR setting); MoCo's is 2 layers without BN
    pred_hidden_dim: AtLeastOne = 512  # simsiam predictor bottleneck
    fix_predictor_lr: bool = True  # simsiam
    queue_size: int = 4096  # moco K ([1]: 4096)
    momentum: float = 0.999  # moco key encoder EMA
    temperature: float = 0.2  # moco T (MoCo-v2; [1] uses 0.07)
    bn_mode: str = "default"  # default (moco: shuffle, simsiam: sync) | shuffle (moco) | sync | local
    bn_groups: int = 0  # moco, shuffle on one process: BN groups emulating GPUs (0 = auto, as method moco)
    critic_hidden: int = 256  # width of the critic's 2 hidden layers
    critic_lr_per_256: float = 0.03  # constant lr of the critic's SGD (momentum 0.9, wd 1e-4)
    noise_std: float = 0.3  # noise on the critic's positives: N(0, (noise_std / sqrt(d))^2)
    ll_mode: str = "weighted"  # weighted (+ ll_weight L_ll, [0] Eq. 9) | clipped ([1]'s MoCo-LoGo step)
    ll_weight: float = 1e-4  # lambda ([0]: 1e-4 for SimSiam-LoGo)
    clip_ratio: float = 0.015  # clipped: |step along grad L_ll| <= clip_ratio x |grad main|
    objective: str = "logo"  # logo (L_gg + L_lg + L_ll) | all_pairs: the supplement's "4-crop" baseline,
    # every crop a positive of every other (local crops as targets too), no critic, no L_ll

    def validate(self) -> None:
        for key, valid in (("base", ("moco", "simsiam")), ("ll_mode", ("weighted", "clipped")),
                           ("objective", ("logo", "all_pairs")),
                           ("bn_mode", ("default", "shuffle", "sync", "local") if self.base == "moco" else
                            ("default", "sync", "local"))):
            if getattr(self, key) not in valid:
                raise TaglessError(f"method.{key}: expected one of {', '.join(valid)}, got {getattr(self, key)!r}")
        if (self.queue_size < 1 or not 0.0 <= self.momentum < 1.0 or min(self.temperature, self.critic_lr_per_256) <= 0
                or min(self.proj_dim, self.critic_hidden, self.proj_layers) < 1
                or min(self.noise_std, self.ll_weight, self.clip_ratio, self.bn_groups) < 0):
            raise TaglessError("method (logo): need queue_size and dims >= 1, 0 <= momentum < 1, temperature and "
                               "critic_lr_per_256 > 0, noise_std, ll_weight and clip_ratio >= 0")


class Logo(nn.Module):
    """f = projector(backbone) (+ predictor for SimSiam, + EMA key encoder and queue for MoCo), critic T."""

    Config = LogoConfig

    def __init__(self, backbone: nn.Module, views, cfg: LogoConfig, data: DataInfo | None = None, seed: int = 0):
        super().__init__()
        kinds = getattr(views, "kinds", None)
        if kinds is not None and (kinds.count("global") != 2 or kinds.count("local") < 2):
            raise TaglessError(f"method (logo): needs 2 global and >= 2 local crops (views.recipe: logo), got {kinds}")
        self.cfg, self.views, self.backbone, moco = cfg, views, backbone, cfg.base == "moco"
        self.bn = cfg.bn_mode if cfg.bn_mode != "default" else ("shuffle" if moco else "sync")
        hidden = cfg.proj_hidden_dim or backbone.out_dim
        sync = dist.convert_sync_batchnorm if self.bn == "sync" else (lambda module: module)
        self.projector = (mlp(backbone.out_dim, hidden, cfg.proj_dim, num_layers=2, bn=False) if moco else
                          mlp(backbone.out_dim, hidden, cfg.proj_dim, cfg.proj_layers, bn=True, last_bn=True))
        self.encoder = sync(nn.Sequential(self.backbone, self.projector))
        self.backbone, self.projector = self.encoder[0], self.encoder[1]
        if self.bn == "shuffle":
            convert_split_batchnorm(self.encoder)  # the key encoder below is a copy: split too
        if moco:
            self.encoder_k = MomentumEncoder(self.encoder, cfg.momentum)
            self.queue = KeyQueue(cfg.queue_size, cfg.proj_dim, seed=seed)
        else:
            self.predictor = sync(mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, num_layers=2, bn=True))
        self.critic = (mlp(2 * cfg.proj_dim, cfg.critic_hidden, 1, num_layers=3, bn=True) if cfg.objective == "logo"
                       else None)  # all_pairs: no local-local term, no critic
        self._keys = self._ll_grads = self._main_norm = None  # handed from step to the optimiser hooks

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        return self.step(batch)  # DDP calls forward

    def _groups(self, batch: int) -> int:
        return resolve_bn_groups(self.cfg.bn_groups, batch) if self.bn == "shuffle" else 1

    def encode(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """f(x) of crops of one size concatenated, in one pass; on one process with shuffle-BN
        each BN group holds every crop of its share of the images (what one GPU would see)."""
        groups = self._groups(crops[0].shape[0])
        set_bn_groups(self.encoder, groups)
        return grouped(self.encoder, torch.cat(crops), len(crops), groups)

    @torch.no_grad()
    def keys(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """k = f_k(x), L2-normalised, through shuffle-BN (across ranks under DDP, across BN groups
        on one process)."""
        encode = lambda v: F.normalize(self.encoder_k(v), dim=1)
        if self.bn != "shuffle":
            return encode(x)
        groups = self._groups(x.shape[0])
        set_bn_groups(self.encoder_k, groups)
        return shuffled(encode, x, generator, groups)

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        cfg, g, logs = self.cfg, batch.generator, {}
        views = self.views(batch.images, g)
        crops = {kind: [x for x, k in zip(views.crops, views.kinds) if k == kind] for kind in ("global", "local")}
        xg, n_local = torch.cat(crops["global"]), len(crops["local"])  # 2B x C x S x S globals, n_local locals
        zg, zl = self.encode(crops["global"]), self.encode(crops["local"])  # one pass per crop size
        if cfg.objective == "all_pairs":
            return self._all_pairs(crops, zg, zl, g)
        if cfg.base == "moco":
            k = self.keys(xg, g)  # the key encoder sees the globals only
            negatives, self._keys = self.queue.items.clone(), k.chunk(2)[1]  # one key per image, as moco
            main, l_gg, l_lg = moco_logo_loss(zg.chunk(2), zl.chunk(n_local), k.chunk(2), negatives, cfg.temperature)
            logs["contrastive_acc"] = contrastive_accuracy(zg.chunk(2)[0].detach(), k.chunk(2)[1], negatives)
        else:
            p_g, p_l = self.predictor(zg).chunk(2), self.predictor(zl).chunk(n_local)
            main, l_gg, l_lg = simsiam_logo_loss(p_g, zg.chunk(2), p_l)
        l_ll, l_critic, t = self.local_terms(F.normalize(zl.float(), dim=1).chunk(n_local), g)
        loss = main + l_critic  # the critic term moves only the critic (detached inputs)
        if cfg.ll_mode == "weighted":
            loss = loss + cfg.ll_weight * l_ll
        elif l_ll.requires_grad:
            self._ll_grads = self._gradient(l_ll)
        logs.update(loss=loss.detach(), L_gg=l_gg.detach(), L_lg=l_lg.detach(), L_ll=l_ll.detach(),
                    critic_loss=l_critic.detach(), critic_min=t.min(), critic_max=t.max())
        return loss, logs

    def _all_pairs(self, crops: dict, zg: torch.Tensor, zl: torch.Tensor, g: torch.Generator):
        """The multi-crop baseline on the same crops (``objective: all_pairs``)."""
        n_global, n_local = len(crops["global"]), len(crops["local"])
        if self.cfg.base == "moco":
            keys = [*self.keys(torch.cat(crops["global"]), g).chunk(n_global),
                    *self.keys(torch.cat(crops["local"]), g).chunk(n_local)]
            negatives, self._keys = self.queue.items.clone(), keys[1]  # one key per image: global 2's
            loss = moco_all_pairs_loss([*zg.chunk(n_global), *zl.chunk(n_local)], keys, negatives,
                                       self.cfg.temperature)
        else:
            z = [*zg.chunk(n_global), *zl.chunk(n_local)]
            loss = simsiam_all_pairs_loss([*self.predictor(zg).chunk(n_global), *self.predictor(zl).chunk(n_local)], z)
        return loss, {"loss": loss.detach()}

    def local_terms(self, u: tuple[torch.Tensor, ...], g: torch.Generator):
        """(L_ll through a critic with detached parameters, the critic objective with noise and a
        derangement, the critic's scores), each averaged over the pairs of local crops u (normalised z)."""
        frozen = {name: p.detach() for name, p in self.critic.named_parameters()}
        scores: list[torch.Tensor] = []

        def critic(x):
            scores.append(self.critic(x))
            return scores[-1]

        pairs, (b, d), dev = list(itertools.combinations(range(len(u)), 2)), u[0].shape, u[0].device
        l_ll = sum(local_local(lambda x: functional_call(self.critic, frozen, (x,)), u[i], u[j]) for i, j in pairs)
        l_critic = 0.0
        for i, j in pairs:
            noise = torch.randn(2, b, d, generator=g, device=dev) * (self.cfg.noise_std / math.sqrt(d))
            l_critic = l_critic + critic_objective(critic, u[i], u[j], noise[0], noise[1], derangement(b, g, dev))
        return l_ll / len(pairs), l_critic / len(pairs), torch.cat(scores).detach().float()

    def _encoder_params(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def _gradient(self, l_ll: torch.Tensor) -> list[torch.Tensor]:
        """grad of L_ll on the encoder, averaged over ranks (one flat all-reduce)."""
        params = self._encoder_params()
        grads = torch.autograd.grad(l_ll, params, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if gr is None else gr for p, gr in zip(params, grads)]
        flat = dist.all_reduce_mean(torch.cat([gr.reshape(-1).float() for gr in grads]))
        return [f.view_as(p).to(p.dtype) for f, p in zip(flat.split([p.numel() for p in params]), params)]

    @torch.no_grad()
    def before_optimizer_step(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """clipped: remember |grad main| before the main step; hand the 'logo' step grad L_ll
        scaled to norm min(|grad L_ll|, clip_ratio x |grad main|) (clip_grad_norm_ in [1])."""
        if self.cfg.ll_mode != "clipped":
            return
        params = self._encoder_params()
        if name == "main":
            self._main_norm = get_total_norm([p.grad for p in params if p.grad is not None])
        elif name == "logo":
            grads, self._ll_grads = self._ll_grads or [None] * len(params), None
            if grads[0] is not None:  # scale = min(1, clip_ratio |grad main| / |grad L_ll|)
                scale = torch.clamp(self.cfg.clip_ratio * self._main_norm / get_total_norm(grads).clamp(min=1e-12),
                                    max=1)
                grads = [gr * scale.to(gr.dtype) for gr in grads]
            for p, gr in zip(params, grads):
                p.grad = gr

    @torch.no_grad()
    def after_step(self) -> None:
        """MoCo: one momentum update of the key encoder per step, then enqueue the global keys."""
        if self.cfg.base == "moco":
            self.encoder_k.update(self.encoder)
            if self._keys is not None:
                self.queue.enqueue(self._keys)
                self._keys = None

    def param_groups(self) -> list[dict]:
        predictor = [] if self.cfg.base == "moco" else [{"params": list(self.predictor.parameters()),
                                                         "fixed_lr": self.cfg.fix_predictor_lr}]
        return [{"params": self._encoder_params()}, *predictor]

    def optimizers(self) -> list[OptimizerSpec]:
        """The critic's SGD at a constant lr ([1]: its schedule call is commented out); in clipped
        mode the 'logo' SGD over the encoder with the main optimiser's settings ([1]'s optimizer_logo)."""
        if self.critic is None:
            return []
        critic = {"name": "sgd", "schedule": "constant", "lr_per_256": self.cfg.critic_lr_per_256, "momentum": 0.9,
                  "weight_decay": 1e-4, "warmup_epochs": 0.0}
        logo = [OptimizerSpec("logo", [{"params": self._encoder_params()}])] if self.cfg.ll_mode == "clipped" else []
        return [OptimizerSpec("critic", [{"params": list(self.critic.parameters())}], critic), *logo]
