"""ResNet-18/34/50 (He et al. 2016) with torchvision's parameter names.

A backbone's ``state_dict`` has exactly torchvision's keys and shapes (``conv1.weight``,
``bn1.running_mean``, ``layer1.0.conv1.weight``, ``layer2.0.downsample.0.weight``, ...), so with
``stem='imagenet'`` and ``width=1`` it loads into ``torchvision.models.resnet50()`` with
``strict=False`` (only ``fc.*`` missing), or strictly when built with ``num_classes=1000``.
Bottlenecks stride in the 3x3 conv ("ResNet v1.5", as torchvision). Initialisation follows
torchvision: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0, default `nn.Linear`.

Variants are arguments, not copies:
    stem='imagenet': 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max-pool (input / 4).
    stem='cifar':    3x3 stride-1 conv + BN + ReLU, no max-pool (for 32x32 inputs; the
                     `maxpool` attribute is an `nn.Identity`, so the key set is unchanged).
    width:           multiplies the base width 64 (``max(1, round(64 * width))``); stage widths
                     are base x 1, 2, 4, 8 (x4 for Bottleneck outputs). ``width=0.25`` gives a
                     tiny CPU model.
"""
from __future__ import annotations

from torch import Tensor, nn

from tagless.errors import TaglessError
from tagless.models.base import Backbone, init_conv_bn

STEMS = ("imagenet", "cifar")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4) with a shortcut; ResNet-50."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


def _make_layer(block, in_ch: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One stage: `blocks` blocks, the first strided with a 1x1-conv + BN projection shortcut
    (``downsample.0`` / ``downsample.1``) when the shape changes."""
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    mods = [block(in_ch, planes, stride, downsample)]
    mods += [block(out_ch, planes) for _ in range(1, blocks)]
    return nn.Sequential(*mods)


class ResNet(Backbone):
    """ResNet backbone; `forward` returns the global-average-pooled ``layer4`` map, ``B x out_dim``.

    Args:
        block: `BasicBlock` or `Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        stem: ``'imagenet'`` or ``'cifar'`` (see module docstring).
        width: multiplier of the base width 64 (float > 0).
        zero_init_residual: zero the last BN weight of every residual branch, so each block
            starts as the identity (Goyal et al. 2017); off by default, as in torchvision.
        num_classes: if given, adds ``fc = nn.Linear(out_dim, num_classes)`` (torchvision's
            classifier). `forward` still returns the representation; `classify(x)` applies fc.
        in_channels: input channels (3 for RGB).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        stem: str = "imagenet",
        width: float = 1.0,
        zero_init_residual: bool = False,
        num_classes: int | None = None,
        in_channels: int = 3,
    ):
        super().__init__()
        if stem not in STEMS:
            raise TaglessError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
        if not width > 0:
            raise TaglessError(f"width must be > 0, got {width}")
        if num_classes is not None and num_classes < 1:
            raise TaglessError(f"num_classes must be >= 1, got {num_classes}")
        base = max(1, round(64 * width))
        self.stem_kind = stem
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, base, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, base, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)

        self.layer1 = _make_layer(block, base, base, layers[0], stride=1)
        self.layer2 = _make_layer(block, base * block.expansion, base * 2, layers[1], stride=2)
        self.layer3 = _make_layer(block, base * 2 * block.expansion, base * 4, layers[2], stride=2)
        self.layer4 = _make_layer(block, base * 4 * block.expansion, base * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

        self.out_dim = base * 8 * block.expansion
        self.num_classes = num_classes
        if num_classes is not None:
            self.fc = nn.Linear(self.out_dim, num_classes)

        stem_stride = 4 if stem == "imagenet" else 1
        self.layer_names = ["stem", "layer1", "layer2", "layer3", "layer4"]
        self.layer_channels = {
            "stem": base,
            **{f"layer{i + 1}": base * 2**i * block.expansion for i in range(4)},
        }
        self.layer_strides = {
            "stem": stem_stride,
            **{f"layer{i + 1}": stem_stride * 2**i for i in range(4)},
        }
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        init_conv_bn(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def _stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def layer_modules(self, name: str) -> list[nn.Module]:
        """Block ``name``'s modules; the stem is ``conv1`` and ``bn1``."""
        return [self.conv1, self.bn1] if name == "stem" else super().layer_modules(name)

    def _stage(self, name: str, x: Tensor) -> Tensor:
        if name == "stem":
            return self._stem(x)
        return getattr(self, name)(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self._stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def classify(self, x: Tensor) -> Tensor:
        """Logits ``B x num_classes`` from the ``fc`` layer (only when built with num_classes)."""
        if self.num_classes is None:
            raise TaglessError("this ResNet was built without num_classes, so it has no fc layer")
        return self.fc(self.forward(x))


def resnet18(stem: str = "imagenet", width: float = 1.0, zero_init_residual: bool = False,
             num_classes: int | None = None, in_channels: int = 3) -> ResNet:
    """ResNet-18: BasicBlock x (2, 2, 2, 2); out_dim 512 * width."""
    return ResNet(BasicBlock, (2, 2, 2, 2), stem, width, zero_init_residual, num_classes, in_channels)


def resnet34(stem: str = "imagenet", width: float = 1.0, zero_init_residual: bool = False,
             num_classes: int | None = None, in_channels: int = 3) -> ResNet:
    """ResNet-34: BasicBlock x (3, 4, 6, 3); out_dim 512 * width."""
    return ResNet(BasicBlock, (3, 4, 6, 3), stem, width, zero_init_residual, num_classes, in_channels)


def resnet50(stem: str = "imagenet", width: float = 1.0, zero_init_residual: bool = False,
             num_classes: int | None = None, in_channels: int = 3) -> ResNet:
    """ResNet-50: Bottleneck x (3, 4, 6, 3); out_dim 2048 * width."""
    return ResNet(Bottleneck, (3, 4, 6, 3), stem, width, zero_init_residual, num_classes, in_channels)
