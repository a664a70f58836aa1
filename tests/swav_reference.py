"""SwAV's sinkhorn written out (official main_swav.py / distributed_sinkhorn, one process): the
independent reference that tagless.ot.sinkhorn and the SwAV method are tested against."""

import torch


def swav_codes(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Q = exp(scores / eps)^T normalised to sum 1; per iteration rows (prototypes) to 1/K, then
    columns (samples) to 1/B; the codes are (Q * B)^T, in float64."""
    q = torch.exp(scores.double() / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T
