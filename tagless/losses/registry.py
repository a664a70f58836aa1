"""The multi-label loss registry and the ``loss`` config section (a tagged union).

``LOSSES[name]`` is ``fn(logits B x C, targets B x C of 1/0/-1, **kwargs) -> scalar``;
``LOSS_CONFIGS[name]`` its config dataclass, whose fields are the loss's hyper-parameters
with the papers' defaults plus the settings of the state a training method keeps for it.
``cfg.function_kwargs()`` are the fields to pass to the function; ``cfg.needs`` names the
state the method must build and pass itself:

- "expected_positives": ``expected_positives=k`` (the config's value, or the data's
  average number of positives per image when it is 0);
- "label_estimates": ``label_logits`` (ROLE's learnable N x C logits, trained at
  ``label_lr_scale`` x the network lr);
- "ema": the per-image EMA of sigmoid scores (paper 003 Eq. 4, ``ema_momentum``, started as
  ``ema_start`` says; the heatmaps too), from which
  :func:`tagless.losses.single_positive.expected_negatives` gives EN's ``negatives``
  (``selection``) and CL takes ``ema_scores``; both are None during ``warmup_epochs``;
- "heatmaps": per-image, per-class running heatmaps (``heatmap_*``) sampled through the
  view's crop as ``heatmap_target``, with the view's ``cam_logits``;
- "epoch": the 0-based epoch (SPLC, the large-loss rejection rate);
- "corrections": LL-Cp's permanently corrected labels, an N x C bool buffer: the method sets
  those targets to 1 before the loss and adds ``cfg.corrections(logits, targets, epoch)``
  after every step.

``loss: {name: en_scl, scl_weight: 0.5}`` reads as ``EnSclConfig(scl_weight=0.5)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from tagless.config_io import NonNegative, TaggedUnion
from tagless.errors import TaglessError
from tagless.losses.large_loss import RATE_OF, SCHEDULES, ll_cp, ll_cp_corrections, ll_ct, ll_r
from tagless.losses.multilabel import (
    REDUCTIONS,
    UNKNOWN_MODES,
    asl,
    bce,
    class_wise,
    focal,
    hill,
    rml,
    sample_wise,
    splc,
    two_way,
    two_way_margin,
    warp,
)
from tagless.losses.single_positive import (
    DISTANCES,
    SELECTIONS,
    an,
    an_ls,
    en,
    en_cl,
    en_scl,
    epr,
    role,
    wan,
)

LOSSES: dict[str, Callable] = {
    "bce": bce, "focal": focal, "asl": asl, "two_way": two_way, "sample_wise": sample_wise,
    "class_wise": class_wise, "two_way_margin": two_way_margin, "warp": warp, "rml": rml,
    "an": an, "an_ls": an_ls, "wan": wan, "epr": epr, "role": role, "en": en,
    "hill": hill, "splc": splc, "en_cl": en_cl, "en_scl": en_scl, "ll_r": ll_r, "ll_ct": ll_ct, "ll_cp": ll_cp,
}

# keyword arguments that carry the method's state, never taken from the config
STATE_KWARGS = ("expected_positives", "label_logits", "negatives", "ema_scores", "cam_logits", "heatmap_target",
                "epoch")
NEEDS = ("ema", "heatmaps", "label_estimates", "epoch", "expected_positives", "corrections")
HEATMAP_DTYPES = ("uint8", "float16")
EMA_STARTS = ("bias_correction", "first_visit", "restart")


def _require(ok: bool, key: str, expected: str, value) -> None:
    if not ok:
        raise TaglessError(f"loss.{key}: expected {expected}, got {value!r}")


def _finite(v: float) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@dataclass
class LossConfig(TaggedUnion):
    """Base of every loss's config; ``name`` picks the loss (a key of ``LOSSES``)."""

    name: str = "bce"

    kind = "loss"
    needs: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def variants(cls) -> dict[str, type]:
        return dict(LOSS_CONFIGS)

    def function_kwargs(self) -> dict:
        """The fields that are keyword arguments of ``LOSSES[name]`` (state excluded)."""
        params = inspect.signature(LOSSES[self.name]).parameters
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in params and f.name not in STATE_KWARGS}

    def validate(self) -> None:
        _require(self.name in LOSSES, "name", f"one of {', '.join(LOSSES)}", self.name)
        if hasattr(self, "unknown"):
            _require(self.unknown in UNKNOWN_MODES, "unknown", " or ".join(UNKNOWN_MODES), self.unknown)
        if hasattr(self, "reduction"):
            _require(self.reduction in REDUCTIONS, "reduction", " or ".join(REDUCTIONS), self.reduction)
        if hasattr(self, "gamma"):
            _require(_finite(self.gamma) and self.gamma >= 0, "gamma", ">= 0", self.gamma)
        if hasattr(self, "margin"):
            _require(_finite(self.margin), "margin", "a finite number", self.margin)
        if hasattr(self, "expected_positives"):
            _require(_finite(self.expected_positives) and self.expected_positives >= 0, "expected_positives",
                     ">= 0 (0 = from the data)", self.expected_positives)


