"""Contrastive and siamese losses as pure functions of tensors.

[0] He et al., Momentum Contrast (MoCo), CVPR 2020; Chen et al., MoCo-v2, arXiv 2003.04297.
[1] Chen & He, Exploring Simple Siamese Representation Learning (SimSiam), CVPR 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.2,
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE with a bank of negatives, MoCo [0] Eq. 1 (MoCo-v2 default T = 0.2).

    ``-log exp(q.k+/T) / (exp(q.k+/T) + sum_n exp(q.n/T))`` where ``query`` (B x D) and
    ``key`` (B x D, the positive of each query, no gradient in MoCo) are L2-normalised here and
    ``negatives`` (K x D, the queue) is used as given (already normalised when enqueued).
    Computed as a cross-entropy over [l_pos, l_neg] logits in fp32 (log-sum-exp form).
    """
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.float(), dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ negatives.float().t()
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels, reduction=reduction)


def contrastive_accuracy(query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Fraction of queries whose positive key beats every negative (a training monitor)."""
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.float(), dim=1)
    l_pos = (q * k).sum(dim=1)
    l_neg = q @ negatives.float().t()
    return (l_pos > l_neg.max(dim=1).values).float().mean()


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), [1] Eq. 1, averaged over the batch.

    The stop-gradient is applied here (``target.detach()``), as [1] Eq. 3 requires.
    """
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.detach().float(), dim=1)
    return -(p * z).sum(dim=1).mean()
