"""Single-positive multi-label losses (and their partial-label use), as pure functions.

[0] Cole et al., Multi-Label Learning from Single Positive Labels, CVPR 2021 (official code
    ``losses.py``: AN, AN-LS, WAN, EPR, ROLE).
[1] Paper 003: Verelst et al., Spatial Consistency Loss for Training Multi-Label Classifiers
    from Single-Label Annotations, WACV 2023 (EN Eq. 8, EMA scores Eq. 4, CL, SCL).
Exact forms: ``shared/notes/multilabel.md`` §3.1-3.2 and §4.2 (the EN/CL/SCL details that no
readable source fixes are marked there as reconstructions; ours are configurable).

Signature: ``fn(logits B x C, targets B x C of 1/0/-1, **kwargs) -> scalar``, p = sigmoid(x),
computed in fp32 with logsigmoid (Cole's code uses ``-log(p + 1e-5)``; we use the exact form).
Normalisation (Cole's): every per-entry loss is summed and divided by the number of counted
entries, B x C with the default ``unknown="negative"`` (entries that get no loss, such as EN's
unselected unknowns or EPR's unknowns, still count); regularisers are added unnormalised.
``unknown="ignore"`` removes the unknown entries' per-entry terms and their count.
Observed negatives (0), absent from Cole's single-positive data, always get ``-log(1 - p)``
(with the smoothed target in AN-LS, weight 1 in WAN and, for ROLE, on both p and q).

State that the training method owns is passed in: EPR/ROLE ``expected_positives`` (k), ROLE
``label_logits`` (the learnable estimates of these images), EN ``negatives`` (from
:func:`expected_negatives` on the EMA scores), CL ``ema_scores``, SCL ``cam_logits`` and
``heatmap_target``. ``None`` state means the warm-up: the term falls back to AN or is skipped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tagless.errors import TaglessError
from tagless.losses.multilabel import label_masks, reduce_entries

DISTANCES = ("l1", "l2", "jsd")
SELECTIONS = ("image", "global")


def _bce_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(-log p, -log(1 - p)) of logits ``x``."""
    return -F.logsigmoid(x), -F.logsigmoid(-x)


def expected_positive_regularizer(probs: torch.Tensor, expected_positives: float) -> torch.Tensor:
    """EPR's R(p) = (mean over the batch of sum_c p_ic - k)^2 / C^2 (Cole's code, norm '2')."""
    c = probs.shape[1]
    return (probs.sum(1).mean() - expected_positives).pow(2) / (c * c)


def an(logits: torch.Tensor, targets: torch.Tensor, *, unknown: str = "negative") -> torch.Tensor:
    """Assume negative [0]: ``-log p`` on the observed positive, ``-log(1 - p)`` on every
    unknown (and observed negative) entry; mean over B x C."""
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    lp, ln = _bce_terms(x)
    return reduce_entries(torch.where(pos, lp, ln), pos | neg)


def an_ls(logits: torch.Tensor, targets: torch.Tensor, *, ls_coef: float = 0.1,
          unknown: str = "negative") -> torch.Tensor:
    """AN with label smoothing [0] (ls = 0.1, Cole's asymmetric form): positives have target
    1 - ls, negatives (assumed or observed) target ls: ``(1-ls)(-log p) + ls(-log(1-p))`` and
    ``(1-ls)(-log(1-p)) + ls(-log p)``."""
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    lp, ln = _bce_terms(x)
    per = torch.where(pos, (1 - ls_coef) * lp + ls_coef * ln, (1 - ls_coef) * ln + ls_coef * lp)
    return reduce_entries(per, pos | neg)


def wan(logits: torch.Tensor, targets: torch.Tensor, *, unknown: str = "negative") -> torch.Tensor:
    """Weak assume negative [0]: AN with the unknown entries' ``-log(1 - p)`` weighted by
    1 / (C - 1) (observed negatives keep weight 1)."""
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    lp, ln = _bce_terms(x)
    c = x.shape[1]
    w = torch.where(targets < 0, torch.full_like(x, 1.0 / max(c - 1, 1)), torch.ones_like(x))
    return reduce_entries(torch.where(pos, lp, w * ln), pos | neg)


