"""Per-sample random resized crop (torchvision ``RandomResizedCrop`` sampling) on the device.

Boxes are ``(x0, y0, x1, y1)`` in source pixel-edge coordinates (pixel i covers [i, i + 1]), so
box ``(j, i, j + w, i + h)`` is torchvision's crop ``img[..., i:i + h, j:j + w]``.

The resample is ``F.grid_sample`` (bilinear, align_corners=False) on per-sample separable grids.
Why this form: it reads 4 taps per output pixel whatever the source size, runs as one kernel for
the whole batch on CPU and CUDA, and beat a separable batched-matmul form (~1.6x at 512 x 3 x 32
x 32 on CPU; matmul cost also grows with the source size). ``roi_align`` lives in torchvision,
which tagless does not require. Sample positions are clamped to the box's edge pixel centres, so
the result equals ``F.interpolate(crop, size, mode='bilinear', align_corners=False)`` of the
integer crop. No antialiasing: a crop shrunk by more than 2x aliases (torchvision's tensor path
antialiases); at the CIFAR-scale sizes tagless targets, crops are mostly enlarged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tagless.augment._common import check_images, device_of, pair, uniform
from tagless.errors import TaglessError


def sample_resized_crop_params(batch_size: int, height: int, width: int,
                               scale: tuple[float, float] = (0.08, 1.0),
                               ratio: tuple[float, float] = (3 / 4, 4 / 3), *,
                               generator: torch.Generator, device=None,
                               attempts: int = 10) -> torch.Tensor:
    """float32 B x 4 boxes (x0, y0, x1, y1), integer-valued, one independent draw per sample.

    As torchvision: area ~ U(scale) * H * W, log aspect ~ U(log ratio), w/h rounded; the first of
    ``attempts`` candidates that fits is kept, else the centre crop clipped to ``ratio``. All
    B x attempts candidates are drawn at once (no loop, no host sync)."""
    if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
        raise TaglessError(f"crop: need 0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1], "
                           f"got scale={tuple(scale)} ratio={tuple(ratio)}")
    device = device_of(generator, device)
    area = float(height * width)
    target = uniform((batch_size, attempts), scale[0], scale[1], generator, device) * area
    aspect = uniform((batch_size, attempts), math.log(ratio[0]), math.log(ratio[1]), generator,
                     device).exp_()
    w = torch.sqrt(target * aspect).round_()
    h = torch.sqrt(target / aspect).round_()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    found = ok.any(dim=1)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    # Fallback (torchvision): the whole image, clipped to the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fw, fh = round(height * ratio[1]), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))

    # Offset uniform over the integer positions 0..(H - h); the fallback is centred.
    u = torch.rand(batch_size, 2, generator=generator, device=device)
    x0 = torch.where(found, (u[:, 0] * (width - w + 1)).floor_().clamp_(max=width - w),
                     torch.full_like(w, (width - fw) // 2))
    y0 = torch.where(found, (u[:, 1] * (height - h + 1)).floor_().clamp_(max=height - h),
                     torch.full_like(h, (height - fh) // 2))
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def center_crop_box(height: int, width: int, size, fraction: float = 1.0) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the centred crop with the aspect of ``size`` (h, w), as large as
    fits, times ``fraction`` per side (0.875 = Resize(256) + CenterCrop(224))."""
    out_h, out_w = pair(size)
    side = min(height / out_h, width / out_w) * fraction
    ch, cw = max(1, round(out_h * side)), max(1, round(out_w * side))
    y0, x0 = round((height - ch) / 2), round((width - cw) / 2)
    return x0, y0, x0 + cw, y0 + ch


def center_crop_boxes(batch_size: int, height: int, width: int, size, fraction: float = 1.0,
                      device=None) -> torch.Tensor:
    """B x 4 boxes of :func:`center_crop_box`."""
    boxes = torch.empty(batch_size, 4, device=device)
    for i, v in enumerate(center_crop_box(height, width, size, fraction)):  # fills, not a blocking list copy
        boxes[:, i] = v
    return boxes


def _grid_axis(lo: torch.Tensor, hi: torch.Tensor, n_out: int, n_in: int) -> torch.Tensor:
    """N x n_out normalised grid coordinates sampling [lo, hi) at n_out cell centres."""
    u = torch.arange(n_out, device=lo.device, dtype=lo.dtype) + 0.5
    centres = lo[:, None] + u * ((hi - lo) / n_out)[:, None] - 0.5  # source pixel-centre coords
    # Clamp to the box's edge pixels, as interpolating the cropped tensor does.
    centres = torch.clamp(centres, min=lo[:, None], max=torch.maximum(hi - 1, lo)[:, None])
    return centres.mul_(2.0 / n_in).add_(1.0 / n_in - 1.0)


def apply_resized_crop(images: torch.Tensor, boxes: torch.Tensor, size,
                       flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop ``boxes`` and resize to ``size`` (int or (h, w)); bilinear, no antialias.

    ``boxes`` is (k * B) x 4 for k crops per image, view-major (row v * B + b is view v of image
    b); the output is (k * B) x C x h x w in the same order. The k grids are laid side by side in
    one grid, so k views cost one ``grid_sample`` call and no copy of the source. ``flip`` (Bool,
    k * B) mirrors a crop by reversing its x samples: a flip after the crop, for free."""
    check_images(images)
    b, c, height, width = images.shape
    out_h, out_w = pair(size)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] % max(b, 1) != 0:
        raise TaglessError(f"crop: boxes must be (k * {b}) x 4, got {tuple(boxes.shape)}")
    k = boxes.shape[0] // b
    boxes = boxes.to(images.dtype)
    gx = _grid_axis(boxes[:, 0], boxes[:, 2], out_w, width)  # kB x w
    gy = _grid_axis(boxes[:, 1], boxes[:, 3], out_h, height)  # kB x h
    if flip is not None:
        gx = torch.where(flip.view(-1, 1), gx.flip(1), gx)
    gx = gx.view(k, b, 1, out_w).expand(k, b, out_h, out_w)
    gy = gy.view(k, b, out_h, 1).expand(k, b, out_h, out_w)
    grid = torch.stack([gx, gy], dim=-1).permute(1, 2, 0, 3, 4).reshape(b, out_h, k * out_w, 2)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if k == 1:
        return out
    return out.view(b, c, out_h, k, out_w).permute(3, 0, 1, 2, 4).reshape(k * b, c, out_h, out_w)


def random_resized_crop(images: torch.Tensor, size, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), *, generator: torch.Generator,
                        return_params: bool = False):
    """Per-sample random resized crop of float B x C x H x W images to ``size``.

    With ``return_params`` returns (crops, boxes). No antialiasing (see module docstring)."""
    check_images(images)
    b, _, height, width = images.shape
    boxes = sample_resized_crop_params(b, height, width, scale, ratio, generator=generator,
                                       device=images.device)
    out = apply_resized_crop(images, boxes, size)
    return (out, boxes) if return_params else out


def center_crop_resize(images: torch.Tensor, size: int, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation crop: the centred square of side ``fraction`` x the shorter side, resized
    to ``size`` with antialiasing (torchvision's Resize(size / fraction) + CenterCrop(size) up
    to rounding). Returns (float B x C x size x size, B x 4 boxes). The crop is an integer
    slice, so no resampling happens when it already has the target size."""
    check_images(images)
    b, _, height, width = images.shape
    x0, y0, x1, y1 = center_crop_box(height, width, size, fraction)
    crop = images[:, :, y0:y1, x0:x1]
    if crop.shape[-2:] != (size, size):
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return crop, center_crop_boxes(b, height, width, size, fraction, images.device)
