"""The `Backbone` interface every encoder in `tagless.models` implements, and per-layer pooling.

A backbone maps a float image batch ``B x C x H x W`` to a representation ``B x out_dim``
(`forward`) and exposes its intermediate blocks by name (`forward_features`) so evaluation
can probe every layer (SeLa's conv1..conv5 linear probes, CAM classifiers on the last map).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tagless.errors import TaglessError


class Backbone(nn.Module):
    """Base class of the encoders.

    Attributes every subclass sets in its constructor:
        out_dim: size of the vector returned by `forward`.
        layer_names: the probe points, in network order (ResNet: ``stem, layer1..layer4``;
            AlexNet: ``conv1..conv5``).
        layer_channels: channels of the feature map after each named block.
        layer_strides: nominal downsampling factor of each named block's map w.r.t. the input
            (exact for ResNets on inputs divisible by it; AlexNet's un-padded ImageNet pools
            make it approximate there).

    Subclasses implement `_stage(name, x)` (run one named block on the output of the previous
    one) and `forward`.
    """

    out_dim: int
    layer_names: list[str]
    layer_channels: dict[str, int]
    layer_strides: dict[str, int]

    def _stage(self, name: str, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def layer_modules(self, name: str) -> list[nn.Module]:
        """The modules holding the parameters of block ``name`` (default: the attribute of that
        name), e.g. for freezing the blocks below a fine-tuned one (``model.trainable``)."""
        if name not in self.layer_names:
            raise TaglessError(f"unknown layer {name!r}; valid layers: {', '.join(self.layer_names)}")
        return [getattr(self, name)]

    def forward_features(self, x: Tensor, layers: Sequence[str] | str) -> dict[str, Tensor]:
        """Feature maps ``B x C_l x H_l x W_l`` after each block in `layers`.

        Runs the network only as far as the deepest requested block. The dict is keyed by
        the requested names, in the order given. A single name may be passed as a string.
        """
        if isinstance(layers, str):
            layers = [layers]
        last = self._last_index(layers)
        feats: dict[str, Tensor] = {}
        for name in self.layer_names[: last + 1]:
            x = self._stage(name, x)
            feats[name] = x
        return {name: feats[name] for name in layers}

    def _last_index(self, layers: Sequence[str]) -> int:
        unknown = [name for name in layers if name not in self.layer_names]
        if unknown:
            raise TaglessError(
                f"unknown layer {unknown[0]!r} for {type(self).__name__}; "
                f"valid layers: {', '.join(self.layer_names)}"
            )
        last = -1  # plain loop: dynamo (torch.compile fullgraph) rejects max(..., default=)
        for name in layers:
            last = max(last, self.layer_names.index(name))
        return last


def init_conv_bn(module: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal (fan_out, ReLU) convs, BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pooled_grid(channels: int, height: int, width: int, target_dim: int) -> tuple[int, int]:
    """Grid ``(h, w)`` that `pooled_layer_features` pools a ``C x H x W`` map to.

    The grid is square with side ``round(sqrt(target_dim / C))`` (at least 1), so
    ``C * h * w`` is the square closest to `target_dim`: on a 224 input of the standard
    AlexNet this gives SeLa's / Zhang et al.'s 96x10x10 = 9600, 256x6x6 = 9216,
    384x5x5 = 9600, 384x5x5 = 9600 and 256x6x6 = 9216 for conv1..conv5. Each side is capped at
    the map's own size (pooling never upsamples), so small maps give fewer dimensions.
    """
    if target_dim < 1 or channels < 1:
        raise TaglessError(f"target_dim and channels must be >= 1, got {target_dim} and {channels}")
    side = max(1, round(math.sqrt(target_dim / channels)))
    return min(side, height), min(side, width)


def pooled_layer_features(fmap: Tensor, target_dim: int = 9600, mode: str = "max") -> Tensor:
    """Adaptively pool a ``B x C x H x W`` map to a grid with ``C*h*w`` close to `target_dim`.

    This is SeLa's per-layer linear-probe protocol (Asano et al. 2020, appendix A.1, after
    Zhang et al. 2017): each layer is adaptive-max-pooled to about 9600 dimensions, then
    flattened. `mode` is ``'max'`` (the protocol) or ``'avg'``. See `pooled_grid` for the grid.
    Returns ``B x (C*h*w)``.
    """
    if mode not in ("max", "avg"):
        raise TaglessError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
    if fmap.dim() != 4:
        raise TaglessError(f"expected a B x C x H x W feature map, got shape {tuple(fmap.shape)}")
    grid = pooled_grid(fmap.shape[1], fmap.shape[2], fmap.shape[3], target_dim)
    pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return torch.flatten(pool(fmap, grid), 1)