def epr(logits: torch.Tensor, targets: torch.Tensor, *, expected_positives: float,
        unknown: str = "negative") -> torch.Tensor:
    """Expected positive regularisation [0]: ``-log p`` on observed positives (no term on
    unknown entries; they still count in the B x C mean) plus
    ``(mean_i sum_c p_ic - k)^2 / C^2`` with k = ``expected_positives``."""
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    lp, ln = _bce_terms(x)
    observed_neg = targets == 0
    per = torch.where(pos, lp, torch.where(observed_neg, ln, torch.zeros_like(ln)))
    return reduce_entries(per, pos | neg) + expected_positive_regularizer(torch.sigmoid(x), expected_positives)


def role(logits: torch.Tensor, targets: torch.Tensor, *, label_logits: torch.Tensor, expected_positives: float,
         unknown: str = "negative") -> torch.Tensor:
    """ROLE, online label estimation [0]: with p = sigmoid(logits), q = sigmoid(label_logits)
    (the learnable label estimates of these images),
    ``0.5 (pos_f + pos_g) + 0.5 (cross_f + cross_g)`` per entry (mean over B x C)
    ``+ 0.5 (R(p) + R(q))``, where pos_f / pos_g = -log p / -log q on observed positives,
    cross_f = BCE(p, target q.detach()) and cross_g = BCE(q, target p.detach()) on every
    counted entry, and R is EPR's regulariser. Each side learns only from the other's
    detached values, so the classifier and the estimator are trained jointly."""
    x, th = logits.float(), label_logits.float()
    pos, neg = label_masks(targets, unknown)
    p, q = torch.sigmoid(x), torch.sigmoid(th)
    lp_f, ln_f = _bce_terms(x)
    lp_g, ln_g = _bce_terms(th)
    observed_neg = targets == 0
    zero = torch.zeros_like(x)
    anchor = torch.where(pos, lp_f + lp_g, torch.where(observed_neg, ln_f + ln_g, zero))
    q_t, p_t = q.detach(), p.detach()
    cross = (q_t * lp_f + (1 - q_t) * ln_f) + (p_t * lp_g + (1 - p_t) * ln_g)
    per = 0.5 * anchor + 0.5 * cross
    reg = 0.5 * (expected_positive_regularizer(p, expected_positives)
                 + expected_positive_regularizer(q, expected_positives))
    return reduce_entries(per, pos | neg) + reg


# ---- EN, CL, SCL [1] ------------------------------------------------------------------------

def _round_half_up(v: float) -> int:
    return math.floor(v + 0.5)


def expected_negatives(ema_scores: torch.Tensor, targets: torch.Tensor, expected_positives: float,
                       selection: str = "image") -> torch.Tensor:
    """EN's set of expected negatives [1] Eq. 8 (selection reconstructed, notes §4.2 item 3):
    every unknown entry except the ~(K - 1) highest-scoring ones per image, K =
    ``expected_positives`` and scores the per-image EMA (Eq. 4).

    ``selection="image"``: leave out the round(K - 1) (half up) top-scoring unknown classes of
    each row. ``"global"``: leave out the round((K - 1) N) top-scoring unknown (n, c) pairs
    over the N given rows (a threshold on the scores; fractional K is honoured on average).
    Observed entries are never selected (observed negatives are always negatives in the loss);
    K - 1 <= 0 leaves nothing out. Returns a bool N x C mask. Ties break by ``topk`` order.
    """
    if selection not in SELECTIONS:
        raise TaglessError(f"selection: expected one of {', '.join(SELECTIONS)}, got {selection!r}")
    unknown = targets < 0
    scores = torch.where(unknown, ema_scores.float(), torch.full_like(ema_scores, float("-inf"), dtype=torch.float))
    n, c = scores.shape
    excluded = torch.zeros_like(unknown)
    if selection == "image":
        k = min(_round_half_up(expected_positives - 1), c)
        if k > 0:
            idx = scores.topk(k, dim=1).indices
            excluded = excluded.scatter(1, idx, True)
    else:
        k = min(_round_half_up((expected_positives - 1) * n), n * c)
        if k > 0:
            idx = scores.reshape(-1).topk(k).indices
            excluded = excluded.reshape(-1).scatter(0, idx, True).reshape(n, c)
    return unknown & ~excluded


