"""Frozen-backbone features of uint8 images through the one evaluation preprocessing
(:func:`tagless.augment.eval_view`: centred crop, resize, normalise; no randomness), batched on
the device. The online monitor, ``tagless eval`` and the per-layer probes all use it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from tagless.augment import IMAGENET_MEAN, IMAGENET_STD, eval_view
from tagless.engine.batches import readonly_tensor
from tagless.models.base import pooled_layer_features


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: np.ndarray | torch.Tensor,
    size: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    layer: str | None = None,
    pool_dim: int | None = None,
    pool_mode: str = "max",
    crop_fraction: float = 1.0,
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
                chunk = readonly_tensor(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2)
            x = eval_view(chunk.to(device, non_blocking=True), size, crop_fraction, mean, std)
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


def view_features(module: nn.Module, images: np.ndarray | torch.Tensor, views, device: torch.device | str = "cpu",
                  batch_size: int = 512) -> torch.Tensor:
    """:func:`extract_features` in the eval view a run's ``views`` section describes (its global
    size, normalisation and centred-crop fraction): the features the monitor, the demo's
    baselines and the benchmarks score."""
    return extract_features(module, images, views.global_size, views.mean, views.std, batch_size=batch_size,
                            device=device, crop_fraction=views.eval_crop_fraction)
