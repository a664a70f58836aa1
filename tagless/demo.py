"""``tagless demo``: pre-train MoCo-v2 and SimSiam on digits without labels and compare the
frozen backbone's kNN accuracy with the same backbone at random init and with raw pixels."""

from __future__ import annotations

import time

import numpy as np
import torch

from tagless.config import load_config
from tagless.data import build_dataset
from tagless.engine import extract_features, train
from tagless.engine.progress import format_table
from tagless.eval import knn_predict
from tagless.models import build_backbone_from_config

DEMO_CONFIGS = ("demo_moco", "demo_simsiam")


def _knn_top1(bank, bank_labels, queries, labels, k: int, temperature: float) -> float:
    pred = knn_predict(bank, torch.as_tensor(bank_labels), queries, k=k, temperature=temperature)
    return float((pred.cpu().numpy() == labels).mean() * 100)


def baselines(cfg) -> list[dict]:
    """kNN top-1 of raw pixels and of the untrained backbone (same init seed)."""
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    k, t = cfg.train.knn_k, cfg.train.knn_temperature
    rows = []
    start = time.perf_counter()
    pix = lambda ds: torch.from_numpy(ds.images.reshape(len(ds), -1).astype(np.float32) / 255.0)
    pix_train, pix_test = pix(train_set), pix(test_set)
    # Centre raw pixels so that cosine similarity is not dominated by the mean image.
    mu = pix_train.mean(0, keepdim=True)
    acc = _knn_top1(pix_train - mu, train_set.targets, pix_test - mu, test_set.targets, k, t)
    rows.append({"method": "raw pixels", "kNN top-1 (%)": acc, "wall (s)": time.perf_counter() - start})
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    backbone = build_backbone_from_config(cfg.model)
    args = (cfg.views.global_size, cfg.views.mean, cfg.views.std)
    acc = _knn_top1(extract_features(backbone, train_set.images, *args), train_set.targets,
                    extract_features(backbone, test_set.images, *args), test_set.targets, k, t)
    rows.append({"method": f"random init {cfg.model.backbone} x{cfg.model.width}", "kNN top-1 (%)": acc,
                 "wall (s)": time.perf_counter() - start})
    return rows


def run_demo(out_dir: str = "runs", epochs: int | None = None, overrides: list[str] = (), progress: bool = True) -> dict:
    """Train every demo config, print the table, return {'rows': [...], 'run_dirs': [...]}."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows, run_dirs = [], []
    cfg = None
    for name in DEMO_CONFIGS:
        extra = [f"out_dir={out_dir}", f"name={name}-{stamp}"] + ([f"train.epochs={epochs}"] if epochs else [])
        cfg = load_config(name, [*extra, *overrides])
        print(f"pre-training {cfg.method.name} on {cfg.data.source} for {cfg.train.epochs} epochs -> {cfg.run_dir}", flush=True)
        result = train(cfg, progress=progress)
        rows.append({"method": f"{cfg.method.name} pre-trained", "kNN top-1 (%)": result.knn_top1,
                     "final loss": result.final_loss, "images/s": result.images_per_s, "wall (s)": result.wall_s})
        run_dirs.append(str(result.run_dir))
    rows = baselines(cfg) + rows
    k, t = cfg.train.knn_k, cfg.train.knn_temperature
    print()
    print(format_table(rows, ["method", "kNN top-1 (%)", "final loss", "images/s", "wall (s)"],
                       title=f"tagless demo: {cfg.data.source} ({cfg.data.image_size} px), weighted kNN k={k} T={t} on the held-out split"))
    print()
    for d in run_dirs:
        print(f"run directory: {d}")
    return {"rows": rows, "run_dirs": run_dirs}
