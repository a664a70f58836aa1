"""Multi-label classification from full, partial or single-positive labels.

The model is a backbone plus a classifier applied as a 1x1 convolution *before* global
average pooling (paper 003, supp. J): every forward gives the image logits and the class
activation maps, and the logits equal pool-then-linear exactly. The loss is the run's
``loss`` section (a :data:`tagless.losses.LOSSES` entry); this module owns the state the
stateful losses read, all in buffers so that checkpoints and ``--resume`` carry it:

- ``ema``: per-image EMA of the scores, s_n <- m s_n + (1 - m) sigmoid(z_n) on every visit
  (paper 003, Eq. 4), started as ``loss.ema_start`` says (bias-corrected from 0 by default:
  ``ema_visits`` counts each image's visits); EN's expected negatives (Eq. 8) are re-selected
  from it at the start of every epoch after the warm-up; CL compares the predictions with it;
- ``heatmaps``: SCL's per-image, per-class heatmap store (:class:`HeatmapStore`), sampled
  through the view's crop box and flip and updated inside the crop, started as the EMA;
- ``label_estimates``: ROLE's learnable label logits (Cole et al. 2021), trained by the main
  optimiser at ``label_lr_scale`` times its lr, without weight decay;
- ``corrections``: LL-Cp's permanently corrected labels (Kim et al. 2022), an N x C bool
  buffer ``corrected``: those targets read 1 in every later step.

Diagnostics (``epoch_logs``): the share of unknowns EN selects as negatives, the mean
|sigmoid(z) - s| between the predictions and their EMA targets over the epoch's visits
(``ema_gap``) and, when ``DataInfo.clean_targets`` holds the labels the label mode hid, EN's
precision (``en_negative_precision``: share of its assumed negatives that are truly negative)
and the recall of the hidden positives it leaves out (``en_hidden_positive_recall``); for
LL-Cp the share of unknowns corrected and, with clean labels, the share truly positive.

Paper 001's recipe fine-tunes the head at 10x the backbone's lr (``head_lr_scale``); paper
003 first trains the linear layer alone (``linear_epochs``: backbone features detached).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from tagless import distributed as dist
from tagless.errors import TaglessError
from tagless.losses.registry import LOSSES, LossConfig
from tagless.losses.single_positive import expected_negatives
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo, EpochContext, OptimizerSpec
from tagless.methods.heatmaps import HeatmapStore
from tagless.models.heads import CamClassifier


@dataclass
class MultiLabelConfig(MethodConfig):
    """A CAM classifier trained with the run's ``loss`` section (see ``--help-config loss``)."""

    name: str = "multilabel"
    feature_layer: str = ""  # backbone block the 1x1-conv classifier reads ("" = the last)
    head_lr_scale: float = 10.0  # classifier lr / backbone lr (paper 001: 0.01 / 0.001)
    linear_epochs: int = 0  # first epochs train the classifier only (paper 003, supp. G: 5)

    def validate(self) -> None:
        if self.head_lr_scale <= 0 or self.linear_epochs < 0:
            raise TaglessError("method (multilabel): need head_lr_scale > 0 and linear_epochs >= 0")


