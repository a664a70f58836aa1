"""Per-sample random Gaussian blur (torchvision ``RandomApply(GaussianBlur, p)`` semantics).

Params are sigma, float B, with 0 meaning "not blurred" (the sigma -> 0 limit: a delta kernel,
which leaves the sample exactly unchanged, so no ``where`` pass is needed). The blur is
separable: per-sample 1-D kernels run as two depthwise (grouped) convolutions over the batch
folded into channels (1 x B*C x H x W, groups = B*C), one kernel launch per direction whatever
the batch, with reflect padding like torchvision and kornia.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tagless.augment._common import check_images, check_probability, coin, device_of, uniform
from tagless.errors import TaglessError


def auto_kernel_size(size: int) -> int:
    """Odd kernel ~10% of the crop side, at least 3 (SimCLR/BYOL: 23 at 224, 3 at 32)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def gaussian_kernel1d(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """B x kernel_size normalised Gaussians ``exp(-x^2 / 2 sigma^2)``, x = -k//2..k//2; a delta
    where sigma == 0."""
    half = kernel_size // 2
    x = torch.arange(-half, half + 1, dtype=sigma.dtype, device=sigma.device)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    kernel = torch.exp(-0.5 * (x / safe[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (x == 0).to(sigma.dtype).expand_as(kernel)
    return torch.where(sigma[:, None] > 0, kernel, delta)


def sample_gaussian_blur_params(batch_size: int, sigma: tuple[float, float] = (0.1, 2.0),
                                p: float = 0.5, *, generator: torch.Generator,
                                device=None) -> torch.Tensor:
    """float B: sigma ~ U(sigma) with probability ``p``, else 0 (no blur)."""
    check_probability(p, "blur p")
    if not 0 < sigma[0] <= sigma[1]:
        raise TaglessError(f"blur: need 0 < sigma[0] <= sigma[1], got {tuple(sigma)}")
    device = device_of(generator, device)
    apply = coin(batch_size, p, generator, device)
    s = uniform(batch_size, sigma[0], sigma[1], generator, device)
    return torch.where(apply, s, torch.zeros_like(s))


def apply_gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Blur sample b with a ``kernel_size`` Gaussian of std ``sigma[b]`` (0 = unchanged).

    The kernel is shrunk to fit the image if needed (reflect padding needs pad < side)."""
    check_images(images)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise TaglessError(f"blur: kernel_size must be odd and positive, got {kernel_size}")
    b, c, h, w = images.shape
    kernel_size = min(kernel_size, 2 * min(h, w) - 1)
    pad = kernel_size // 2
    if pad == 0:
        return images
    k = gaussian_kernel1d(sigma.to(images.device, images.dtype), kernel_size)
    k = k[:, None].expand(b, c, kernel_size).reshape(b * c, kernel_size)  # a filter per (sample, channel)
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


def gaussian_blur(images: torch.Tensor, sigma: tuple[float, float] = (0.1, 2.0), p: float = 0.5,
                  kernel_size: int | None = None, *, generator: torch.Generator,
                  return_params: bool = False):
    """Per-sample random Gaussian blur; ``kernel_size`` None = :func:`auto_kernel_size`."""
    check_images(images)
    params = sample_gaussian_blur_params(images.shape[0], sigma, p, generator=generator,
                                         device=images.device)
    k = kernel_size or auto_kernel_size(min(images.shape[-2:]))
    out = apply_gaussian_blur(images, params, k)
    return (out, params) if return_params else out
