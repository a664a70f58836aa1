"""Single-label classification: a backbone fine-tuned with a linear classifier and softmax
cross-entropy, reported as top-1 accuracy (and mean-per-class accuracy).

Transfer by fine-tuning on single-label data: paper 000 (MLS), supplementary A.1 / A.3, fine-tunes
its pre-trained ResNet-50 on CUB200, Flowers, Cars, Aircrafts, Indoor67, Pets and DTD and reports
top-1 accuracy (two runs each). Start from a pre-trained backbone with ``model.init_checkpoint``
and choose what trains with ``model.trainable`` (``head``: a linear probe trained by SGD on
augmented views).

The classifier is the multi-label method's :class:`~tagless.models.heads.CamClassifier` (a 1x1
conv before global average pooling, equal to a Linear layer after it), so ``tagless eval`` and
the report read its checkpoints the same way. Unlabelled images (target -1) add no loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn
import torch.nn.functional as F

from tagless.config_io import Positive, Range
from tagless.errors import TaglessError
from tagless.methods.config import MethodConfig
from tagless.methods.contract import Batch, DataInfo
from tagless.models.heads import CamClassifier


@dataclass
class ClassifierConfig(MethodConfig):
    """A linear classifier on the backbone, softmax cross-entropy on single labels."""

    name: str = "classifier"
    feature_layer: str = ""  # backbone block the classifier reads ("" = the last)
    head_lr_scale: Positive = 1.0  # classifier lr / backbone lr
    label_smoothing: Annotated[float, Range(0, 1, high_open=True)] = 0.0  # of the cross-entropy's targets


class Classifier(nn.Module):
    """Backbone -> 1x1-conv classifier -> logits; cross-entropy against the single labels."""

    Config = ClassifierConfig

    def __init__(self, backbone: nn.Module, views, cfg: ClassifierConfig, data: DataInfo, seed: int = 0):
        super().__init__()
        if data.label_kind != "single" or data.targets.ndim != 1:
            raise TaglessError(f"method classifier needs single-label data (one class per image); got label kind "
                               f"{data.label_kind!r} (method multilabel trains on multi-label data)")
        self.cfg, self.views, self.backbone = cfg, views, backbone
        self.layer = cfg.feature_layer or backbone.layer_names[-1]
        if self.layer not in backbone.layer_names:
            raise TaglessError(f"method.feature_layer: {self.layer!r} is not a block of the backbone "
                               f"({', '.join(backbone.layer_names)})")
        self.head = CamClassifier(backbone.layer_channels[self.layer], data.num_classes)

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of normalised eval views (the test numbers and ``tagless eval``)."""
        return self.head(self.backbone.forward_features(x, self.layer)[self.layer])[0].float()

    def forward(self, batch: Batch):
        return self.step(batch)

    def step(self, batch: Batch):
        x = self.views(batch.images, batch.generator).crops[0]
        logits = self.class_scores(x)
        target = batch.target.long()
        labelled = target >= 0
        # the mean over labelled images (a batch without any gives 0 with a gradient of 0)
        losses = F.cross_entropy(logits, target.clamp(min=0), reduction="none",
                                 label_smoothing=self.cfg.label_smoothing)
        loss = (losses * labelled).sum() / labelled.sum().clamp(min=1)
        with torch.no_grad():
            correct = (logits.argmax(1) == target) & labelled
            accuracy = correct.sum() / labelled.sum().clamp(min=1) * 100
        return loss, {"loss": loss.detach(), "train_top1": accuracy}

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.backbone.parameters())},
                {"params": list(self.head.parameters()), "lr_scale": self.cfg.head_lr_scale}]
