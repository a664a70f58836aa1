"""SwAV's swapped-prediction loss as a pure function of tensors.

[0] Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster Assignments
    (SwAV), NeurIPS 2020. Eq. 1: L(z_t, z_s) = l(z_t, q_s) + l(z_s, q_t); Eq. 2:
    l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k) with p_t^(k) = softmax_k(z_t^T c_k / tau), tau = 0.1;
    Sec. 3.2 (multi-crop): codes only from the full-resolution crops, every other crop predicts them.
Official code: facebookresearch/swav ``main_swav.py`` (``crops_for_assign = [0, 1]``, the sum over
the other crops divided by ``n_crops - 1``, then by ``len(crops_for_assign)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swav_loss(scores: list[torch.Tensor], codes: list[torch.Tensor], assign: list[int],
              temperature: float = 0.1) -> torch.Tensor:
    """Swapped prediction over multi-crop views, [0] Eq. 1-2 with multi-crop (Sec. 3.2).

    ``scores[v]`` (B x K): prototype scores z_v^T C of crop v (z and the prototypes L2-normalised).
    ``codes[j]`` (B x K, rows summing to 1, no gradient): the codes q of crop ``assign[j]``
    (Sinkhorn of that crop's detached scores). For each assigned crop i and every other crop
    v != i the loss is ``-mean_b sum_k q_ibk log softmax(scores_v / tau)_bk``, averaged over the
    v's and then over the i's. Computed in fp32 with ``log_softmax`` (log-sum-exp form).
    """
    if len(codes) != len(assign) or len(scores) < 2:
        raise ValueError("swav_loss: need one code per assigned crop and at least two crops")
    log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    total = 0.0
    for q, i in zip(codes, assign):
        q = q.detach().float()
        others = [v for v in range(len(scores)) if v != i]
        total = total + sum(-(q * log_p[v]).sum(dim=1).mean() for v in others) / len(others)
    return total / len(assign)
