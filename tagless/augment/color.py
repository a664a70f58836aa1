"""Colour conversions and per-sample adjustments with torchvision semantics, vectorised.

Factors are a float or a length-B tensor (one per sample). Brightness, contrast and saturation
are multiplicative blends ``clamp(f * x + (1 - f) * ref, 0, 1)`` with ref = 0 (brightness), the
grayscale mean of the image (contrast) or the grayscale image (saturation), as torchvision.
Hue rotates HSV hue by ``shift`` turns (torchvision's hue_factor; kornia uses radians, 2 pi x).
Grayscale is ITU-R 601: 0.299 R + 0.587 G + 0.114 B (torchvision uses 0.2989). One-channel
images pass through saturation, hue and grayscale unchanged.
"""

from __future__ import annotations

import torch

from tagless.augment._common import check_images

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _per_sample(factor, images: torch.Tensor):
    """A tensor ``factor`` as B x 1 x 1 x 1 on the images' device; a number stays a number."""
    if not torch.is_tensor(factor):
        return float(factor)
    return factor.to(images.device, images.dtype).reshape(-1, 1, 1, 1)


def _sector_offsets(like: torch.Tensor) -> torch.Tensor:
    """(5, 3, 1) as 3 x 1 x 1, made on the device (a Python-list tensor would be a blocking
    host-to-device copy, a sync per call under CUDA)."""
    n = torch.arange(3, dtype=like.dtype, device=like.device).mul_(-2.0).add_(5.0)
    return n.view(3, 1, 1)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W luma (a one-channel input is returned as is)."""
    if images.shape[-3] == 1:
        return images
    r, g, b = images.unbind(-3)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def blend(images: torch.Tensor, ref: torch.Tensor, factor) -> torch.Tensor:
    """``clamp(f * images + (1 - f) * ref, 0, 1)``; f = 1 returns the images exactly."""
    f = _per_sample(factor, images)
    return (f * images + (1 - f) * ref).clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor) -> torch.Tensor:
    """Multiply by ``factor`` (torchvision; kornia's ``adjust_brightness`` adds instead)."""
    check_images(images)
    return blend(images, 0.0, factor)


def adjust_contrast(images: torch.Tensor, factor) -> torch.Tensor:
    """Blend with the per-sample mean of the grayscale image."""
    check_images(images)
    return blend(images, rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(images: torch.Tensor, factor) -> torch.Tensor:
    """Blend with the grayscale image (0 = gray, 1 = unchanged)."""
    check_images(images)
    return blend(images, rgb_to_grayscale(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W RGB in [0, 1] -> HSV with hue in turns [0, 1). Branch-free (``where``)."""
    r, g, b = images.unbind(-3)
    maxc = images.amax(dim=-3)
    minc = images.amin(dim=-3)
    delta = maxc - minc
    sat = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    # The sector of the largest channel (ties go to red, then green, as torchvision).
    hue = torch.where(maxc == r, (g - b) / d,
                      torch.where(maxc == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, sat, maxc], dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`. Closed form ``v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6``, n = 5, 3, 1 for R, G, B: no sector gather, so it vectorises."""
    h, s, v = hsv.unbind(-3)
    n = _sector_offsets(hsv)
    k = torch.remainder(n + 6.0 * h.unsqueeze(-3), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return v.unsqueeze(-3) - (v * s).unsqueeze(-3) * ramp


def adjust_hue(images: torch.Tensor, shift) -> torch.Tensor:
    """Rotate hue by ``shift`` turns (in [-0.5, 0.5]; torchvision's hue_factor).

    Fused RGB -> HSV -> RGB: with v = max and v s = max - min, only the hue sector is needed,
    and the ``mod 6`` of :func:`hsv_to_rgb` absorbs the wrap, so saturation, its division and
    the HSV tensor are never formed (about half the passes of the round trip)."""
    check_images(images)
    if images.shape[-3] == 1:
        return images
    r, g, b = images.unbind(-3)
    maxc = images.amax(dim=-3)
    delta = maxc - images.amin(dim=-3)
    # Sector of the largest channel (ties: red, then green). 0/1 masks multiply instead of
    # nested ``where`` (several times slower on CPU); in-place ops avoid fresh buffers.
    r_max = maxc == r
    g_max = (maxc == g).logical_and_(~r_max)
    b_max = ~(r_max | g_max)
    num = (g - b).mul_(r_max).add_((b - r).mul_(g_max)).add_((r - g).mul_(b_max))
    s = _per_sample(shift, images)
    hue6 = num.div_(delta.clamp_min(1e-12)).add_(g_max, alpha=2.0).add_(b_max, alpha=4.0)
    # Hue in sixths of a turn, shifted, not yet wrapped.
    hue6.add_(6.0 * (s.view(-1, 1, 1) if torch.is_tensor(s) else s))
    n = _sector_offsets(images)
    k = hue6.unsqueeze(-3) + n
    k.sub_(torch.floor(k * (1.0 / 6.0)).mul_(6.0))  # k mod 6
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return ramp.mul_(delta.unsqueeze(-3)).neg_().add_(maxc.unsqueeze(-3))