# ---- full / partial labels ------------------------------------------------------------------

@dataclass
class BceConfig(LossConfig):
    """Binary cross-entropy."""

    name: str = "bce"
    unknown: str = "ignore"  # negative | ignore: what unknown (-1) targets are


@dataclass
class FocalConfig(LossConfig):
    """Focal loss without alpha (the robust-loss repo's baseline)."""

    name: str = "focal"
    gamma: float = 2.0  # focusing exponent
    unknown: str = "negative"  # negative | ignore
    reduction: str = "mean"  # mean (over counted entries) | sum (official)


@dataclass
class AslConfig(LossConfig):
    """Asymmetric loss (ASL training-script defaults)."""

    name: str = "asl"
    gamma_neg: float = 4.0  # focusing exponent on negatives
    gamma_pos: float = 0.0  # focusing exponent on positives
    clip: float = 0.05  # probability margin m of negatives (p_m = max(p - m, 0))
    eps: float = 1e-8  # clamp inside the logs
    unknown: str = "negative"  # negative | ignore
    reduction: str = "mean"  # mean | sum (official)

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.gamma_neg) and self.gamma_neg >= 0, "gamma_neg", ">= 0", self.gamma_neg)
        _require(_finite(self.gamma_pos) and self.gamma_pos >= 0, "gamma_pos", ">= 0", self.gamma_pos)
        _require(_finite(self.clip) and 0 <= self.clip < 1, "clip", "0 <= clip < 1", self.clip)
        _require(_finite(self.eps) and 0 < self.eps < 1, "eps", "0 < eps < 1", self.eps)


@dataclass
class _TemperatureConfig(LossConfig):
    """Shared by the two-way loss and its two terms (paper 001, official defaults)."""

    tp: float = 4.0  # T_P, temperature of the positives' soft-min
    tn: float = 1.0  # T_N, temperature of the negatives' soft-max
    unknown: str = "ignore"  # negative | ignore

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.tp) and self.tp > 0, "tp", "> 0", self.tp)
        _require(_finite(self.tn) and self.tn > 0, "tn", "> 0", self.tn)


@dataclass
class TwoWayConfig(_TemperatureConfig):
    """Two-way multi-label loss (paper 001 Eq. 17)."""

    name: str = "two_way"


@dataclass
class SampleWiseConfig(_TemperatureConfig):
    """Sample-wise term only (paper 001 Eq. 15)."""

    name: str = "sample_wise"


@dataclass
class ClassWiseConfig(_TemperatureConfig):
    """Class-wise term only (paper 001)."""

    name: str = "class_wise"


@dataclass
class TwoWayMarginConfig(LossConfig):
    """Two-way loss with a Circle-style margin instead of the temperature (paper 001 supp. A.1)."""

    name: str = "two_way_margin"
    margin: NonNegative = 1.0  # eps = eps_N - eps_P added inside the softplus (our default; the paper's is unknown)
    unknown: str = "ignore"  # negative | ignore


@dataclass
class WarpConfig(LossConfig):
    """WARP, deterministic rank estimate (paper 001 supp. Tab. B baseline)."""

    name: str = "warp"
    margin: NonNegative = 1.0  # hinge margin between a positive and a negative logit
    unknown: str = "ignore"  # negative | ignore

    def validate(self) -> None:
        super().validate()
        _require(self.margin > 0, "margin", "> 0", self.margin)


@dataclass
class RmlConfig(LossConfig):
    """Robust (ramp) ranking + per-class loss after Cevikalp et al. (paper 001 supp. Tab. B)."""

    name: str = "rml"
    ramp_cap: float = 2.0  # the ramp's maximum (1 - s; s = -1 is our choice)
    class_weight: float = 1.0  # weight of the per-class ramp term
    unknown: str = "ignore"  # negative | ignore

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.ramp_cap) and self.ramp_cap > 0, "ramp_cap", "> 0", self.ramp_cap)
        _require(_finite(self.class_weight) and self.class_weight >= 0, "class_weight", ">= 0", self.class_weight)


