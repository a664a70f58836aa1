"""The floor every pre-trained backbone is compared with: raw pixels (centred by the training
mean, so that cosine similarity is not dominated by the mean image) and the same backbone at
random init (the run's own init seed). Used by the demo and the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from tagless.data import ImageDataset, build_dataset
from tagless.engine.features import view_features
from tagless.models import build_backbone_from_config


def pixels(dataset: ImageDataset) -> np.ndarray:
    """N x (H*W*C) float32 pixels in [0, 1]."""
    return dataset.images.reshape(len(dataset), -1).astype(np.float32) / 255.0


def random_init_backbone(cfg) -> torch.nn.Module:
    """The run's backbone (``cfg.model``) at the init the run itself would start from (``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    return build_backbone_from_config(cfg.model)


Score = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], dict]


def baseline_rows(cfg, score: Score) -> list[dict]:
    """Rows ``{features, **score(x_train, y_train, x_test, y_test), wall (s)}`` of raw pixels and
    of the random-init backbone on the run's data (``cfg.data``) in its eval view."""
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    rows = []
    start = time.perf_counter()
    mu = pixels(train_set).mean(0, keepdims=True)
    scores = score(pixels(train_set) - mu, train_set.targets, pixels(test_set) - mu, test_set.targets)
    rows.append({"features": "raw pixels", **scores, "wall (s)": time.perf_counter() - start})
    start = time.perf_counter()
    backbone = random_init_backbone(cfg)
    feats = lambda ds: view_features(backbone, ds.images, cfg.views).numpy()
    scores = score(feats(train_set), train_set.targets, feats(test_set), test_set.targets)
    rows.append({"features": f"random init {cfg.model.backbone} x{cfg.model.width}", **scores,
                 "wall (s)": time.perf_counter() - start})
    return rows
