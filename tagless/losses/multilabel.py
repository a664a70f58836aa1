"""Multi-label losses for full and partial labels, as pure functions of tensors.

[0] Paper 001: Kobayashi, Two-way Multi-Label Loss, CVPR 2023 (and its supplement).
[1] Ridnik, Ben-Baruch et al., Asymmetric Loss for Multi-Label Classification (ASL), ICCV 2021.
[2] Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.
[3] Zhang et al., Simple and Robust Loss Design for Multi-Label Learning with Missing Labels
    (Hill, SPLC), arXiv 2112.07368.
[4] Gong et al., Deep Convolutional Ranking for Multilabel Image Annotation (WARP), arXiv 1312.4894.
[5] Cevikalp et al., Semi-Supervised Robust Deep Neural Networks for Multi-Label
    Classification (RML), CVPRW 2019.
Exact forms and defaults of the official codes: ``shared/notes/multilabel.md`` §1, §2, §5.

Every loss is ``fn(logits B x C, targets B x C, **kwargs) -> scalar``. Targets: 1 positive,
0 negative, -1 unknown (any value < 0). ``unknown="negative"`` treats unknown entries as
negatives, ``unknown="ignore"`` drops them (no loss, not counted). Defaults: "ignore" for the
full-label baselines (bce, two-way family, warp, rml: on partial labels they are the
"observed labels only" baselines), "negative" for focal, asl, hill and splc (paper 003
Tab. B.1 treats missing labels as negatives). Computation is in fp32, in logsigmoid /
log-sum-exp / softplus forms.

Reduction. Per-entry losses (bce, focal, asl, hill, splc) return the sum over the counted
entries divided by their number (B x C when nothing is ignored: Cole's normalisation, so one
learning rate serves every loss); focal, asl, hill and splc also offer ``reduction="sum"``
(their official codes sum). The two-way family uses the paper's means: sample-wise = mean
over rows with >= 1 positive, class-wise = mean over columns with >= 1 positive, two-way =
their sum (Eq. 17). WARP and RML: see their docstrings. A batch with nothing to score returns
an exact zero that is still part of the graph (finite, zero gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tagless.errors import TaglessError

UNKNOWN_MODES = ("negative", "ignore")
REDUCTIONS = ("mean", "sum")
_FILL = -1e30  # stands for log(0) in masked log-sum-exps: below any fp32 logit, finite gradients


def _check(unknown: str, reduction: str = "mean") -> None:
    if unknown not in UNKNOWN_MODES:
        raise TaglessError(f"unknown: expected one of {', '.join(UNKNOWN_MODES)}, got {unknown!r}")
    if reduction not in REDUCTIONS:
        raise TaglessError(f"reduction: expected one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def label_masks(targets: torch.Tensor, unknown: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) bool masks of 1/0/-1 ``targets``; unknowns join the negatives
    when ``unknown == "negative"`` and neither mask otherwise."""
    _check(unknown)
    pos, neg = targets > 0, targets == 0
    if unknown == "negative":
        neg = neg | (targets < 0)
    return pos, neg