@dataclass
class HillConfig(LossConfig):
    """Hill loss (Zhang et al., official defaults)."""

    name: str = "hill"
    lamb: float = 1.5  # lambda of the Hill negative term (lambda - p) p^2
    margin: NonNegative = 1.0  # logit margin of the positives' focal-margin term
    gamma: float = 2.0  # focusing exponent of the positives
    unknown: str = "negative"  # negative | ignore
    reduction: str = "mean"  # mean | sum (official)

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.lamb) and self.lamb > 0, "lamb", "> 0", self.lamb)


@dataclass
class SplcConfig(LossConfig):
    """Focal margin + self-paced loss correction (Zhang et al., official defaults)."""

    name: str = "splc"
    tau: float = 0.6  # pseudo-positive threshold on sigmoid scores (0.65 for COCO 75% labels)
    change_epoch: int = 1  # first (0-based) epoch with pseudo-positives
    margin: NonNegative = 1.0  # logit margin of the observed positives
    gamma: float = 2.0  # focusing exponent
    unknown: str = "negative"  # negative | ignore
    reduction: str = "mean"  # mean | sum (official)

    needs: ClassVar[tuple[str, ...]] = ("epoch",)

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.tau) and 0 < self.tau < 1, "tau", "0 < tau < 1", self.tau)
        _require(self.change_epoch >= 0, "change_epoch", ">= 0", self.change_epoch)


# ---- single positive labels -----------------------------------------------------------------

@dataclass
class AnConfig(LossConfig):
    """Assume negative (Cole et al.)."""

    name: str = "an"
    unknown: str = "negative"  # negative | ignore


@dataclass
class AnLsConfig(LossConfig):
    """Assume negative with label smoothing (Cole et al.)."""

    name: str = "an_ls"
    ls_coef: float = 0.1  # label smoothing: positives' target 1 - ls, negatives' ls
    unknown: str = "negative"  # negative | ignore

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.ls_coef) and 0 <= self.ls_coef < 0.5, "ls_coef", "0 <= ls_coef < 0.5", self.ls_coef)


@dataclass
class WanConfig(LossConfig):
    """Weak assume negative, 1/(C-1) on unknown entries (Cole et al.)."""

    name: str = "wan"
    unknown: str = "negative"  # negative | ignore


@dataclass
class EprConfig(LossConfig):
    """Expected positive regularisation (Cole et al.)."""

    name: str = "epr"
    expected_positives: float = 0.0  # k, positives per image; 0 = the data's average
    unknown: str = "negative"  # negative | ignore

    needs: ClassVar[tuple[str, ...]] = ("expected_positives",)


@dataclass
class RoleConfig(LossConfig):
    """Online label estimation (Cole et al.).

    Cole et al. train the network and the estimates with one Adam, the estimates at 10x the
    lr (``label_lr_scale``, in the run's main optimiser). With an SGD network the estimates'
    gradients (each entry's loss is divided by B x C) move them by almost nothing, so
    ``label_adam_lr`` > 0 gives them their own Adam ("role" optimiser, constant lr, no weight
    decay) whatever the network's optimiser.
    """

    name: str = "role"
    expected_positives: float = 0.0  # k, positives per image; 0 = the data's average
    label_lr_scale: float = 10.0  # lr of the label estimates / the network lr (Cole: 10)
    label_adam_lr: float = 0.0  # > 0: the estimates get their own Adam at this constant lr (see below)
    unknown: str = "negative"  # negative | ignore

    needs: ClassVar[tuple[str, ...]] = ("label_estimates", "expected_positives")

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.label_lr_scale) and self.label_lr_scale > 0, "label_lr_scale", "> 0",
                 self.label_lr_scale)
        _require(_finite(self.label_adam_lr) and self.label_adam_lr >= 0, "label_adam_lr", ">= 0",
                 self.label_adam_lr)


