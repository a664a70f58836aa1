"""LoGo's losses as pure functions of tensors (the critic is passed in as a callable).

[0] Zhang, Qiu, Ke, Suesstrunk & Salzmann, Leverage Your Local and Global Representations: A New
    Self-Supervised Learning Strategy (LoGo), CVPR 2022. Eq. 3 (L_gg), Eq. 4 (L_lg), Eq. 5 (L_ll),
    Eq. 6 (the learned affinity f_theta_d and its objective Omega), Eq. 9 (the total).
[1] Official code ztt1024/LoGo-SSL ``trainers.py`` (MoCo-LoGo): the critic ("regressor") is trained
    with the Jensen-Shannon form of Deep InfoMax [2] rather than the linear Eq. 6.
[2] Hjelm et al., Learning deep representations by mutual information estimation and maximization
    (Deep InfoMax), ICLR 2019, Eq. 4 (``mi_jsd = E_P[-sp(-T)] - E_PxP~[sp(T)]``).

Critics are called on the concatenation ``[z_a, z_b]`` (B x 2D) and return raw scores T (B x 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from tagless.losses.contrastive import info_nce, negative_cosine

Critic = Callable[[torch.Tensor], torch.Tensor]


def _score(critic: Critic, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return critic(torch.cat([a, b], dim=1)).float().reshape(-1)


def derangement(n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random permutation of range(n) without fixed points (n >= 2): a random permutation
    ``s`` followed by a cyclic shift by c in 1..n-1, ``d[s[i]] = s[(i + c) % n]``.

    Generalises the official code's batch reversal ``flip(0)`` [1] (which fixes the middle
    sample when n is odd). Drawn on the device: no host sync."""
    s = torch.randperm(n, generator=generator, device=device)
    c = torch.randint(1, n, (1,), generator=generator, device=device)
    d = torch.empty_like(s)
    d[s] = s[(torch.arange(n, device=device) + c) % n]
    return d


def critic_objective(critic: Critic, a: torch.Tensor, b: torch.Tensor, noise_a: torch.Tensor,
                     noise_b: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The critic's loss, -Omega of [0] Eq. 6 in the JSD form of [1, 2] (minimised by the critic).

    ``mean(0.5 sp(-T([a+Va, b+Vb])) + 0.5 sp(-T([b+Va, a+Vb])) + 0.5 sp(T([a, b[perm]])) +
    0.5 sp(T([b, a[perm]])))`` with sp = softplus. ``a``, ``b`` (B x D): the normalised
    embeddings of two local crops of each image (a positive pair per row); ``noise_a``,
    ``noise_b``: noise added to the first and second slot of the positives only (official:
    N(0, (0.3 / sqrt(D))^2), the same draws for both orders); ``perm``: a derangement, so
    ``[a, b[perm]]`` pairs crops of different images. The inputs are detached here: no
    gradient reaches the encoder. Each term is a separate critic call, as in [1] (its
    BatchNorm sees positives and negatives apart).
    """
    a, b = a.detach().float(), b.detach().float()
    pos = F.softplus(-_score(critic, a + noise_a, b + noise_b)) + F.softplus(-_score(critic, b + noise_a, a + noise_b))
    neg = F.softplus(_score(critic, a, b[perm])) + F.softplus(_score(critic, b, a[perm]))
    return 0.5 * (pos + neg).mean()


def local_local(critic: Critic, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L_ll of [0] Eq. 5 for one pair of local crops, as in [1]: ``mean(sp(T([a, b])))``.

    The critic's "negative" head on the positive pair: minimising it makes the encoder's two
    local crops of an image look like crops of different images. Gradient flows into ``a`` and
    ``b``; pass a critic with detached parameters so none reaches the critic."""
    return F.softplus(_score(critic, a.float(), b.float())).mean()


def moco_logo_loss(q_globals: Sequence[torch.Tensor], q_locals: Sequence[torch.Tensor],
                   k_globals: Sequence[torch.Tensor], negatives: torch.Tensor,
                   temperature: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MoCo-LoGo's contrastive loss, [0] Eq. 3 + Eq. 4 with l_s = InfoNCE (Eq. 1), as in [1]:

    ``[NCE(q_g1, k_g2) + NCE(q_g2, k_g1) + sum_l (NCE(q_l, k_g1) + NCE(q_l, k_g2))] / (2 + 2 n_l)``
    with one bank of ``negatives`` for every term; the keys (momentum encoder) are the
    constant global targets. Returns (loss, L_gg, L_lg), L_gg and L_lg as means of their terms.
    ``temperature``: MoCo-v2's 0.2 (the official LoGo code uses 0.07)."""
    (q1, q2), (k1, k2) = q_globals, k_globals
    gg = [info_nce(q1, k2, negatives, temperature), info_nce(q2, k1, negatives, temperature)]
    lg = [info_nce(q, k, negatives, temperature) for q in q_locals for k in (k1, k2)]
    loss = (sum(gg) + sum(lg)) / (len(gg) + len(lg))
    return loss, sum(gg) / len(gg), sum(lg) / len(lg)


def simsiam_logo_loss(p_globals: Sequence[torch.Tensor], z_globals: Sequence[torch.Tensor],
                      p_locals: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimSiam-LoGo's L_gg + L_lg, [0] Eq. 3 + Eq. 4 with l_s = D (Eq. 2, SimSiam's negative cosine):

    ``L_gg = (D(p_g1, sg(z_g2)) + D(p_g2, sg(z_g1))) / 2``, ``L_lg = mean_{l, g} D(p_l, sg(z_g))``.
    NOTE: Eq. 4 sums over the local crops and both globals; the mean keeps L_lg on L_gg's scale
    whatever the number of local crops. Returns (L_gg + L_lg, L_gg, L_lg)."""
    (p1, p2), (z1, z2) = p_globals, z_globals
    gg = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
    lg = torch.stack([negative_cosine(p, z) for p in p_locals for z in z_globals]).mean()
    return gg + lg, gg, lg


def moco_all_pairs_loss(queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor], negatives: torch.Tensor,
                        temperature: float = 0.2) -> torch.Tensor:
    """The multi-crop baseline of [0] (supp. Sec. 2, Tables 2-4, "MoCo (4-crop)"): every crop is
    a positive of every other, ``mean_{i != j} NCE(q_i, k_j)`` over the crops' queries and keys
    (local crops are targets too, unlike Eq. 4), one bank of ``negatives``."""
    terms = [info_nce(q, k, negatives, temperature) for i, q in enumerate(queries)
             for j, k in enumerate(keys) if i != j]
    return sum(terms) / len(terms)


def simsiam_all_pairs_loss(predictions: Sequence[torch.Tensor], projections: Sequence[torch.Tensor]) -> torch.Tensor:
    """"SimSiam (4-crop)" of [0] (supp. Tables 2-3): ``mean_{i != j} D(p_i, sg(z_j))`` over all crops."""
    terms = [negative_cosine(p, z) for i, p in enumerate(predictions) for j, z in enumerate(projections) if i != j]
    return torch.stack(terms).mean()
