"""Optimisers (SGD, LARS, Adam, AdamW) and per-iteration learning-rate schedules.

Schedules are plain arrays indexed by the global step, so they are easy to test and resume.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from tagless.engine.config import OptimConfig
from tagless.errors import TaglessError


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
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    d_p.mul_(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d_p.clone()
                else:
                    buf.mul_(group["momentum"]).add_(d_p)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _is_bias_or_norm(p: torch.Tensor) -> bool:
    return p.ndim <= 1


GROUP_KEYS = ("lr_scale", "weight_decay", "fixed_lr", "lars_adapt")


def build_optimizer(cfg: OptimConfig, param_groups: list[dict], global_batch: int) -> torch.optim.Optimizer:
    """Optimizer over a method's parameter groups; lr scaled linearly by global_batch / 256.

    A group may carry ``lr_scale`` (its lr is the scheduled lr times this), ``weight_decay``
    (its own, instead of ``cfg.weight_decay``) and ``fixed_lr`` (no schedule: SimSiam's
    predictor). With ``cfg.exclude_bias_and_norm`` biases and norm weights get no weight decay
    and no LARS adaptation."""
    lr = cfg.base_lr(global_batch)
    groups = []
    for group in param_groups:
        unknown = set(group) - {"params", *GROUP_KEYS}
        if unknown:
            raise TaglessError(f"parameter group with unknown key(s) {sorted(unknown)} "
                               f"(known: {', '.join(GROUP_KEYS)})")
        params = [p for p in group["params"] if p.requires_grad]
        extra = {"lr_scale": 1.0, "fixed_lr": False, "weight_decay": cfg.weight_decay,
                 **{k: v for k, v in group.items() if k != "params"}}
        if cfg.exclude_bias_and_norm:
            groups.append({**extra, "params": [p for p in params if not _is_bias_or_norm(p)]})
            groups.append({**extra, "params": [p for p in params if _is_bias_or_norm(p)], "weight_decay": 0.0,
                           "lars_adapt": False})
        else:
            groups.append({**extra, "params": params})
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["base_lr"] = lr * g["lr_scale"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta)
    if cfg.name == "adam":  # Adam with L2 in the gradient (Cole et al.'s optimiser; set weight_decay=0 for none)
        return torch.optim.Adam(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_schedule(cfg: OptimConfig, steps_per_epoch: int, epochs: int) -> np.ndarray:
    """Multiplier of the base lr for every global step: linear warm-up from 0, then cosine
    decay to ``final_lr_fraction`` (SGDR without restarts), constant, or step decay."""
    total = steps_per_epoch * epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    steps = np.arange(total, dtype=np.float64)
    if cfg.schedule == "cosine":
        progress = np.clip((steps - warmup) / max(1, total - warmup), 0.0, 1.0)
        mult = cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + np.cos(math.pi * progress))
    elif cfg.schedule == "step":
        epoch = steps / steps_per_epoch
        mult = cfg.step_gamma ** np.searchsorted(np.asarray(cfg.step_milestones_epochs, dtype=np.float64), epoch,
                                                 side="right")
    else:
        mult = np.ones(total)
    if warmup > 0:
        mult[:warmup] *= (steps[:warmup] + 1) / warmup
    return mult


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> float:
    """Apply the schedule; groups marked ``fixed_lr`` (SimSiam's predictor) keep the base lr.
    Returns the first group's lr."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] if g.get("fixed_lr") else g["base_lr"] * multiplier
    return optimizer.param_groups[0]["lr"]


class ScheduledOptimizers:
    """The named optimisers of a run ('main' first), each with its own lr schedule array.

    ``main`` is built from the method's ``param_groups()`` and the run's ``optim`` section;
    each extra :class:`~tagless.methods.contract.OptimizerSpec` of ``method.optimizers()`` from
    the same section with its overrides (LoGo's critic: ``{"schedule": "constant"}``; ``lr``
    sets an absolute learning rate instead of ``lr_per_256``)."""

    def __init__(self, cfg: OptimConfig, method, global_batch: int, steps_per_epoch: int, epochs: int):
        specs = [("main", method.param_groups(), {})]
        extra = getattr(method, "optimizers", None)
        for spec in extra() if extra else []:
            if spec.name == "main" or spec.name in [s[0] for s in specs]:
                raise TaglessError(f"optimiser name {spec.name!r} is taken")
            specs.append((spec.name, spec.param_groups, spec.overrides))
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, np.ndarray] = {}
        for name, groups, overrides in specs:
            if "lr" in overrides:  # an absolute lr, whatever the batch
                overrides = {**overrides, "lr_per_256": overrides["lr"] * 256 / global_batch, "lr": 0.0}
            elif "lr_per_256" in overrides:  # its own scaled lr, not the run's absolute optim.lr
                overrides = {**overrides, "lr": 0.0}
            try:
                own = dataclasses.replace(cfg, **overrides)
            except TypeError as e:
                raise TaglessError(f"optimiser {name!r}: bad override ({e})") from None
            own.validate()
            self.optimizers[name] = build_optimizer(own, groups, global_batch)
            self.schedules[name] = lr_schedule(own, steps_per_epoch, epochs)

    def items(self):
        return self.optimizers.items()

    def set_lr(self, step: int) -> dict[str, float]:
        """Set every optimiser's lr for ``step``; returns {name: first group's lr}."""
        return {name: set_lr(opt, float(self.schedules[name][min(step, len(self.schedules[name]) - 1)]))
                for name, opt in self.optimizers.items()}

    def zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.optimizers) - set(state))
        if missing:
            raise TaglessError(f"the checkpoint has no state for optimiser(s) {missing} (it holds {sorted(state)})")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