@dataclass
class EnConfig(LossConfig):
    """Expected negatives (paper 003 Eq. 8) from per-image EMA scores (Eq. 4).

    warmup_epochs: epochs of AN (all unknowns negative) before the EMA-based selection
    applies; 5 follows paper 003's "5 epochs of pretraining the linear layer" (supp. G).
    ema_momentum: m of Eq. 4, s <- m s + (1 - m) sigmoid(z) per visit of an image (CL's
    target and EN's ranking); the paper's value is not retrievable, 0.9 is our choice.
    selection: "global" (default: a threshold over the dataset, honours fractional K such
    as 1.5 on average) or "image" (round(K - 1) per image); notes §4.2 item 3.
    ema_start: how the EMA scores (and SCL's heatmaps, per pixel) start. "bias_correction"
    (default): Eq. 4 from s = 0, read as s / (1 - m^v) after v visits (Adam's correction),
    i.e. s <- s + (1 - m) / (1 - m^v) (sigmoid(z) - s): every visit, the warm-up's included,
    is averaged with the EMA's own weights, and the first visit's weight at visit v is
    (1 - m) m^(v-1) / (1 - m^v) (0.16 at the first EN selection after 5 warm-up epochs, m 0.9).
    "first_visit": the first visit writes sigmoid(z), then plain Eq. 4 (that first prediction
    of a fresh head keeps weight m^(v-1): 0.66 at the first selection, 0.39 five epochs later).
    "restart": as first_visit, and at the end of the warm-up (after EN's first selection,
    made from the warm-up's EMA) every image's and pixel's visits are forgotten, so its first
    visit after the warm-up writes the current prediction (until then the stored warm-up value
    is that one visit's CL/SCL target). Why bias_correction is the default: paper 003 computes
    the EMA during training, the warm-up included (supp. G selects SCL's top-10 classes from
    s^5, "computed as described in eq. (4), after the 5 epochs of pretraining"), which a restart
    contradicts; Eq. 4 gives no starting value, and from s = 0 (the recursion as written) every
    image's scores are the bias-corrected ones times the same 1 - m^v (every image is visited
    once an epoch), so EN's ranking is the literal Eq. 4's while CL's target is not shrunk
    towards 0; first_visit is a third start that gives one prediction, the least trained, the
    largest weight.
    """

    name: str = "en"
    expected_positives: float = 0.0  # K, positives per image; 0 = the data's average
    selection: str = "global"  # global | image: how the ~(K-1) likely positives per image are left out
    warmup_epochs: int = 5  # epochs of AN before expected negatives (and CL/SCL) apply
    ema_momentum: float = 0.9  # m of Eq. 4: s <- m s + (1 - m) sigmoid(z) per visit of an image (our choice)
    ema_start: str = "bias_correction"  # bias_correction (Eq. 4 from 0, / (1 - m^v)) | first_visit | restart
    unknown: str = "negative"  # negative | ignore

    needs: ClassVar[tuple[str, ...]] = ("ema", "expected_positives")

    def validate(self) -> None:
        super().validate()
        _require(self.selection in SELECTIONS, "selection", " or ".join(SELECTIONS), self.selection)
        _require(self.warmup_epochs >= 0, "warmup_epochs", ">= 0", self.warmup_epochs)
        _require(_finite(self.ema_momentum) and 0 <= self.ema_momentum < 1, "ema_momentum", "0 <= momentum < 1",
                 self.ema_momentum)
        _require(self.ema_start in EMA_STARTS, "ema_start", " or ".join(EMA_STARTS), self.ema_start)


@dataclass
class EnClConfig(EnConfig):
    """EN + consistency loss to the per-image EMA scores (paper 003)."""

    name: str = "en_cl"
    cl_weight: float = 1.0  # gamma_CL (the paper's value is not retrievable)
    distance: str = "l2"  # l1 | l2 | jsd

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.cl_weight) and self.cl_weight >= 0, "cl_weight", ">= 0", self.cl_weight)
        _require(self.distance in DISTANCES, "distance", f"one of {', '.join(DISTANCES)}", self.distance)


@dataclass
class EnSclConfig(EnConfig):
    """EN + spatial consistency loss to per-image running heatmaps (paper 003).

    heatmap_momentum: running-average momentum of the stored heatmaps per visit of a store
    pixel (inside the view's crop); not in the paper, 0.9 is our choice. The heatmaps start
    as ``ema_start`` says, per pixel.
    """

    name: str = "en_scl"
    scl_weight: float = 1.0  # gamma_SCL (the paper's value is not retrievable)
    distance: str = "l2"  # l1 | l2 | jsd
    heatmap_scale: int = 2  # stored heatmap side / feature-map side (paper 003 supp. G: 2)
    heatmap_dtype: str = "uint8"  # uint8 (paper) | float16
    heatmap_top_k: int = 0  # classes stored per image (ImageNet: 10); 0 = all
    heatmap_momentum: float = 0.9  # momentum of the heatmaps per visit of a pixel, started as ema_start (our choice)

    needs: ClassVar[tuple[str, ...]] = ("ema", "heatmaps", "expected_positives")

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.scl_weight) and self.scl_weight >= 0, "scl_weight", ">= 0", self.scl_weight)
        _require(self.distance in DISTANCES, "distance", f"one of {', '.join(DISTANCES)}", self.distance)
        _require(self.heatmap_scale >= 1, "heatmap_scale", ">= 1", self.heatmap_scale)
        _require(self.heatmap_dtype in HEATMAP_DTYPES, "heatmap_dtype", " or ".join(HEATMAP_DTYPES),
                 self.heatmap_dtype)
        _require(self.heatmap_top_k >= 0, "heatmap_top_k", ">= 0 (0 = all classes)", self.heatmap_top_k)
        _require(_finite(self.heatmap_momentum) and 0 <= self.heatmap_momentum < 1, "heatmap_momentum",
                 "0 <= momentum < 1", self.heatmap_momentum)


