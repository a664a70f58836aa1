"""Frozen-backbone features of uint8 images: the evaluation view (resize + normalise, no
randomness), batched on the device."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tagless.models.base import pooled_layer_features


def eval_preprocess(images: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """uint8 B x C x H x W -> float normalised B x C x size x size."""
    x = images.float().div_(255)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.as_tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.as_tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: np.ndarray | torch.Tensor,
    size: int,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    layer: str | None = None,
    pool_dim: int | None = None,
    pool_mode: str = "max",
) -> torch.Tensor:
    """Pooled features (N x D, float32 on ``device``) of uint8 images N x H x W x C (numpy or
    an on-device uint8 N x C x H x W tensor). ``layer`` picks an intermediate block, pooled
    globally (mean), or to about ``pool_dim`` dims when given (SeLa's per-layer protocol,
    paper 002 appendix: adaptive max-pooling). The backbone is put in eval mode and restored."""
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            if isinstance(chunk, np.ndarray):
                chunk = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2)
            x = eval_preprocess(chunk.to(device, non_blocking=True), size, mean, std)
            if layer is None:
                feats = backbone(x)
            else:
                feats = backbone.forward_features(x, [layer])[layer]
                if pool_dim:
                    feats = pooled_layer_features(feats, pool_dim, pool_mode)
                elif feats.dim() == 4:
                    feats = feats.mean(dim=(2, 3))
            out.append(feats.float())
    finally:
        backbone.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)
