"""Per-sample horizontal flip.

Params are a BoolTensor B (True = flipped). The recipes fold the flip into the crop's sampling
grid (``apply_resized_crop(..., flip=)``) so it costs nothing there; this op is for other uses.
"""

from __future__ import annotations

import torch

from tagless.augment._common import check_images, check_probability, coin, device_of


def sample_horizontal_flip_params(batch_size: int, p: float = 0.5, *, generator: torch.Generator,
                                  device=None) -> torch.Tensor:
    """BoolTensor B: flip sample b with probability ``p``."""
    check_probability(p, "flip p")
    return coin(batch_size, p, generator, device_of(generator, device))


def apply_horizontal_flip(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples where ``flip`` is True."""
    check_images(images)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def horizontal_flip(images: torch.Tensor, p: float = 0.5, *, generator: torch.Generator,
                    return_params: bool = False):
    """Flip each sample independently with probability ``p``."""
    flip = sample_horizontal_flip_params(images.shape[0], p, generator=generator, device=images.device)
    out = apply_horizontal_flip(images, flip)
    return (out, flip) if return_params else out