# ---- large-loss rejection and correction (Kim et al., CVPR 2022) ----------------------------

@dataclass
class _LargeLossConfig(LossConfig):
    """Shared by LL-R, LL-Ct and LL-Cp (``losses/large_loss.py``): AN with the largest-loss
    unobserved entries of each batch rejected or corrected from the second epoch on.

    delta_rel: the rate's growth per epoch as a FRACTION (the paper's and official code's
    ``--delta_rel`` is in percent: their 0.2 is our 0.002).
    """

    delta_rel: float = 0.002  # rate added per epoch, a fraction of the batch's unobserved entries (paper: 0.2 %)
    delta_max: float = 1.0  # cap of the rate delta(t) = min(delta_max, delta_rel t); 1 = none (paper, code)
    rate_of: str = "unobserved"  # unobserved (paper's R(t)) | batch (official code: ceil(delta B C) entries)
    unknown: str = "negative"  # negative (AN, the method) | ignore (BCE on observed labels only)
    reduction: str = "mean"  # mean (over B x C, official) | sum

    needs: ClassVar[tuple[str, ...]] = ("epoch",)

    def validate(self) -> None:
        super().validate()
        _require(_finite(self.delta_rel) and 0 <= self.delta_rel <= 1, "delta_rel", "0 <= delta_rel <= 1",
                 self.delta_rel)
        _require(_finite(self.delta_max) and 0 <= self.delta_max <= 1, "delta_max", "0 <= delta_max <= 1",
                 self.delta_max)
        _require(self.rate_of in RATE_OF, "rate_of", " or ".join(RATE_OF), self.rate_of)


@dataclass
class LlRConfig(_LargeLossConfig):
    """LL-R: the large-loss unobserved entries are rejected (loss 0)."""

    name: str = "ll_r"


@dataclass
class LlCtConfig(_LargeLossConfig):
    """LL-Ct: the large-loss unobserved entries get target 1 for this step."""

    name: str = "ll_ct"


@dataclass
class LlCpConfig(_LargeLossConfig):
    """LL-Cp: the large-loss unobserved entries become positive labels for the rest of training
    (a per-image N x C state of the method, carried by checkpoints)."""

    name: str = "ll_cp"
    delta_rel: float = 0.001  # rate per step from epoch 1 (constant) or its growth per epoch (linear); paper: 0.1 %
    schedule: str = "constant"  # constant (official: delta_rel every step from epoch 1) | linear (as LL-R)

    needs: ClassVar[tuple[str, ...]] = ("epoch", "corrections")

    def validate(self) -> None:
        super().validate()
        _require(self.schedule in SCHEDULES, "schedule", " or ".join(SCHEDULES), self.schedule)

    def corrections(self, logits, targets, epoch: int):
        """The entries to correct permanently after this step (bool B x C)."""
        return ll_cp_corrections(logits, targets, epoch=epoch, delta_rel=self.delta_rel, delta_max=self.delta_max,
                                 schedule=self.schedule, rate_of=self.rate_of, unknown=self.unknown)


LOSS_CONFIGS: dict[str, type] = {
    "bce": BceConfig, "focal": FocalConfig, "asl": AslConfig, "two_way": TwoWayConfig,
    "sample_wise": SampleWiseConfig, "class_wise": ClassWiseConfig, "two_way_margin": TwoWayMarginConfig,
    "warp": WarpConfig, "rml": RmlConfig, "an": AnConfig, "an_ls": AnLsConfig, "wan": WanConfig,
    "epr": EprConfig, "role": RoleConfig, "en": EnConfig, "hill": HillConfig, "splc": SplcConfig,
    "en_cl": EnClConfig, "en_scl": EnSclConfig, "ll_r": LlRConfig, "ll_ct": LlCtConfig, "ll_cp": LlCpConfig,
}
