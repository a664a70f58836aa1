"""Losses: pure functions of tensors with their papers' defaults."""

from tagless.losses.contrastive import contrastive_accuracy, info_nce, negative_cosine

LOSSES = {"info_nce": info_nce, "negative_cosine": negative_cosine}

__all__ = ["LOSSES", "contrastive_accuracy", "info_nce", "negative_cosine"]
