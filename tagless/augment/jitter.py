"""Random colour jitter (torchvision ``RandomApply(ColorJitter, p)``) and random grayscale.

Per sample: with probability p, brightness, contrast, saturation and hue are applied in a random
order (a per-sample permutation, as torchvision draws one per image).

Why it is fast: a per-sample order naively means evaluating all four ops at each of the four
steps. Here the three blends share one form (``f x + (1 - f) ref``, see :mod:`color`), so a step
is one blend whose factor and reference are picked per sample; a sample whose op at that step is
something else gets f = 1, which is exactly the identity. Hue, the costly op, splits each
sample's order into the blends before it and those after it: 3 blend steps, one hue pass over
the batch, 3 blend steps. No Python loop over samples, no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tagless.augment._common import check_images, check_probability, coin, device_of, uniform
from tagless.augment.color import adjust_hue, rgb_to_grayscale
from tagless.errors import TaglessError

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
_IDENTITY = (1.0, 1.0, 1.0, 0.0)


@dataclass
class JitterParams:
    """Sampled colour-jitter parameters for B samples.

    apply: Bool B, jitter this sample. factors: float B x 4, (brightness, contrast, saturation)
    multipliers and hue shift in turns, identity (1, 1, 1, 0) where ``apply`` is False.
    order: int64 B x 4, a permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE, left to right.
    with_hue: False skips the hue pass (hue strength 0), a static choice, not a tensor."""

    apply: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    with_hue: bool = True


def sample_color_jitter_params(batch_size: int, brightness: float = 0.4, contrast: float = 0.4,
                               saturation: float = 0.4, hue: float = 0.1, p: float = 0.8, *,
                               generator: torch.Generator, device=None) -> JitterParams:
    """Factors ~ U[max(0, 1 - s), 1 + s] for the blends, hue ~ U[-hue, hue] (torchvision)."""
    check_probability(p, "jitter p")
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise TaglessError(f"jitter: strengths must be >= 0 and hue <= 0.5, got "
                           f"{(brightness, contrast, saturation, hue)}")
    device = device_of(generator, device)
    apply = coin(batch_size, p, generator, device)
    cols = [uniform(batch_size, max(0.0, 1 - s), 1 + s, generator, device)
            for s in (brightness, contrast, saturation)]
    cols.append(uniform(batch_size, -hue, hue, generator, device))
    # Identity where not applied (Python scalars: no host-to-device copy).
    factors = torch.stack([torch.where(apply, c, one) for c, one in zip(cols, _IDENTITY)], dim=1)
    order = torch.rand(batch_size, 4, generator=generator, device=device).argsort(dim=1)
    return JitterParams(apply, factors, order, with_hue=hue > 0)


def _blend_step(x: torch.Tensor, op: torch.Tensor, factor: torch.Tensor,
                active: torch.Tensor) -> torch.Tensor:
    """One step: each active sample gets its blend ``op`` with ``factor``; others f = 1.

    ``f x + (1 - f) ref`` with ref = a gray + c mean and per-sample 0/1 selectors a, c; the
    selectors are folded into per-sample coefficients, so there is no full-size ``where``,
    and f = 1 (coefficients 0) returns x exactly."""
    f = torch.where(active, factor, torch.ones_like(factor)).view(-1, 1, 1, 1)
    op = op.view(-1, 1, 1, 1)
    alpha = (1 - f) * (op == SATURATION).to(x.dtype)
    beta = (1 - f) * (op == CONTRAST).to(x.dtype)
    gray = rgb_to_grayscale(x)
    ref = torch.addcmul(beta * gray.mean(dim=(-3, -2, -1), keepdim=True), alpha, gray)
    return torch.addcmul(ref, f, x).clamp_(0.0, 1.0)


def apply_color_jitter(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Apply sampled jitter; deterministic given ``params``."""
    check_images(images)
    order = params.order.to(images.device)
    step_factor = params.factors.to(images.dtype).gather(1, order)  # B x 4: factor at each step
    hue_at = (order == HUE).to(torch.uint8).argmax(dim=1)  # the step at which hue runs
    on = params.apply.to(images.device)
    x = images
    for k in range(3):  # hue_at <= 3, so blends before hue sit at steps 0..2
        x = _blend_step(x, order[:, k], step_factor[:, k], on & (k < hue_at))
    if params.with_hue and images.shape[1] == 3:
        shift = params.factors[:, HUE].to(images.dtype)
        x = torch.where(on.view(-1, 1, 1, 1), adjust_hue(x, shift), x)
    for k in range(1, 4):  # ... and blends after hue at steps 1..3
        x = _blend_step(x, order[:, k], step_factor[:, k], on & (k > hue_at))
    return x


def color_jitter(images: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, p: float = 0.8, *,
                 generator: torch.Generator, return_params: bool = False):
    """Per-sample random colour jitter with probability ``p``, random op order per sample."""
    params = sample_color_jitter_params(images.shape[0], brightness, contrast, saturation, hue, p,
                                        generator=generator, device=images.device)
    out = apply_color_jitter(images, params)
    return (out, params) if return_params else out


def sample_grayscale_params(batch_size: int, p: float = 0.2, *, generator: torch.Generator,
                            device=None) -> torch.Tensor:
    """Bool B: convert sample b to grayscale with probability ``p``."""
    check_probability(p, "grayscale p")
    return coin(batch_size, p, generator, device_of(generator, device))


def apply_grayscale(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the masked samples by their luma, repeated over the channels."""
    check_images(images)
    gray = rgb_to_grayscale(images).expand_as(images)
    return torch.where(mask.view(-1, 1, 1, 1), gray, images)


def grayscale(images: torch.Tensor, p: float = 0.2, *, generator: torch.Generator,
              return_params: bool = False):
    """Per-sample random grayscale (ITU-R 601 weights), keeping the channel count."""
    mask = sample_grayscale_params(images.shape[0], p, generator=generator, device=images.device)
    out = apply_grayscale(images, mask)
    return (out, mask) if return_params else out
