"""Pixel-wise ops: uint8 -> float conversion, per-sample solarize, and normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tagless.augment._common import check_images, check_probability, coin, device_of
from tagless.errors import TaglessError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32 unchanged."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if not images.is_floating_point():
        raise TaglessError(f"images: expected uint8 or float, got {images.dtype}")
    return images.to(torch.float32)


def _channel_vector(values, images: torch.Tensor, name: str) -> torch.Tensor:
    v = torch.as_tensor(values, dtype=images.dtype, device=images.device).reshape(-1)
    if v.numel() not in (1, images.shape[1]):
        raise TaglessError(f"normalize: {name} has {v.numel()} values for {images.shape[1]} channels")
    return v.view(1, -1, 1, 1)


def normalize(images: torch.Tensor, mean: Sequence[float] | torch.Tensor = IMAGENET_MEAN,
              std: Sequence[float] | torch.Tensor = IMAGENET_STD) -> torch.Tensor:
    """``(images - mean) / std`` per channel."""
    check_images(images)
    return (images - _channel_vector(mean, images, "mean")) / _channel_vector(std, images, "std")


def sample_solarize_params(batch_size: int, p: float = 0.2, *, generator: torch.Generator,
                           device=None) -> torch.Tensor:
    """Bool B: solarize sample b with probability ``p``."""
    check_probability(p, "solarize p")
    return coin(batch_size, p, generator, device_of(generator, device))


def apply_solarize(images: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert (1 - x) the pixels >= ``threshold`` of the masked samples (torchvision, kornia)."""
    check_images(images)
    invert = mask.view(-1, 1, 1, 1) & (images >= threshold)
    return torch.where(invert, 1.0 - images, images)


def solarize(images: torch.Tensor, p: float = 0.2, threshold: float = 0.5, *,
             generator: torch.Generator, return_params: bool = False):
    """Per-sample random solarize with probability ``p``."""
    mask = sample_solarize_params(images.shape[0], p, generator=generator, device=images.device)
    out = apply_solarize(images, mask, threshold)
    return (out, mask) if return_params else out
