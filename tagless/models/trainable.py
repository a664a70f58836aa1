"""Which blocks of the backbone a run trains: ``model.trainable``.

Paper 002 (SeLa), Table 7, fine-tunes on PASCAL VOC07 either the fully connected layers above
frozen convolutions ("fc6-8") or the whole network ("all"). Here ``trainable`` is ``all``,
``head`` (the whole backbone frozen: only the method's own layers, a classifier, train) or the
name of a backbone block (``layer3``: layer3 and every later block train; the stem, layer1 and
layer2 are frozen; the names are ``Backbone.layer_names``).

Frozen means two things, applied once when the backbone is built
(:func:`tagless.models.registry.build_backbone_from_config`), so every method and the engine
see it without a line of their own:

- its parameters get ``requires_grad=False``: no gradient reaches them, and the engine's
  optimisers, which keep only parameters that require a gradient, hold none of them whatever
  groups the method declares (``engine.optim.build_optimizer``);
- each BatchNorm inside it becomes a :class:`FrozenBatchNorm2d` that normalises with its running
  statistics and never updates them, in train mode too (the usual fine-tuning practice,
  detectron2's FrozenBatchNorm). It keeps BatchNorm's tensors and state_dict keys, so
  checkpoints still load into a plain backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tagless.errors import TaglessError

WORDS = ("all", "head")


class FrozenBatchNorm2d(nn.Module):
    """A BatchNorm2d fixed at its running statistics (eval-mode BatchNorm whatever the mode):
    the same parameters and buffers as the BatchNorm it replaces, none of them ever updated."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        if bn.running_mean is None:
            raise TaglessError("cannot freeze a BatchNorm without running statistics (track_running_stats=False)")
        self.num_features, self.eps = bn.num_features, bn.eps
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def frozen_layers(layer_names: list[str], trainable: str) -> list[str]:
    """The blocks ``trainable`` freezes, in network order."""
    if trainable == "all":
        return []
    if trainable == "head":
        return list(layer_names)
    if trainable not in layer_names:
        raise TaglessError(f"model.trainable: {trainable!r} is not all, head or a block of the backbone "
                           f"({', '.join(layer_names)})")
    return list(layer_names[: layer_names.index(trainable)])


def freeze(backbone: nn.Module, trainable: str) -> list[str]:
    """Freeze the blocks before ``trainable`` (all of them for ``head``; see the module
    docstring); returns their names. ``all`` changes nothing."""
    names = frozen_layers(backbone.layer_names, trainable)
    if not names:
        return names
    modules = [backbone] if trainable == "head" else [m for n in names for m in backbone.layer_modules(n)]
    frozen = {id(m) for top in modules for m in top.modules()}
    for top in modules:
        for p in top.parameters():
            p.requires_grad_(False)
    for parent in list(backbone.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in frozen and isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, child_name, FrozenBatchNorm2d(child))
    return names
