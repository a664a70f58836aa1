"""Pieces that several methods share: a momentum (EMA) encoder, a queue of keys filled from
every rank, and shuffle-BN (across ranks under DDP, across groups of the batch on one
process). Each changes state only through an explicit call."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from tagless import distributed as dist


class MomentumEncoder(nn.Module):
    """An exponential-moving-average copy of an online network, MoCo (He et al. 2020) Eq. 2:
    ``theta_k <- m * theta_k + (1 - m) * theta_q``. It gets no gradient."""

    def __init__(self, online: nn.Module, momentum: float):
        super().__init__()
        self.net = copy.deepcopy(online)
        self.momentum = momentum
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float | None = None) -> None:
        m = self.momentum if momentum is None else momentum
        ema = list(self.net.parameters())
        src = list(online.parameters())
        torch._foreach_mul_(ema, m)
        torch._foreach_add_(ema, src, alpha=1.0 - m)
        # Buffers (BN running statistics) are not averaged: as in the official code, the key
        # encoder keeps the statistics of its own forward passes.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class KeyQueue(nn.Module):
    """A FIFO of K feature vectors (MoCo's dictionary), filled with the keys of every rank.

    ``enqueue`` writes the gathered batch at the pointer and wraps around, so K need not be a
    multiple of the batch size (unlike the reference code's assert).
    """

    def __init__(self, size: int, dim: int, normalize: bool = True, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        init = torch.randn(size, dim, generator=g)
        self.register_buffer("items", F.normalize(init, dim=1) if normalize else init)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.items.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = dist.gather_no_grad(keys.detach()).to(self.items.dtype)
        keys = keys[-self.size :]
        n = keys.shape[0]
        idx = (self.ptr + torch.arange(n, device=keys.device)) % self.size
        self.items[idx] = keys
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))


@torch.no_grad()
def shuffle_across_ranks(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle-BN, MoCo (He et al. 2020) Sec. 3.3: gather the batch of every rank, permute it with one
    permutation shared by all ranks and give each rank its shard. Returns (shard, inverse)."""
    full = dist.gather_no_grad(x)
    perm = torch.randperm(full.shape[0], device=x.device, generator=generator)
    perm = dist.broadcast(perm, src=0)
    inverse = torch.argsort(perm)
    n = x.shape[0]
    return full[perm[dist.rank() * n : (dist.rank() + 1) * n]], inverse


@torch.no_grad()
def unshuffle_across_ranks(y: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    full = dist.gather_no_grad(y)
    n = y.shape[0]
    return full[inverse[dist.rank() * n : (dist.rank() + 1) * n]]


# ---- shuffle-BN on one process ----------------------------------------------------------
# MoCo (He et al. 2020, Sec. 3.3) computes BN statistics per GPU and shuffles the key batch
# across GPUs, so a query and its key never share statistics. On one process the batch is split
# into G groups with their own statistics (rank r of G ranks holds rows r*n..(r+1)*n), as MoCo's
# single-GPU CIFAR demo does with its SplitBatchNorm, and the key batch is shuffled across them.
class _SplitBatchNorm:
    """Mixin of a BatchNorm whose training-mode statistics are per contiguous group of the batch
    (``groups``; 1 = plain BN). Running statistics become the mean of the groups' updates. Same
    parameters and buffers as the BatchNorm it replaces, so ``state_dict`` keys do not change."""

    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        if not self.training or g <= 1:
            return super().forward(x)
        n, c = x.shape[0] // g, x.shape[1]
        rest = x.shape[2:]
        xg = x.reshape(g, n, c, *rest).transpose(0, 1).reshape(n, g * c, *rest)  # group j: channels j*c..
        track = self.track_running_stats and self.running_mean is not None
        if track:
            self.num_batches_tracked.add_(1)
        cumulative = track and self.momentum is None  # momentum None: a cumulative average
        factor = 1.0 / float(self.num_batches_tracked) if cumulative else (self.momentum or 0.0)
        mean = self.running_mean.repeat(g) if track else None
        var = self.running_var.repeat(g) if track else None
        weight = self.weight.repeat(g) if self.affine else None
        bias = self.bias.repeat(g) if self.affine else None
        y = F.batch_norm(xg, mean, var, weight, bias, True, factor, self.eps)
        if track:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(g, c).mean(0))
                self.running_var.copy_(var.view(g, c).mean(0))
        return y.reshape(n, g, c, *rest).transpose(0, 1).reshape(x.shape)


class SplitBatchNorm1d(_SplitBatchNorm, nn.BatchNorm1d):
    pass


class SplitBatchNorm2d(_SplitBatchNorm, nn.BatchNorm2d):
    pass


def convert_split_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d / 2d of ``module`` (in place) by its split version, sharing
    the parameters and buffers; the group count is set per forward by :func:`set_bn_groups`."""
    for name, child in module.named_children():
        kind = {nn.BatchNorm1d: SplitBatchNorm1d, nn.BatchNorm2d: SplitBatchNorm2d}.get(type(child))
        if kind is not None:
            split = kind(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            split.__dict__.update({k: v for k, v in child.__dict__.items() if k not in ("training",)})
            split.train(child.training)
            setattr(module, name, split)
        else:
            convert_split_batchnorm(child)
    return module


def set_bn_groups(module: nn.Module, groups: int) -> None:
    """The group count of every split BatchNorm of ``module`` (1: plain batch statistics)."""
    for m in module.modules():
        if isinstance(m, _SplitBatchNorm):
            m.groups = groups


def resolve_bn_groups(requested: int, batch: int) -> int:
    """The BN groups of one process for a local batch: ``requested`` (0 = auto: one group per 32
    images, between 2 and 8, as MoCo's 8 GPUs x 32 on ImageNet), lowered to a divisor of the
    batch that leaves >= 2 images per group; 1 under DDP (each rank is a group already)."""
    if dist.world_size() > 1:
        return 1
    g = requested or min(8, max(2, batch // 32))
    while g > 1 and (batch % g or batch // g < 2):
        g -= 1
    return g


def grouped(fn, x: torch.Tensor, chunks: int, groups: int) -> torch.Tensor:
    """``fn`` of a batch made of ``chunks`` views of the same images concatenated ([v1; v2; ...],
    each B rows), with split BN over ``groups``: rows are reordered so that group r holds every
    view of images r*n..(r+1)*n (what rank r of ``groups`` ranks would see), then put back."""
    if groups <= 1 or chunks == 1:
        return fn(x)
    b = x.shape[0] // chunks
    n = b // groups
    xr = x.reshape(chunks, groups, n, *x.shape[1:]).transpose(0, 1).reshape(x.shape)
    y = fn(xr)
    return y.reshape(groups, chunks, n, *y.shape[1:]).transpose(0, 1).reshape(y.shape)


@torch.no_grad()
def shuffled(fn, x: torch.Tensor, generator: torch.Generator, groups: int) -> torch.Tensor:
    """``fn(x)`` through shuffle-BN: under DDP the batch is shuffled across ranks and back
    (MoCo's Sec. 3.3); on one process with ``groups`` > 1, shuffled across the BN groups and
    back (a key then shares its statistics with other images, not with its own query)."""
    if dist.world_size() > 1:
        xs, inverse = shuffle_across_ranks(x, generator)
        return unshuffle_across_ranks(fn(xs), inverse)
    if groups <= 1:
        return fn(x)
    perm = torch.randperm(x.shape[0], device=x.device, generator=generator)
    return fn(x[perm])[torch.argsort(perm)]
