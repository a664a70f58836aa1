"""A method that uses every hook of the engine contract, for the engine's tests.

It trains a linear head on the backbone against per-image pseudo-labels set by a dataset
pass at each epoch start (SeLa's pattern, with argmax instead of Sinkhorn), keeps per-image
state updated from the gathered batch indices and targets of every rank, and trains a small
critic with its own optimiser at a constant lr (LoGo's pattern): the critic learns on detached
features; the encoder's critic term runs the critic with detached parameters. Views are the
deterministic eval view, so 1 and 2 processes see the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from tagless import distributed as dist
from tagless.augment import eval_view
from tagless.methods import METHODS, MethodConfig, OptimizerSpec


@dataclass
class DummyConfig(MethodConfig):
    name: str = "dummy"
    clusters: int = 4
    critic_lr_per_256: float = 0.5
    critic_weight: float = 0.1


class DummyMethod(nn.Module):
    Config = DummyConfig

    def __init__(self, backbone, views, cfg: DummyConfig, data, seed: int = 0):
        super().__init__()
        self.cfg, self.data = cfg, data
        self.backbone = dist.convert_sync_batchnorm(backbone)  # 1 process == 2 processes
        self.head = nn.Linear(backbone.out_dim, cfg.clusters)
        self.critic = nn.Sequential(nn.Linear(backbone.out_dim, 8), nn.ReLU(), nn.Linear(8, 1))
        n = data.num_images
        self.register_buffer("labels", torch.zeros(n, dtype=torch.long))  # per-image state
        self.register_buffer("seen", torch.zeros(n, dtype=torch.long))
        self.register_buffer("stored_target", torch.full((n,), -9, dtype=torch.long))
        self.register_buffer("after_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("epochs_started", torch.zeros(64, dtype=torch.long))
        self.hook_calls: list[str] = []  # order of before_optimizer_step calls (not saved)
        self._changed = 0

    def forward(self, batch):
        return self.step(batch)

    def _view(self, images):
        return eval_view(images, self.data.image_size)

    def step(self, batch):
        feats = self.backbone(self._view(batch.images))
        index = dist.gather_no_grad(batch.index)
        with torch.no_grad():
            self.seen[index] += 1
            self.stored_target[index] = dist.gather_no_grad(batch.target).long()
        main = F.cross_entropy(self.head(feats), self.labels[batch.index])
        critic_loss = F.mse_loss(self.critic(feats.detach()).squeeze(1), self.labels[batch.index].float())
        frozen = {k: v.detach() for k, v in self.critic.named_parameters()}
        encoder_term = functional_call(self.critic, frozen, (feats,)).mean()
        loss = main + critic_loss + self.cfg.critic_weight * encoder_term
        return loss, {"main": main.detach(), "critic": critic_loss.detach()}

    def param_groups(self):
        return [{"params": self.backbone.parameters()}, {"params": self.head.parameters(), "lr_scale": 2.0}]

    def optimizers(self):
        return [OptimizerSpec("critic", [{"params": self.critic.parameters()}],
                              {"schedule": "constant", "lr_per_256": self.cfg.critic_lr_per_256, "warmup_epochs": 0.0})]

    def before_optimizer_step(self, name, optimizer):
        self.hook_calls.append(name)

    def after_step(self):
        self.after_steps += 1

    @torch.no_grad()
    def on_epoch_start(self, epoch, ctx):
        was = self.training
        self.eval()
        index, labels = ctx.dataset_pass(lambda x: self.head(self.backbone(x)).argmax(1), batch_size=7)
        self.train(was)
        assert torch.equal(index, torch.arange(self.data.num_images, device=index.device))
        self._changed = int((labels != self.labels).sum())
        self.labels.copy_(labels)
        self.epochs_started[epoch] += 1

    def epoch_logs(self):
        return {"labels_changed": float(self._changed)}

    def pseudo_labels(self):
        return self.labels


def register() -> None:
    METHODS["dummy"] = DummyMethod


def unregister() -> None:
    METHODS.pop("dummy", None)
