"""SwAV: swapping assignments between multi-crop views (paper 004's multi-crop baseline).

[0] Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments,
    NeurIPS 2020. Sec. 3.1: z = normalised projection, scores z^T C against K prototypes C
    (unit rows), codes Q = Sinkhorn of the batch's detached scores (Eq. 3-5: eps = 0.05,
    3 iterations, the row-normalised plan), swapped prediction (Eq. 1-2, tau = 0.1). Sec. 3.2:
    multi-crop, codes only from the 2 full-resolution crops. Sec. 4 / App. A: with small
    batches a queue of past features joins the Sinkhorn rows; prototypes frozen for the first
    iterations.
Official code: facebookresearch/swav ``main_swav.py`` (``crops_for_assign = [0, 1]``,
``distributed_sinkhorn``, ``freeze_prototypes_niters = 313``, ``queue_length``,
``epoch_queue_starts = 15``, SyncBN) and ``src/resnet50.py`` (head Linear(2048, 2048) - BN -
ReLU - Linear(2048, 128); prototypes Linear(128, 3000, bias=False); the crops of one
resolution go through the backbone in one call).

Here: the codes come from ``tagless.ot.sinkhorn`` (its first column update weighs rows as SwAV
does; rows sharded over processes are SwAV's distributed_sinkhorn). The queue is per process,
as in the official code (each GPU keeps its own samples' features) and, as there, joins the
codes once it is full. Views come from the ``multi_crop`` recipe; optimiser and schedule are
the run's (SwAV: LARS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from tagless import distributed as dist
from tagless.errors import TaglessError
from tagless.losses.swav import swav_loss
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo
from tagless.models.heads import mlp
from tagless.ot import sinkhorn


@dataclass
class SwavConfig(MethodConfig):
    """SwAV hyper-parameters; defaults are [0]'s ImageNet values (small data: see swav_scenes.yaml)."""

    name: str = "swav"
    proj_hidden_dim: int = 2048  # hidden width of the projection head
    proj_dim: int = 128  # dimension of z and of the prototypes
    num_prototypes: int = 3000  # K
    temperature: float = 0.1  # tau of Eq. 2
    epsilon: float = 0.05  # entropic weight of the codes' transport problem (lambda = 1 / eps)
    sinkhorn_iters: int = 3
    crops_for_assign: list[int] = field(default_factory=lambda: [0, 1])  # crops that get codes
    queue_length: int = 0  # past z kept per process and assigned crop (0 = no queue; SwAV: 3840 / GPUs)
    queue_start_epochs: int = 15  # the queue fills from this epoch on and is used once full
    freeze_prototypes_iters: int = 313  # steps without a prototype update
    sync_bn: bool = True  # global-batch BN under DDP, as the official code

    def validate(self) -> None:
        if min(self.proj_hidden_dim, self.proj_dim, self.num_prototypes, self.sinkhorn_iters) < 1:
            raise TaglessError("method (swav): proj_hidden_dim, proj_dim, num_prototypes, sinkhorn_iters must be >= 1")
        if self.temperature <= 0 or self.epsilon <= 0:
            raise TaglessError("method (swav): temperature and epsilon must be > 0")
        a = list(self.crops_for_assign)
        if not a or min(a) < 0 or len(set(a)) != len(a):
            raise TaglessError(f"method.crops_for_assign: need distinct crop indices >= 0, got {a}")
        if min(self.queue_length, self.queue_start_epochs, self.freeze_prototypes_iters) < 0:
            raise TaglessError("method (swav): queue_length, queue_start_epochs, freeze_prototypes_iters must be >= 0")


def _restore_queue_count(module: SwAV, incompatible_keys) -> None:
    module._queue_count = int(module.queue_count)  # after load_state_dict (checkpoint, resume)