def consistency(p: torch.Tensor, q: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """Mean over all elements of an elementwise distance between probabilities ``p`` and
    ``q`` (used by CL and SCL [1] supp. §E): "l1" ``|p - q|``, "l2" ``(p - q)^2``, "jsd" the
    Jensen-Shannon divergence (natural log) of Bernoulli(p) and Bernoulli(q), probabilities
    clamped to [1e-6, 1 - 1e-6]. Gradients flow into both arguments; detach the target."""
    if distance not in DISTANCES:
        raise TaglessError(f"distance: expected one of {', '.join(DISTANCES)}, got {distance!r}")
    p, q = p.float(), q.float()
    if distance == "l1":
        return (p - q).abs().mean()
    if distance == "l2":
        return (p - q).pow(2).mean()
    p, q = p.clamp(1e-6, 1 - 1e-6), q.clamp(1e-6, 1 - 1e-6)
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        return a * (a / m).log() + (1 - a) * ((1 - a) / (1 - m)).log()

    return (0.5 * (kl(p) + kl(q))).mean()


def spatial_consistency(cam_logits: torch.Tensor, heatmap_target: torch.Tensor, distance: str = "l2") -> torch.Tensor:
    """SCL [1]: ``distance(sigmoid(cam_logits), heatmap_target)`` averaged over positions,
    classes and batch; ``cam_logits`` B x C x h x w, target in [0, 1] of the same shape
    (the stored running heatmaps sampled through the view's crop, detached here)."""
    return consistency(torch.sigmoid(cam_logits.float()), heatmap_target.detach().float(), distance)


def en(logits: torch.Tensor, targets: torch.Tensor, *, negatives: torch.Tensor | None = None,
       unknown: str = "negative") -> torch.Tensor:
    """Expected negative loss [1] Eq. 8: ``-log p`` on observed positives, ``-log(1 - p)`` on
    the unknown entries in ``negatives`` (bool B x C) and on observed negatives, nothing on the
    other unknown entries; mean over B x C. ``negatives=None`` takes every unknown entry as a
    negative (= AN, the warm-up)."""
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    lp, ln = _bce_terms(x)
    chosen = neg if negatives is None else (targets == 0) | (neg & negatives.bool())
    per = torch.where(pos, lp, torch.where(chosen, ln, torch.zeros_like(ln)))
    return reduce_entries(per, pos | neg)


def en_cl(logits: torch.Tensor, targets: torch.Tensor, *, negatives: torch.Tensor | None = None,
          ema_scores: torch.Tensor | None = None, cl_weight: float = 1.0, distance: str = "l2",
          unknown: str = "negative") -> torch.Tensor:
    """EN + CL [1]: ``en + cl_weight x consistency(sigmoid(logits), ema_scores)``, the per-image
    EMA scores (Eq. 4) as a fixed target. The CL term is skipped when ``ema_scores`` is None
    (the warm-up). The paper's default distance and weight are not retrievable; l2 and 1.0
    are our defaults."""
    loss = en(logits, targets, negatives=negatives, unknown=unknown)
    if ema_scores is not None:
        loss = loss + cl_weight * consistency(torch.sigmoid(logits.float()), ema_scores.detach(), distance)
    return loss


def en_scl(logits: torch.Tensor, targets: torch.Tensor, *, negatives: torch.Tensor | None = None,
           cam_logits: torch.Tensor | None = None, heatmap_target: torch.Tensor | None = None,
           scl_weight: float = 1.0, distance: str = "l2", unknown: str = "negative") -> torch.Tensor:
    """EN + SCL [1]: ``en + scl_weight x spatial_consistency(cam_logits, heatmap_target)``; the
    SCL term is skipped when either is None (the warm-up). Weight and distance: our defaults
    (1.0, l2), the paper's are not retrievable."""
    loss = en(logits, targets, negatives=negatives, unknown=unknown)
    if cam_logits is not None and heatmap_target is not None:
        loss = loss + scl_weight * spatial_consistency(cam_logits, heatmap_target, distance)
    return loss