def role_init(targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ROLE's initial label logits (Cole et al. 2021, official ``train.py``): observed
    positives logit(0.995), observed negatives logit(0.005), unknown U[-logit(0.6), logit(0.6)]."""
    logit = lambda p: math.log(p / (1 - p))
    bound = logit(0.6)
    u = (torch.rand(targets.shape, generator=generator) * 2 - 1) * bound
    u = torch.where(targets == 1, torch.full_like(u, logit(0.995)), u)
    return torch.where(targets == 0, torch.full_like(u, logit(0.005)), u)


class MultiLabel(nn.Module):
    """Backbone -> 1x1-conv classifier -> (logits, CAMs); loss from ``LOSSES[loss.name]``."""

    Config = MultiLabelConfig
    uses_loss = True  # build_method passes the run's ``loss`` section

    def __init__(self, backbone: nn.Module, views, cfg: MultiLabelConfig, data: DataInfo, seed: int = 0,
                 loss: LossConfig | None = None):
        super().__init__()
        if data.num_classes < 1 or data.targets.ndim != 2:
            raise TaglessError("method multilabel needs multi-label data (targets N x C of 1/0/-1); "
                               f"got label kind {data.label_kind!r}")
        self.cfg, self.views, self.backbone = cfg, views, backbone
        self.loss_cfg = loss if loss is not None else LossConfig.variants()["bce"]()
        self.loss_fn = LOSSES[self.loss_cfg.name]
        self.needs = set(self.loss_cfg.needs)
        self._names = self._kwarg_names()
        self.layer = cfg.feature_layer or backbone.layer_names[-1]
        if self.layer not in backbone.layer_names:
            raise TaglessError(f"method.feature_layer: {self.layer!r} is not a block of the backbone "
                               f"({', '.join(backbone.layer_names)})")
        self.head = CamClassifier(backbone.layer_channels[self.layer], data.num_classes)
        n, c = data.num_images, data.num_classes
        self.k = float(getattr(self.loss_cfg, "expected_positives", 0.0) or (data.expected_positives or 1.0))
        targets = data.targets.to(torch.int8)
        self.register_buffer("targets", targets, persistent=False)  # the observed labels, for EN's selection
        self.ema_start = getattr(self.loss_cfg, "ema_start", "first_visit")
        if self.needs & {"ema", "heatmaps"} or "negatives" in self._names:
            self.register_buffer("ema_scores", torch.zeros(n, c))
            self.register_buffer("seen", torch.zeros(n, dtype=torch.bool))
            self.register_buffer("negatives", torch.zeros(n, c, dtype=torch.bool))
            self.register_buffer("negatives_ready", torch.zeros((), dtype=torch.bool))
            if self.ema_start == "bias_correction":
                self.register_buffer("ema_visits", torch.zeros(n, dtype=torch.int32))
                self.register_load_state_dict_pre_hook(_visits_from_seen)
            if self.ema_start == "restart":
                self.register_buffer("ema_restarted", torch.zeros((), dtype=torch.bool))
            # |sigmoid(z) - s| summed over this epoch's visits (and their count): ema_gap
            self.register_buffer("gap_sum", torch.zeros((), dtype=torch.float64), persistent=False)
            self.register_buffer("gap_count", torch.zeros((), dtype=torch.float64), persistent=False)
        if "heatmaps" in self.needs:
            grid = self._feature_grid(views, data.image_size)
            lc = self.loss_cfg
            self.heatmaps = HeatmapStore(n, c, lc.heatmap_scale * grid, data.image_size, dtype=lc.heatmap_dtype,
                                         top_k=lc.heatmap_top_k, momentum=lc.heatmap_momentum,
                                         bias_correction=self.ema_start == "bias_correction")
        if "label_estimates" in self.needs:
            g = torch.Generator().manual_seed(seed + 9001)
            self.label_logits = nn.Parameter(role_init(targets.cpu(), g).to(targets.device))
        if "corrections" in self.needs:
            self.register_buffer("corrected", torch.zeros(n, c, dtype=torch.bool))
        clean = None  # the labels the label mode hid, for diagnostics only
        if data.clean_targets is not None and (hasattr(self, "ema_scores") or hasattr(self, "corrected")):
            if tuple(data.clean_targets.shape) != (n, c):
                raise TaglessError(f"method multilabel: clean_targets of shape {tuple(data.clean_targets.shape)} "
                                   f"for {n} images x {c} classes")
            clean = data.clean_targets.to(targets.device, torch.int8)
        self.register_buffer("clean_targets", clean, persistent=False)

    # ---- the model ---------------------------------------------------------------------
    def _feature_grid(self, views, image_size: int) -> int:
        size = getattr(getattr(views, "cfg", None), "global_size", image_size)
        with torch.no_grad():
            was = self.backbone.training
            self.backbone.eval()
            probe = self.backbone.forward_features(torch.zeros(1, 3, size, size), self.layer)[self.layer]
            self.backbone.train(was)
        return int(probe.shape[-1])

    def logits_and_cams(self, x: torch.Tensor, detach_features: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.backbone.forward_features(x, self.layer)[self.layer]
        if detach_features:
            fmap = fmap.detach()
        return self.head(fmap)

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of normalised eval views (the online monitor and ``eval map``)."""
        return self.logits_and_cams(x)[0].float()

    def forward(self, batch: Batch):
        return self.step(batch)

    # ---- training ----------------------------------------------------------------------
    def _kwarg_names(self) -> set[str]:
        import inspect

        return set(inspect.signature(self.loss_fn).parameters)

    def _warm(self, epoch: int) -> bool:
        return epoch < getattr(self.loss_cfg, "warmup_epochs", 0)

    def step(self, batch: Batch):
        views = self.views(batch.images, batch.generator)
        x, boxes, flipped = views.crops[0], views.boxes[0], views.flipped[0]
        logits, cams = self.logits_and_cams(x, detach_features=batch.epoch < self.cfg.linear_epochs)
        logits = logits.float()
        targets = batch.target.float()
        if hasattr(self, "corrected"):  # LL-Cp: earlier steps' corrections are positives
            targets = torch.where(self.corrected[batch.index], torch.ones_like(targets), targets)
        extra = self._loss_inputs(batch, cams, boxes, flipped)
        loss = self.loss_fn(logits, targets, **self.loss_cfg.function_kwargs(), **extra)
        with torch.no_grad():
            self._update_state(batch, logits, cams, boxes, flipped)
            if hasattr(self, "corrected"):
                fix = self.loss_cfg.corrections(logits.detach(), targets, batch.epoch)
                idx, fix = dist.gather_no_grad(batch.index), dist.gather_no_grad(fix)
                self.corrected[idx] = self.corrected[idx] | fix
        known = targets >= 0
        pos_logit = (logits * (targets == 1)).sum() / (targets == 1).sum().clamp(min=1)
        unk_logit = (logits * ~known).sum() / (~known).sum().clamp(min=1)
        return loss, {"loss": loss.detach(), "pos_logit": pos_logit.detach(), "other_logit": unk_logit.detach()}

    def _loss_inputs(self, batch: Batch, cams, boxes, flipped) -> dict:
        names, warm, idx = self._names, self._warm(batch.epoch), batch.index
        extra = {}
        if "epoch" in names:
            extra["epoch"] = batch.epoch
        if "expected_positives" in names:
            extra["expected_positives"] = self.k
        if "label_logits" in names:
            extra["label_logits"] = self.label_logits[idx]
        if "negatives" in names:
            extra["negatives"] = None if warm else self.negatives[idx]
        if "ema_scores" in names:
            extra["ema_scores"] = None if warm else self.ema_scores[idx]
        if "cam_logits" in names:
            if warm:
                extra["cam_logits"] = extra["heatmap_target"] = None
            else:
                extra["cam_logits"] = cams.float()
                extra["heatmap_target"] = self.heatmaps.sample(idx, boxes, flipped, cams.shape[-1])
        return extra

    def _update_state(self, batch: Batch, logits, cams, boxes, flipped) -> None:
        """EMA scores and heatmaps of this step's images, from every process's rows."""
        if not hasattr(self, "ema_scores"):
            return
        idx = dist.gather_no_grad(batch.index)
        probs = dist.gather_no_grad(torch.sigmoid(logits))
        m = self.loss_cfg.ema_momentum
        old, seen = self.ema_scores[idx], self.seen[idx]
        self.gap_sum += ((probs - old).abs().mean(1) * seen).sum()  # visits with an EMA target only
        self.gap_count += seen.sum()
        if self.ema_start == "bias_correction":  # Eq. 4 from 0, divided by 1 - m^v
            visits = self.ema_visits[idx]
            v = visits.float() + 1
            rate = torch.where(visits == 0, torch.ones_like(v), (1 - m) / (1 - m ** v))
            self.ema_scores[idx] = old + rate[:, None] * (probs - old)
            self.ema_visits[idx] = visits + 1
        else:  # first_visit, restart: the first visit (since the restart) writes the prediction
            self.ema_scores[idx] = torch.where(seen[:, None], m * old + (1 - m) * probs, probs)
        self.seen[idx] = True
        if hasattr(self, "heatmaps"):
            maps = dist.gather_no_grad(torch.sigmoid(cams.float()))
            self.heatmaps.update(idx, dist.gather_no_grad(boxes), dist.gather_no_grad(flipped), maps, batch.generator)

    def on_epoch_start(self, epoch: int, ctx: EpochContext) -> None:
        """After the warm-up: EN's expected negatives from the EMA scores (every epoch), and
        SCL's top-k classes per image (once, when the warm-up ends); with ``ema_start:
        restart`` the EMA and the heatmaps then forget their visits (once)."""
        if not hasattr(self, "ema_scores") or self._warm(epoch):
            return
        selection = getattr(self.loss_cfg, "selection", "image")
        self.negatives.copy_(expected_negatives(self.ema_scores, self.targets, self.k, selection=selection))
        if hasattr(self, "heatmaps") and self.heatmaps.top_k and not bool(self.negatives_ready):
            all_idx = torch.arange(len(self.ema_scores), device=self.ema_scores.device)
            self.heatmaps.select_classes(all_idx, self.ema_scores)
        if hasattr(self, "ema_restarted") and not bool(self.ema_restarted):
            self.seen.zero_()
            if hasattr(self, "heatmaps"):
                self.heatmaps.restart()
            self.ema_restarted.fill_(True)
        self.negatives_ready.fill_(True)

    def param_groups(self) -> list[dict]:
        groups = [{"params": list(self.backbone.parameters())},
                  {"params": list(self.head.parameters()), "lr_scale": self.cfg.head_lr_scale}]
        if hasattr(self, "label_logits") and not self.loss_cfg.label_adam_lr:
            groups.append({"params": [self.label_logits], "lr_scale": self.loss_cfg.label_lr_scale,
                           "weight_decay": 0.0})
        return groups

    def optimizers(self) -> list[OptimizerSpec]:
        """ROLE's label estimates on their own Adam when ``loss.label_adam_lr`` > 0."""
        if not hasattr(self, "label_logits") or not self.loss_cfg.label_adam_lr:
            return []
        return [OptimizerSpec("role", [{"params": [self.label_logits]}],
                              {"name": "adamw", "lr": self.loss_cfg.label_adam_lr, "weight_decay": 0.0,
                               "schedule": "constant", "warmup_epochs": 0.0})]

    def epoch_logs(self) -> dict:
        """EN's and LL-Cp's diagnostics (see the module docstring); shares in percent."""
        logs = {}
        unknown = self.targets < 0
        clean = self.clean_targets
        if hasattr(self, "ema_scores"):
            if bool(self.gap_count > 0):
                logs["ema_gap"] = (self.gap_sum / self.gap_count).float()
            self.gap_sum.zero_()
            self.gap_count.zero_()
            if bool(self.negatives_ready):
                assumed = self.negatives & unknown
                logs["expected_negative_share"] = _percent(assumed.sum(), unknown.sum())
                if clean is not None:
                    judged = assumed & (clean >= 0)  # entries whose clean label is known
                    hidden = unknown & (clean == 1)
                    if bool(judged.any()):
                        logs["en_negative_precision"] = _percent((judged & (clean == 0)).sum(), judged.sum())
                    if bool(hidden.any()):
                        logs["en_hidden_positive_recall"] = _percent((hidden & ~self.negatives).sum(), hidden.sum())
        if hasattr(self, "corrected"):
            fixed = self.corrected & unknown
            logs["ll_corrected_share"] = _percent(fixed.sum(), unknown.sum())
            if clean is not None and bool((fixed & (clean >= 0)).any()):
                judged = fixed & (clean >= 0)
                logs["ll_correction_precision"] = _percent((judged & (clean == 1)).sum(), judged.sum())
        return logs


def _percent(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    return part.float() * 100 / whole.clamp(min=1).float()


def _visits_from_seen(module, state_dict, prefix, *args) -> None:
    """A checkpoint from before the visit counts: one visit for every image seen."""
    if prefix + "ema_visits" not in state_dict and prefix + "seen" in state_dict:
        state_dict[prefix + "ema_visits"] = state_dict[prefix + "seen"].to(torch.int32)
