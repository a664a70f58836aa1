"""Losses: pure functions of tensors with their papers' defaults.

``LOSSES`` is the multi-label registry read by ``loss.name`` (method ``multilabel``, and the
variants of ``tagless compare``); the self-supervised losses are composed by their methods.
"""

from tagless.losses.contrastive import contrastive_accuracy, info_nce, negative_cosine
from tagless.losses.large_loss import large_loss_entries, ll_cp, ll_cp_corrections, ll_ct, ll_r, rejection_rate
from tagless.losses.logo import critic_objective, derangement, local_local, moco_logo_loss, simsiam_logo_loss
from tagless.losses.mls import knn_softmax, mls_bce, mls_bce_pos, topk_positives
from tagless.losses.multilabel import (
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
from tagless.losses.registry import LOSS_CONFIGS, LOSSES, LossConfig
from tagless.losses.single_positive import (
    an,
    an_ls,
    consistency,
    en,
    en_cl,
    en_scl,
    epr,
    expected_negatives,
    role,
    spatial_consistency,
    wan,
)
from tagless.losses.swav import swav_loss

__all__ = ["LOSSES", "LOSS_CONFIGS", "LossConfig", "an", "an_ls", "asl", "bce", "class_wise", "consistency",
           "contrastive_accuracy", "critic_objective", "derangement", "en", "en_cl", "en_scl", "epr",
           "expected_negatives", "focal", "hill", "info_nce", "knn_softmax", "large_loss_entries", "ll_cp",
           "ll_cp_corrections", "ll_ct", "ll_r", "local_local", "mls_bce", "mls_bce_pos", "moco_logo_loss",
           "negative_cosine", "rejection_rate", "rml", "role", "sample_wise", "simsiam_logo_loss",
           "spatial_consistency", "splc", "swav_loss", "topk_positives", "two_way", "two_way_margin", "wan", "warp"]
