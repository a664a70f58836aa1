"""Shared helpers: input checks and per-sample random draws from an explicit generator.

Every sampler draws a fixed number of values whatever its probability or strength, so the
generator's stream layout (and thus every later draw) does not depend on the settings.
"""

from __future__ import annotations

import torch

from tagless.errors import TaglessError


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise TaglessError unless ``images`` is a float B x C x H x W tensor."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TaglessError(f"{name}: expected a B x C x H x W tensor, got {shape}")
    if not images.is_floating_point():
        raise TaglessError(f"{name}: expected a float tensor in [0, 1], got {images.dtype} (use to_float)")


def device_of(generator: torch.Generator, device: torch.device | str | None) -> torch.device:
    """The device to draw on: ``device`` if given, else the generator's own device."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    return torch.device(device) if device is not None else generator.device


def uniform(shape, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    """float32 U[low, high) of ``shape``."""
    u = torch.rand(shape, generator=generator, device=device)
    return u.mul_(high - low).add_(low)


def coin(n: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    """Bool n: True with probability ``p`` (p = 0 never, p = 1 always; rand is in [0, 1))."""
    return torch.rand(n, generator=generator, device=device) < p


def pair(size) -> tuple[int, int]:
    """``size`` as (h, w): an int means a square."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def check_probability(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise TaglessError(f"{name}: a probability must lie in [0, 1], got {p}")
