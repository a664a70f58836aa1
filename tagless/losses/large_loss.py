"""The large-loss baselines of weakly supervised multi-label learning, as pure functions.

[0] Kim, Kim, Akata, Lee, Large Loss Matters in Weakly Supervised Multi-Label
    Classification, CVPR 2022 (official code ``snucml/LargeLossMatters``: ``losses.py``
    ``compute_batch_loss``, ``config.py``, ``train.py``). The paper is not in
    ``shared/papers``; what follows is our reading of its Sec. 3-4 and of the official code.

Unobserved labels are assumed negative (AN) and trained with BCE, ``l_i = -log(1 - p_i)``.
The paper then weights each entry's loss, ``L = 1/|D'| sum_x 1/C sum_i lambda_i l_i`` (its
weighted-loss equation), and from the second epoch on treats the entries of the batch with the
largest loss among the *unobserved* labels, the ``R(t)`` threshold of the paper: the top
``delta(t)`` fraction of the batch's unobserved entries (``rate_of="unobserved"``; the official
code takes ``ceil(delta B C)`` entries, a fraction of the whole batch: ``rate_of="batch"``).

- LL-R (reject): ``lambda_i = 0`` on those entries (:func:`ll_r`);
- LL-Ct (correct temporarily): their target becomes 1 for this step, i.e. ``lambda_i l_i =
  -log p_i`` (:func:`ll_ct`);
- LL-Cp (correct permanently): as LL-Ct for this step, and the stored label of that image and
  class becomes 1 for the rest of training (:func:`ll_cp`; the entries are
  :func:`ll_cp_corrections`, which the training method keeps in a buffer).

The rejection rate (:func:`rejection_rate`): ``delta(t) = min(delta_max, delta_rel t)`` with
``t`` the 0-based epoch, so the first epoch is plain AN (the paper: ``(t - 1) delta_rel`` with
1-based epochs; the code: ``clean_rate`` starts at 1 and drops by ``delta_rel`` after each
epoch). Our reading of the defaults: ``--delta_rel`` is given in percent and divided by 100 in
``config.py``; the paper's settings are 0.2 % per epoch for LL-R and LL-Ct and 0.1 % for LL-Cp,
so the fractions here are 0.002 and 0.001. For LL-Cp the official code takes a constant
``delta_rel`` of the batch at every step from the second epoch on (the corrected labels
accumulate instead), our ``schedule="constant"`` default; ``"linear"`` gives it LL-R's
schedule. Neither the paper nor the code caps the rate: ``delta_max`` defaults to 1 (no cap).

Details of ours: entries are ranked by their logits (the AN loss ``softplus(x)`` is strictly
increasing in x, so the order is the loss order without its saturation ties), ties by position
(stable sort); the number taken is ``ceil(delta n)`` (as the official ``math.ceil``) and exactly
that many entries are changed and, for LL-Cp, stored (the official code changes the entries at
or above the k-th loss but stores only those strictly above it). Observed labels, positive or
negative, are never rejected or corrected. Normalisation as Cole's (the official code's):
the sum over entries divided by B x C (``reduction="mean"``; rejected entries still count),
or the plain sum. ``unknown="ignore"`` drops the unobserved entries altogether (BCE on the
observed labels; nothing is left to reject). No host synchronisation: the count stays a tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tagless.errors import TaglessError
from tagless.losses.multilabel import REDUCTIONS, UNKNOWN_MODES, label_masks, reduce_entries

RATE_OF = ("unobserved", "batch")
SCHEDULES = ("linear", "constant")


def rejection_rate(epoch: int, delta_rel: float, delta_max: float = 1.0, schedule: str = "linear") -> float:
    """delta(t) [0]: 0 in the first epoch (``epoch`` 0), then ``min(delta_max, delta_rel t)``
    (``"linear"``, LL-R and LL-Ct) or ``min(delta_max, delta_rel)`` (``"constant"``, the
    official LL-Cp)."""
    if schedule not in SCHEDULES:
        raise TaglessError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if epoch <= 0:
        return 0.0
    return float(min(delta_max, delta_rel * epoch if schedule == "linear" else delta_rel))


def large_loss_entries(logits: torch.Tensor, targets: torch.Tensor, rate: float, *, rate_of: str = "unobserved",
                       unknown: str = "negative") -> torch.Tensor:
    """Bool B x C mask of the unobserved entries with the largest AN loss [0]: the top
    ``ceil(rate n)`` of them, n = the number of unobserved entries of the batch
    (``rate_of="unobserved"``) or B x C (``"batch"``, the official code), never more than there
    are. Ranked by logit, ties by position. Empty for ``rate`` 0 or ``unknown="ignore"``."""
    if rate_of not in RATE_OF:
        raise TaglessError(f"rate_of: expected one of {', '.join(RATE_OF)}, got {rate_of!r}")
    if unknown not in UNKNOWN_MODES:
        raise TaglessError(f"unknown: expected one of {', '.join(UNKNOWN_MODES)}, got {unknown!r}")
    candidates = targets < 0
    if unknown == "ignore" or rate <= 0:
        return torch.zeros_like(candidates)
    x = logits.detach().float().reshape(-1)
    flat = candidates.reshape(-1)
    scores = torch.where(flat, x, torch.full_like(x, float("-inf")))
    order = scores.argsort(descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    n = flat.sum() if rate_of == "unobserved" else torch.tensor(flat.numel(), device=flat.device)
    k = torch.ceil(n.double() * rate - 1e-9)  # 1e-9: 0.4 x 5 is 2, not 3
    return ((rank < k) & flat).reshape(candidates.shape)


def _large_loss(logits: torch.Tensor, targets: torch.Tensor, epoch: int, delta_rel: float, delta_max: float,
                schedule: str, rate_of: str, unknown: str, reduction: str, correct: bool) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise TaglessError(f"reduction: expected one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    x = logits.float()
    pos, neg = label_masks(targets, unknown)
    lp, ln = -F.logsigmoid(x), -F.logsigmoid(-x)
    rate = rejection_rate(epoch, delta_rel, delta_max, schedule)
    large = large_loss_entries(x, targets, rate, rate_of=rate_of, unknown=unknown)
    per = torch.where(pos, lp, ln)
    per = torch.where(large, lp if correct else torch.zeros_like(per), per)
    return reduce_entries(per, pos | neg, reduction)


def _validate(delta_rel: float, delta_max: float) -> None:
    if not (math.isfinite(delta_rel) and 0 <= delta_rel <= 1 and math.isfinite(delta_max) and 0 <= delta_max <= 1):
        raise TaglessError(f"delta_rel and delta_max must lie in [0, 1], got {delta_rel} and {delta_max}")


def ll_r(logits: torch.Tensor, targets: torch.Tensor, *, epoch: int = 0, delta_rel: float = 0.002,
         delta_max: float = 1.0, rate_of: str = "unobserved", unknown: str = "negative",
         reduction: str = "mean") -> torch.Tensor:
    """LL-R [0] (the weighted loss with LL-R's lambda: ``lambda_i = 0`` for an unobserved
    label whose loss exceeds R(t), else 1): AN's BCE, ``-log p`` on positives and
    ``-log(1 - p)`` on observed negatives and unobserved entries, with the loss of the largest
    ``delta(t)`` share of the unobserved entries (:func:`large_loss_entries`, rate
    :func:`rejection_rate`, linear) set to 0; sum / (B x C)."""
    _validate(delta_rel, delta_max)
    return _large_loss(logits, targets, epoch, delta_rel, delta_max, "linear", rate_of, unknown, reduction,
                       correct=False)


def ll_ct(logits: torch.Tensor, targets: torch.Tensor, *, epoch: int = 0, delta_rel: float = 0.002,
          delta_max: float = 1.0, rate_of: str = "unobserved", unknown: str = "negative",
          reduction: str = "mean") -> torch.Tensor:
    """LL-Ct [0] (the weighted loss with LL-Ct's lambda_i = BCE(p_i, 1) / BCE(p_i, 0) on the
    large-loss unobserved entries): as :func:`ll_r`, but those entries get ``-log p`` (target 1
    for this step only) instead of 0."""
    _validate(delta_rel, delta_max)
    return _large_loss(logits, targets, epoch, delta_rel, delta_max, "linear", rate_of, unknown, reduction,
                       correct=True)


def ll_cp_corrections(logits: torch.Tensor, targets: torch.Tensor, *, epoch: int = 0, delta_rel: float = 0.001,
                      delta_max: float = 1.0, schedule: str = "constant", rate_of: str = "unobserved",
                      unknown: str = "negative") -> torch.Tensor:
    """The entries LL-Cp [0] corrects permanently at this step (bool B x C): the large-loss
    unobserved entries at rate ``delta(t)`` of ``schedule``. The training method sets the
    stored label of each to 1 (its ``corrections`` state) after the step."""
    _validate(delta_rel, delta_max)
    rate = rejection_rate(epoch, delta_rel, delta_max, schedule)
    return large_loss_entries(logits, targets, rate, rate_of=rate_of, unknown=unknown)


def ll_cp(logits: torch.Tensor, targets: torch.Tensor, *, epoch: int = 0, delta_rel: float = 0.001,
          delta_max: float = 1.0, schedule: str = "constant", rate_of: str = "unobserved", unknown: str = "negative",
          reduction: str = "mean") -> torch.Tensor:
    """LL-Cp [0] (permanent correction, y_i <- 1 for the large-loss unobserved entries): this
    step's loss is LL-Ct's on the :func:`ll_cp_corrections` entries (``-log p`` there, AN's
    BCE elsewhere). ``targets`` must already hold the earlier steps' corrections as 1s (the
    method's state); the default schedule is the official code's constant rate."""
    _validate(delta_rel, delta_max)
    return _large_loss(logits, targets, epoch, delta_rel, delta_max, schedule, rate_of, unknown, reduction,
                       correct=True)
