"""Heads that sit on a backbone: MLP projector / predictor, SeLa's multi-head, a CAM classifier.

Recipes with `mlp` (the papers' official code):
    MoCo-v2 projector:  mlp(2048, 2048, 128, num_layers=2, bn=False)
    SimSiam projector:  mlp(2048, 2048, 2048, num_layers=3, bn=True, last_bn=True)
    SimSiam predictor:  mlp(2048, 512, 2048, num_layers=2, bn=True)          (bottleneck)
    SeLa AlexNet fc6-7: mlp(9216, 4096, 4096, num_layers=2, bn=False, last_relu=True, dropout=0.5)
                        (torchvision's / the official classifier: Dropout, Linear, ReLU, twice)
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from tagless.errors import TaglessError


class MLP(nn.Sequential):
    """An `nn.Sequential` of ``drop{i}`` / ``linear{i}`` / ``bn{i}`` / ``relu{i}`` layers built by `mlp`."""

    def __init__(self, layers: OrderedDict, in_dim: int, out_dim: int):
        super().__init__(layers)
        self.in_dim = in_dim
        self.out_dim = out_dim


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    bn: bool = True,
    last_bn: bool = False,
    last_bn_affine: bool = False,
    last_relu: bool = False,
    dropout: float = 0.0,
) -> MLP:
    """A ``num_layers``-layer perceptron ``in_dim -> hidden_dim -> ... -> out_dim``.

    Hidden layers are Linear (+ BatchNorm1d if `bn`) + ReLU. The last layer is Linear,
    followed by BatchNorm1d if `last_bn` (affine only if `last_bn_affine`; SimSiam's output
    BN has no affine parameters) and by ReLU if `last_relu`. A Linear followed by BN has no
    bias (BN's shift replaces it). ``num_layers=1`` is a single Linear ``in_dim -> out_dim``.
    ``dropout > 0`` puts ``Dropout(dropout)`` before every Linear (AlexNet's fc6-fc7).
    """
    if num_layers < 1:
        raise TaglessError(f"mlp needs num_layers >= 1, got {num_layers}")
    if not 0 <= dropout < 1:
        raise TaglessError(f"mlp needs 0 <= dropout < 1, got {dropout}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    dim = in_dim
    for i in range(1, num_layers):
        if dropout:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        layers[f"linear{i}"] = nn.Linear(dim, hidden_dim, bias=not bn)
        if bn:
            layers[f"bn{i}"] = nn.BatchNorm1d(hidden_dim)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        dim = hidden_dim
    if dropout:
        layers[f"drop{num_layers}"] = nn.Dropout(dropout)
    layers[f"linear{num_layers}"] = nn.Linear(dim, out_dim, bias=not last_bn)
    if last_bn:
        layers[f"bn{num_layers}"] = nn.BatchNorm1d(out_dim, affine=last_bn_affine)
    if last_relu:
        layers[f"relu{num_layers}"] = nn.ReLU(inplace=True)
    return MLP(layers, in_dim, out_dim)


class MultiHead(nn.Module):
    """SeLa's T classification heads over one representation ([K x T] in the paper, sec. 3.5).

    Head t is ``nn.Linear(in_dim, num_classes_per_head[t])``; `forward` returns the list of T
    logit tensors ``B x K_t``, each trained against its own Sinkhorn pseudo-labels. With
    ``init_std > 0`` the weights are drawn from N(0, init_std) and the biases are 0 (the official
    self-label code: 0.01); 0 keeps PyTorch's default init.
    """

    def __init__(self, in_dim: int, num_classes_per_head: list[int], init_std: float = 0.0):
        super().__init__()
        if len(num_classes_per_head) == 0 or min(num_classes_per_head) < 1:
            raise TaglessError(f"need at least one head with >= 1 class, got {num_classes_per_head}")
        if init_std < 0:
            raise TaglessError(f"init_std must be >= 0, got {init_std}")
        self.in_dim = in_dim
        self.num_classes_per_head = list(num_classes_per_head)
        self.heads = nn.ModuleList(nn.Linear(in_dim, k) for k in num_classes_per_head)
        if init_std:
            for head in self.heads:
                normal_init(head, init_std)

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [head(x) for head in self.heads]


def normal_init(linear: nn.Linear, std: float) -> None:
    """Weights ~ N(0, std), bias 0 (the official SeLa / AlexNet init of every Linear)."""
    nn.init.normal_(linear.weight, 0.0, std)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


class CamClassifier(nn.Module):
    """A 1x1-conv classifier on a feature map ``B x C x h x w`` (class activation maps).

    ``forward(fmap) -> (logits, cam)``: ``cam = conv1x1(fmap)`` is ``B x K x h x w`` and
    ``logits = cam.mean((2, 3))`` is ``B x K``. Because the conv is linear, the logits equal
    a Linear layer applied to the globally average-pooled map, so this is a plain linear
    classifier that also yields per-position class scores (SCL's heatmaps, Verelst et al. 2023).
    """

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise TaglessError(f"num_classes must be >= 1, got {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        cam = self.classifier(fmap)
        return cam.mean(dim=(2, 3)), cam
