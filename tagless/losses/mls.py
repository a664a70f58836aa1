"""MLS losses over a queue of D embeddings with top-k pseudo-labels, as pure functions.

[0] Zhu, Fu & Wu, Multi-Label Self-Supervised Learning with Scene Images (MLS), ICCV 2023
    (main paper Eq. 2 and 9; supplement Sec. B.1, Eq. 10-15).

Shapes: ``query`` B x d (the query embedding z1, L2-normalised here), ``bank`` D x d (the
queue Q_z, used as given: its entries were normalised when enqueued), ``labels`` B x D (1 for
the mined positives, 0 elsewhere), ``valid`` D bool (the filled queue entries; None = all).
Logits are p_i / tau with p_i = q . z_i, in fp32. Each loss is averaged over the valid entries
(D = their count) or the positives, then over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logits(query: torch.Tensor, bank: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.normalize(query.float(), dim=1) @ bank.float().t() / temperature


def _mean_over_valid(per_entry: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(1/D) sum over the valid entries of each row, then the mean over the batch."""
    if valid is None:
        return per_entry.mean()
    w = valid.to(per_entry.dtype)
    return ((per_entry * w).sum(1) / w.sum().clamp(min=1)).mean()


def topk_positives(features: torch.Tensor, bank: torch.Tensor, k: int = 20,
                   valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MLS's label mining ([0] Sec. 3, "global matching"): the k entries of ``bank`` (Q_g,
    D x c) most cosine-similar to each row of ``features`` (the key's backbone feature g2,
    B x c) become positives. Entries outside ``valid`` are never chosen (when fewer than k are
    valid, the remaining picks are invalid ones with similarity -inf; callers skip that case).

    Returns (labels B x D bool, index B x k, similarity B x k), most similar first.
    """
    sim = F.normalize(features.float(), dim=1) @ F.normalize(bank.float(), dim=1).t()
    if valid is not None:
        sim = sim.masked_fill(~valid, float("-inf"))
    top, index = sim.topk(k, dim=1)
    labels = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, index, True)
    return labels, index, top


def mls_bce(query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2,
            valid: torch.Tensor | None = None) -> torch.Tensor:
    """MLS's loss, [0] Eq. 9: ``-1/D sum_i [y_i log sigma(p_i/tau) + (1 - y_i) log(1 - sigma(p_i/tau))]``,
    a binary cross-entropy per queue entry (no softmax: the positives do not compete).
    Softplus form (``binary_cross_entropy_with_logits``)."""
    per = F.binary_cross_entropy_with_logits(_logits(query, bank, temperature), labels.float(), reduction="none")
    return _mean_over_valid(per, valid)


def mls_bce_pos(query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """The "BCE-pos" ablation, [0] supplement Eq. 15: ``-1/D sum_i y_i log sigma(p_i/tau)``,
    Eq. 9 without its negative term; ``-log sigma(x) = softplus(-x)``."""
    per = labels.float() * F.softplus(-_logits(query, bank, temperature))
    return _mean_over_valid(per, valid)


def knn_softmax(query: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, temperature: float = 0.2,
                valid: torch.Tensor | None = None) -> torch.Tensor:
    """The "k-NN softmax" ablation, [0] Eq. 2 = supplement Eq. 10 / 14:
    ``-1/N_pos sum_{i in pos} log exp(q.k+_i/tau) / sum_{k in Q_z} exp(q.k/tau)``, the
    denominator over every valid queue entry (log-sum-exp form); N_pos = the row's positives."""
    logits = _logits(query, bank, temperature)
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = labels.bool()
    per_row = -torch.where(pos, log_p, torch.zeros_like(log_p)).sum(1) / pos.sum(1).clamp(min=1)
    return per_row.mean()


MLS_LOSSES = {"bce": mls_bce, "bce_pos": mls_bce_pos, "knn_softmax": knn_softmax}