class SwAV(nn.Module):
    """z = normalize(head(backbone(x))), scores = z C^T for every crop; codes of the assigned crops
    by Sinkhorn; each assigned crop's codes predicted from every other crop's scores."""

    Config = SwavConfig

    def __init__(self, backbone: nn.Module, views, cfg: SwavConfig, data: DataInfo | None = None, seed: int = 0):
        super().__init__()
        self.cfg, self.views = cfg, views
        self.backbone = backbone
        self.projector = mlp(backbone.out_dim, cfg.proj_hidden_dim, cfg.proj_dim, num_layers=2, bn=True)
        if cfg.sync_bn:
            self.backbone = dist.convert_sync_batchnorm(self.backbone)
            self.projector = dist.convert_sync_batchnorm(self.projector)
        self.prototypes = nn.Linear(cfg.proj_dim, cfg.num_prototypes, bias=False)
        # This process's queue of past z per assigned crop, newest first (as the official code).
        self.register_buffer("queue", torch.zeros(len(cfg.crops_for_assign), cfg.queue_length, cfg.proj_dim))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self._queue_count = 0  # host copy of queue_count: deciding to use the queue needs no device sync
        self.register_load_state_dict_post_hook(_restore_queue_count)
        self._step = 0  # the current batch's step, for the prototype freeze
        # prototype usage this epoch: how often each prototype is the argmax of a code / a prediction
        self._usage = torch.zeros(2, cfg.num_prototypes)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        return self.step(batch)

    def embed(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """z of every crop, crop-major, fp32 unit rows. Consecutive crops of one resolution go
        through the backbone in one call; the head sees all crops at once (official code)."""
        feats, start = [], 0
        for end in range(1, len(crops) + 1):
            if end == len(crops) or crops[end].shape[-2:] != crops[start].shape[-2:]:
                feats.append(self.backbone(torch.cat(crops[start:end])))
                start = end
        return F.normalize(self.projector(torch.cat(feats)).float(), dim=1)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """z C^T in fp32 whatever the autocast (the codes use exp(scores / eps), eps = 0.05)."""
        with torch.autocast(z.device.type, enabled=False):
            return self.prototypes(z.float())

    @torch.no_grad()
    def codes(self, scores: torch.Tensor) -> torch.Tensor:
        """Q of [0] Eq. 3-5 for rows sharded over processes: ``cfg.sinkhorn_iters`` Sinkhorn
        iterations at lambda = 1 / eps on the detached scores, the row-normalised plan."""
        return sinkhorn(scores.detach().float(), lam=1.0 / self.cfg.epsilon, max_iters=self.cfg.sinkhorn_iters,
                        tol=0.0, output="probs", check_inputs=False).probs

    @torch.no_grad()
    def assign(self, scores: list[torch.Tensor], z: list[torch.Tensor], epoch: int) -> list[torch.Tensor]:
        """Codes of the assigned crops; with the queue full, Sinkhorn runs on [queue scores;
        batch scores] and the last B rows are kept. The queue then takes this step's z."""
        cfg, b = self.cfg, scores[0].shape[0]
        queue_on = cfg.queue_length > 0 and epoch >= cfg.queue_start_epochs
        use = queue_on and self._queue_count >= cfg.queue_length
        out = []
        for j, i in enumerate(cfg.crops_for_assign):
            s = torch.cat([self.scores(self.queue[j]), scores[i]]) if use else scores[i]
            out.append(self.codes(s)[-b:])
        if queue_on:
            new = torch.stack([z[i] for i in cfg.crops_for_assign]).to(self.queue.dtype)
            self.queue.copy_(torch.cat([new, self.queue], dim=1)[:, : cfg.queue_length])
            self._queue_count = min(self._queue_count + b, cfg.queue_length)
            self.queue_count.fill_(self._queue_count)
        return out

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        crops = self.views(batch.images, batch.generator).crops
        if max(self.cfg.crops_for_assign) >= len(crops) or len(crops) < 2:
            raise TaglessError(f"method.crops_for_assign={self.cfg.crops_for_assign} needs those crops and one "
                               f"more; the views give {len(crops)}")
        self._step = batch.step
        with torch.no_grad():  # prototypes on the unit sphere before every forward (official code)
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        z = self.embed(crops)
        b = crops[0].shape[0]
        scores = list(self.scores(z).split(b))
        codes = self.assign([s.detach() for s in scores], list(z.detach().split(b)), batch.epoch)
        loss = swav_loss(scores, codes, list(self.cfg.crops_for_assign), self.cfg.temperature)
        code_max = torch.stack([q.max(dim=1).values.mean() for q in codes]).mean()  # 1/K: uniform, 1: hard
        self._count_usage(codes[0], scores[self.cfg.crops_for_assign[0]].detach())
        return loss, {"loss": loss.detach(), "code_max": code_max}

    @torch.no_grad()
    def _count_usage(self, codes: torch.Tensor, scores: torch.Tensor) -> None:
        """Add this batch's argmax prototypes of the first assigned crop's codes and scores (no sync)."""
        k = self.cfg.num_prototypes
        counts = torch.stack([torch.bincount(codes.argmax(1), minlength=k),
                              torch.bincount(scores.argmax(1), minlength=k)])
        self._usage = self._usage.to(counts.device) + counts

    def epoch_logs(self) -> dict:
        """Prototype usage over the epoch, of the codes (Sinkhorn's assignments) and of the
        predictions (argmax of the scores): prototypes used at least once, and the largest share
        of the images one prototype takes. A collapse shows as few prototypes and a share near 1."""
        usage, self._usage = self._usage, torch.zeros_like(self._usage)
        total = float(usage[0].sum())
        if total == 0:
            return {}
        used, share = (usage > 0).sum(1).tolist(), (usage.amax(1) / total).tolist()
        return {"codes_prototypes_used": used[0], "codes_largest_share": share[0],
                "pred_prototypes_used": used[1], "pred_largest_share": share[1]}

    def before_optimizer_step(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """No prototype update in the first ``freeze_prototypes_iters`` steps ([0] App. A)."""
        if name == "main" and self._step < self.cfg.freeze_prototypes_iters:
            self.prototypes.weight.grad = None

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]
