"""Optimisers (SGD, LARS, AdamW) and per-iteration learning-rate schedules.

Schedules are plain arrays indexed by the global step, so they are easy to test and resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tagless.engine.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling.

    [0] You, Gitman & Ginsburg, Large Batch Training of Convolutional Networks, arXiv 1708.03888,
    Eq. 6: the update of a layer with weights w and gradient g (weight decay included) is
    scaled by the trust ratio eta * ||w|| / ||g + wd * w||. Groups with ``lars_adapt=False``
    (biases and norms, as in BYOL/SimCLR) get plain SGD with momentum.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_adapt=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad.clone()
                if group["lars_adapt"]:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d_p)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    d_p.mul_(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _is_bias_or_norm(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1


def build_optimizer(cfg: OptimConfig, param_groups: list[dict], global_batch: int) -> torch.optim.Optimizer:
    """Optimizer over the method's parameter groups; lr scaled linearly by global_batch / 256."""
    lr = cfg.lr_per_256 * global_batch / 256
    groups = []
    for group in param_groups:
        params = [p for p in group["params"] if p.requires_grad]
        extra = {k: v for k, v in group.items() if k != "params"}
        if cfg.exclude_bias_and_norm:
            plain = [p for p in params if not _is_bias_or_norm("", p)]
            norms = [p for p in params if _is_bias_or_norm("", p)]
            groups.append({"params": plain, **extra})
            groups.append({"params": norms, "weight_decay": 0.0, "lars_adapt": False, **extra})
        else:
            groups.append({"params": params, **extra})
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("fixed_lr", False)
        g["base_lr"] = lr
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> np.ndarray:
    """Multiplier of the base lr for every global step: linear warm-up from 0, then cosine
    decay to ``final_lr_fraction`` (SGDR without restarts), constant, or step decay."""
    total = steps_per_epoch * epochs
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    steps = np.arange(total, dtype=np.float64)
    if cfg.schedule == "cosine":
        progress = np.clip((steps - warmup) / max(1, total - warmup), 0.0, 1.0)
        mult = cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + np.cos(math.pi * progress))
    elif cfg.schedule == "step":
        epoch = steps / steps_per_epoch
        mult = cfg.step_gamma ** np.searchsorted(np.asarray(cfg.step_milestones_epochs, dtype=np.float64), epoch, side="right")
    else:
        mult = np.ones(total)
    if warmup > 0:
        mult[:warmup] *= (steps[:warmup] + 1) / warmup
    return mult


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> float:
    """Apply the schedule; groups marked ``fixed_lr`` (SimSiam's predictor) keep the base lr."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] if g.get("fixed_lr") else g["base_lr"] * multiplier
    return optimizer.param_groups[0]["base_lr"] * multiplier
