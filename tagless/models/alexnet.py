"""AlexNet with BatchNorm, the two variants SeLa benchmarks (Asano et al. 2020, sec. 4.2, table 4).

    variant='small':    conv filters (64, 192, 384, 256, 256)  (Krizhevsky 2014, "one weird trick")
    variant='standard': conv filters (96, 256, 384, 384, 256)  (Krizhevsky et al. 2012)

Every conv is followed by BatchNorm and ReLU; each such triple is one named block ``conv1`` ..
``conv5`` (keys ``conv1.conv.weight``, ``conv1.bn.running_mean``, ...). `forward_features`
returns the maps right after each block's ReLU, before any max-pool: SeLa's probe points.
Max-pools sit after conv1, conv2 and conv5, as in the classic net.

Geometry, by `stem`:
    'imagenet' (224 inputs): conv1 11x11 stride 4 pad 2; 3x3 stride-2 max-pools; conv2 5x5 pad 2;
        conv3-5 3x3 pad 1. Maps: conv1 55, conv2 27, conv3-5 13, pool5 6. Needs inputs >= 63.
    'cifar' (small inputs, 32 or 64): conv1 5x5 stride 1 pad 2 and 3x3 stride-2 max-pools with
        padding 1, so each pool halves the map exactly: on 32x32, conv1 32, conv2 16,
        conv3-5 8, pool5 4. Works from 8x8 up.

Representation (`forward`): conv5 -> pool5 -> adaptive max-pool to an ``out_grid x out_grid``
grid -> flatten, so ``out_dim = C5 * out_grid**2`` whatever the input size. ``out_grid``
defaults to 6 for 'imagenet' (an identity on 224 inputs: the classic 256x6x6 = 9216 pool5
vector) and 4 for 'cifar' (identity on 32x32 inputs: 256x4x4 = 4096). We stop at pool5, not
fc6/fc7: the fully connected layers SeLa trains on top are a head (`tagless.models.heads.mlp`),
so the backbone stays a convolutional representation and its per-layer probes match the paper.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tagless.errors import TaglessError
from tagless.models.base import Backbone, init_conv_bn

CHANNELS = {"small": (64, 192, 384, 256, 256), "standard": (96, 256, 384, 384, 256)}
STEMS = ("imagenet", "cifar")


class ConvBlock(nn.Sequential):
    """conv -> BatchNorm -> ReLU (the conv has no bias: BN's shift replaces it)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)


class AlexNet(Backbone):
    """AlexNet-BN backbone; see the module docstring for the geometry and the representation.

    Args:
        variant: ``'small'`` or ``'standard'``.
        stem: ``'imagenet'`` (224 inputs) or ``'cifar'`` (small inputs).
        width: multiplier of every conv's filter count (``max(1, round(c * width))``).
        out_grid: side of the grid `forward` pools conv5 to (default 6 / 4 by stem).
        in_channels: input channels (3 for RGB).
    """

    def __init__(
        self,
        variant: str = "standard",
        stem: str = "imagenet",
        width: float = 1.0,
        out_grid: int | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        if variant not in CHANNELS:
            raise TaglessError(f"unknown AlexNet variant {variant!r}; valid: {', '.join(CHANNELS)}")
        if stem not in STEMS:
            raise TaglessError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
        if not width > 0:
            raise TaglessError(f"width must be > 0, got {width}")
        if out_grid is None:
            out_grid = 6 if stem == "imagenet" else 4
        if out_grid < 1:
            raise TaglessError(f"out_grid must be >= 1, got {out_grid}")
        c1, c2, c3, c4, c5 = (max(1, round(c * width)) for c in CHANNELS[variant])
        self.variant = variant
        self.stem_kind = stem
        self.out_grid = out_grid

        if stem == "imagenet":
            self.conv1 = ConvBlock(in_channels, c1, kernel=11, stride=4, padding=2)
            pool = dict(kernel_size=3, stride=2)
            strides = (4, 8, 16, 16, 16)
        else:
            self.conv1 = ConvBlock(in_channels, c1, kernel=5, stride=1, padding=2)
            pool = dict(kernel_size=3, stride=2, padding=1)
            strides = (1, 2, 4, 4, 4)
        self.pool1 = nn.MaxPool2d(**pool)
        self.conv2 = ConvBlock(c1, c2, kernel=5, stride=1, padding=2)
        self.pool2 = nn.MaxPool2d(**pool)
        self.conv3 = ConvBlock(c2, c3, kernel=3, stride=1, padding=1)
        self.conv4 = ConvBlock(c3, c4, kernel=3, stride=1, padding=1)
        self.conv5 = ConvBlock(c4, c5, kernel=3, stride=1, padding=1)
        self.pool5 = nn.MaxPool2d(**pool)

        self.out_dim = c5 * out_grid * out_grid
        self.layer_names = ["conv1", "conv2", "conv3", "conv4", "conv5"]
        self.layer_channels = dict(zip(self.layer_names, (c1, c2, c3, c4, c5)))
        self.layer_strides = dict(zip(self.layer_names, strides))
        init_conv_bn(self)

    def _stage(self, name: str, x: Tensor) -> Tensor:
        if name == "conv1":
            return self.conv1(x)
        if name == "conv2":
            return self.conv2(self.pool1(x))
        if name == "conv3":
            return self.conv3(self.pool2(x))
        return getattr(self, name)(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.pool1(self.conv1(x)))
        x = self.conv5(self.conv4(self.conv3(self.pool2(x))))
        x = F.adaptive_max_pool2d(self.pool5(x), self.out_grid)
        return x.flatten(1)


def alexnet(stem: str = "imagenet", width: float = 1.0, out_grid: int | None = None,
            in_channels: int = 3) -> AlexNet:
    """Standard AlexNet-BN, filters (96, 256, 384, 384, 256)."""
    return AlexNet("standard", stem, width, out_grid, in_channels)


def alexnet_small(stem: str = "imagenet", width: float = 1.0, out_grid: int | None = None,
                  in_channels: int = 3) -> AlexNet:
    """Small AlexNet-BN, filters (64, 192, 384, 256, 256)."""
    return AlexNet("small", stem, width, out_grid, in_channels)
