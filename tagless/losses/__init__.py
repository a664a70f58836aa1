"""Losses: pure functions of tensors with their papers' defaults."""

from tagless.losses.contrastive import contrastive_accuracy, info_nce, negative_cosine
from tagless.losses.logo import critic_objective, derangement, local_local, moco_logo_loss, simsiam_logo_loss
from tagless.losses.mls import knn_softmax, mls_bce, mls_bce_pos, topk_positives
from tagless.losses.swav import swav_loss

LOSSES = {"info_nce": info_nce, "negative_cosine": negative_cosine}

__all__ = ["LOSSES", "contrastive_accuracy", "critic_objective", "derangement", "info_nce", "knn_softmax", "local_local",
           "mls_bce", "mls_bce_pos", "moco_logo_loss", "negative_cosine", "simsiam_logo_loss", "swav_loss", "topk_positives"]
