"""Pieces that several methods share: a momentum (EMA) encoder, a queue of keys filled from
every rank, and shuffle-BN. Each changes state only through an explicit call."""

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