def reduce_entries(per_entry: torch.Tensor, counted: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Sum of ``per_entry`` over the ``counted`` entries, divided by their number for "mean"
    (at least 1, so an empty batch gives an exact, differentiable zero)."""
    total = torch.where(counted, per_entry, torch.zeros_like(per_entry)).sum()
    if reduction == "sum":
        return total
    return total / counted.sum().clamp(min=1).to(total.dtype)


def bce(logits: torch.Tensor, targets: torch.Tensor, *, unknown: str = "ignore") -> torch.Tensor:
    """Binary cross-entropy, ``-[y log p + (1 - y) log(1 - p)]`` per entry, logsigmoid form."""
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    per = -torch.where(pos, F.logsigmoid(x), F.logsigmoid(-x))
    return reduce_entries(per, pos | neg)


def focal(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0, unknown: str = "negative",
          reduction: str = "mean") -> torch.Tensor:
    """Focal loss [2] without alpha: ``-(1-p)^g log p`` on positives, ``-p^g log(1-p)`` on
    negatives (g = 2, the robust-loss repo's "Focal" baseline); the weight is differentiated."""
    _check(unknown, reduction)
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    per = torch.where(pos, -torch.sigmoid(-x).pow(gamma) * F.logsigmoid(x),
                      -torch.sigmoid(x).pow(gamma) * F.logsigmoid(-x))
    return reduce_entries(per, pos | neg, reduction)


def asl(logits: torch.Tensor, targets: torch.Tensor, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0,
        clip: float = 0.05, eps: float = 1e-8, unknown: str = "negative", reduction: str = "mean") -> torch.Tensor:
    """Asymmetric loss [1] with the training script's defaults (g- = 4, g+ = 0, m = 0.05).

    Positives: ``-(1-p)^g+ log p``; negatives: ``-p_m^g- log(1 - p_m)`` with the shifted
    probability ``p_m = max(p - m, 0)``. Both logs are clamped at ``eps`` as in the official
    code (same values, computed as logsigmoid / ``log(min(1 - p + m, 1))``). The focusing
    weights are constants in backprop (``.detach()``), like the official default
    ``disable_torch_grad_focal_loss=True``; the global grad mode is never touched.
    """
    _check(unknown, reduction)
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    p = torch.sigmoid(x)
    log_eps = math.log(eps)
    log_pos = F.logsigmoid(x).clamp(min=log_eps)
    if clip > 0:
        one_minus_pm = (torch.sigmoid(-x) + clip).clamp(max=1.0)  # 1 - p_m, 1 - p computed without cancellation
        log_neg = one_minus_pm.clamp(min=eps).log()
        p_m = (p - clip).clamp(min=0.0)
    else:
        log_neg = F.logsigmoid(-x).clamp(min=log_eps)
        p_m = p
    w_pos = torch.sigmoid(-x).pow(gamma_pos).detach()
    w_neg = p_m.pow(gamma_neg).detach()
    per = torch.where(pos, -w_pos * log_pos, -w_neg * log_neg)
    return reduce_entries(per, pos | neg, reduction)


# ---- two-way family [0] ---------------------------------------------------------------------

def masked_logsumexp(z: torch.Tensor, member: torch.Tensor, dim: int) -> torch.Tensor:
    """``log sum_{member} exp(z)`` along ``dim``; non-members are exactly left out (they are
    replaced by a finite -1e30, not the official -100 that leaks for logits below -100 T).
    A set without members gives about -1e30 (finite, zero gradient)."""
    return torch.logsumexp(torch.where(member, z, torch.full_like(z, _FILL)), dim=dim)


def _two_way_terms(x: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, dim: int, tp: float, tn: float,
                   margin: float = 0.0) -> torch.Tensor:
    """Mean over the rows (dim=1) or columns (dim=0) with >= 1 positive of [0] supp. Eq. (iii):
    ``softplus(Tn LSE_n(x_n / Tn) + Tp LSE_p(-x_p / Tp) + margin)``. A set without negatives
    gives exactly 0 and still counts in the mean (the official code's ~0 with -100 masking)."""
    hard_neg = tn * masked_logsumexp(x / tn, neg, dim)
    hard_pos = tp * masked_logsumexp(-x / tp, pos, dim)
    has_pos, has_neg = pos.any(dim), neg.any(dim)
    per = F.softplus(hard_neg + hard_pos + margin)
    per = torch.where(has_pos & has_neg, per, torch.zeros_like(per))
    return per.sum() / has_pos.sum().clamp(min=1).to(per.dtype)


def sample_wise(logits: torch.Tensor, targets: torch.Tensor, *, tp: float = 4.0, tn: float = 1.0,
                unknown: str = "ignore") -> torch.Tensor:
    """[0] Eq. 15: mean over images with >= 1 positive of l(P_i, N_i), the classes ranked
    within each image; temperatures T_P = 4, T_N = 1 (official defaults)."""
    pos, neg = label_masks(targets, unknown)
    return _two_way_terms(logits.float(), pos, neg, 1, tp, tn)


def class_wise(logits: torch.Tensor, targets: torch.Tensor, *, tp: float = 4.0, tn: float = 1.0,
               unknown: str = "ignore") -> torch.Tensor:
    """[0] class-wise term of Eq. 17: mean over classes with >= 1 positive in the batch of
    l(P^c, N^c), the images of the batch ranked within each class; T_P = 4, T_N = 1."""
    pos, neg = label_masks(targets, unknown)
    return _two_way_terms(logits.float(), pos, neg, 0, tp, tn)


def two_way(logits: torch.Tensor, targets: torch.Tensor, *, tp: float = 4.0, tn: float = 1.0,
            unknown: str = "ignore") -> torch.Tensor:
    """Two-way loss, [0] Eq. 17: class-wise + sample-wise term, equal weights, the same
    (T_P, T_N) = (4, 1) in both directions. The class-wise term depends on the batch."""
    pos, neg = label_masks(targets, unknown)
    x = logits.float()
    return _two_way_terms(x, pos, neg, 1, tp, tn) + _two_way_terms(x, pos, neg, 0, tp, tn)


def two_way_margin(logits: torch.Tensor, targets: torch.Tensor, *, margin: float = 1.0,
                   unknown: str = "ignore") -> torch.Tensor:
    """The margin-bias variant [0] compares against (supp. §A.1, main Tab. 2; the Circle-loss
    margin): supp. Eq. (iii) with T_P = T_N = 1 and eps = eps_N - eps_P = ``margin``,
    ``softplus(LSE_n(x_n) + LSE_p(-x_p) + margin)``, used in both directions as Eq. 17.
    The paper's margin value is not retrievable here; 1.0 (one logit unit) is our default."""
    pos, neg = label_masks(targets, unknown)
    x = logits.float()
    return (_two_way_terms(x, pos, neg, 1, 1.0, 1.0, margin)
            + _two_way_terms(x, pos, neg, 0, 1.0, 1.0, margin))


# ---- ranking losses compared in [0] supp. Tab. B --------------------------------------------

def _pair_masks(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """B x C(pos) x C(neg) bool: the (positive p, negative n) pairs of each row."""
    return pos[:, :, None] & neg[:, None, :]


def warp(logits: torch.Tensor, targets: torch.Tensor, *, margin: float = 1.0,
         unknown: str = "ignore") -> torch.Tensor:
    """WARP [4], deterministic: each positive p of a row pays ``L(v_p) / v_p x
    sum_n max(0, margin - x_p + x_n)`` over the row's negatives, where v_p is the exact number
    of margin-violating negatives and ``L(v) = sum_{j<=v} 1/j`` the rank weight (0 for v = 0).
    This is the expectation of WARP's sampled single pair (a violator drawn uniformly, rank
    estimated from the violation count instead of from the number of draws). The weight is a
    constant in backprop. Normalisation: sum over the row's positives, mean over the rows
    with >= 1 positive (as the sample-wise two-way loss).
    """
    pos, neg = label_masks(targets, unknown)
    x = logits.float()
    hinge = (margin - x[:, :, None] + x[:, None, :]).clamp(min=0)  # [b, p, n]
    pairs = _pair_masks(pos, neg)
    hinge = torch.where(pairs, hinge, torch.zeros_like(hinge))
    violations = (hinge > 0).sum(2).to(x.dtype)  # v_p per (row, class)
    rank_weight = torch.special.digamma(violations + 1) + 0.5772156649015329  # harmonic number H_v
    weight = (rank_weight / violations.clamp(min=1)).detach()
    per_row = (weight * hinge.sum(2)).sum(1)
    has_pos = pos.any(1)
    return per_row.sum() / has_pos.sum().clamp(min=1).to(x.dtype)


def rml(logits: torch.Tensor, targets: torch.Tensor, *, ramp_cap: float = 2.0, class_weight: float = 1.0,
        unknown: str = "ignore") -> torch.Tensor:
    """Robust multi-label ranking loss after Cevikalp et al. [5] (the "RML" of [0] supp.
    Tab. B: a ranking loss plus a per-class term "resembling BCE", with the robust ramp loss
    in place of the hinge). The exact form of [5] is not retrievable here; this is our
    well-defined reading of it, with the ramp ``R(z) = min(max(0, 1 - z), ramp_cap)`` (a hinge
    at margin 1 capped at ``ramp_cap``; 2 is the usual s = -1 ramp, our choice):

      ranking = mean over rows with >= 1 (positive, negative) pair of the row's mean over
                pairs of ``R(x_p - x_n)``;
      class   = mean over counted entries of ``R(y x)``, y = +1 positive / -1 negative;
      loss    = ranking + class_weight x class.
    """
    pos, neg = label_masks(targets, unknown)
    x = logits.float()
    pairs = _pair_masks(pos, neg)
    margins = x[:, :, None] - x[:, None, :]
    ramp = (1 - margins).clamp(min=0, max=ramp_cap)
    n_pairs = pairs.sum((1, 2)).to(x.dtype)
    per_row = torch.where(pairs, ramp, torch.zeros_like(ramp)).sum((1, 2)) / n_pairs.clamp(min=1)
    ranking = per_row.sum() / (n_pairs > 0).sum().clamp(min=1).to(x.dtype)
    signed = torch.where(pos, x, -x)
    classwise = reduce_entries((1 - signed).clamp(min=0, max=ramp_cap), pos | neg)
    return ranking + class_weight * classwise


# ---- robust losses for missing labels [3] ---------------------------------------------------

def hill(logits: torch.Tensor, targets: torch.Tensor, *, lamb: float = 1.5, margin: float = 1.0,
         gamma: float = 2.0, unknown: str = "negative", reduction: str = "mean") -> torch.Tensor:
    """Hill loss [3] (official ``Hill``): positives get the focal-margin loss
    ``-(1 - p_m)^g log p_m`` with ``p_m = sigmoid(x - margin)`` (weight differentiated);
    negatives get the Hill loss ``(lamb - p) p^2``, p = sigmoid(x) (no margin)."""
    _check(unknown, reduction)
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    xm = x - margin
    loss_pos = -torch.sigmoid(-xm).pow(gamma) * F.logsigmoid(xm)
    p = torch.sigmoid(x)
    loss_neg = (lamb - p) * p.pow(2)
    return reduce_entries(torch.where(pos, loss_pos, loss_neg), pos | neg, reduction)


def splc(logits: torch.Tensor, targets: torch.Tensor, *, epoch: int = 0, tau: float = 0.6,
         change_epoch: int = 1, margin: float = 1.0, gamma: float = 2.0, unknown: str = "negative",
         reduction: str = "mean") -> torch.Tensor:
    """Focal margin + SPLC [3] (official ``SPLC``). The margin is subtracted from the
    logits of observed positives only; from ``epoch >= change_epoch`` (0-based) every unknown
    entry with ``sigmoid(x) > tau`` becomes a pseudo-positive (un-margined logit; observed
    negatives are never flipped, and with ``unknown="ignore"`` pseudo-positives are the only
    unknown entries that count). Then focal loss, gamma = 2, on everything: ``-(1-p)^g log p``
    on (pseudo-)positives, ``-p^g log(1 - p)`` on negatives, weight differentiated."""
    _check(unknown, reduction)
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    x = torch.where(pos, x - margin, x)
    if epoch >= change_epoch:
        pseudo = (targets < 0) & (torch.sigmoid(x) > tau)
        pos, neg = pos | pseudo, neg & ~pseudo
    per = torch.where(pos, -torch.sigmoid(-x).pow(gamma) * F.logsigmoid(x),
                      -torch.sigmoid(x).pow(gamma) * F.logsigmoid(-x))
    return reduce_entries(per, pos | neg, reduction)
