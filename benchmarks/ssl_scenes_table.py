"""Self-supervised methods on digit scenes, several seeds (papers 000 and 004's comparisons, small).

Every method pre-trains on the same digit scenes with the same backbone, epochs, batch,
optimiser and seed (the bundled ``*_scenes`` recipes differ only in their method and views
sections), then its frozen backbone is scored by:
- the multi-label linear probe on the scenes' held-out split (mAP@class, as paper 000 does on VOC07);
- weighted kNN and linear-probe top-1 on scikit-learn digits (train / test split, upscaled to
  the scenes' size);
- wall time of the pre-training and images/s (source images, not crops).
Raw pixels and the randomly initialised backbone are the floor. Mean +- std over seeds; the
last column says whether a method's mAP@class differs from MoCo-v2's by more than seed noise
(|difference of means| > 2 x the standard error of that difference).

    python benchmarks/ssl_scenes_table.py                          # 3 seeds, every method
    python benchmarks/ssl_scenes_table.py --set data.scene_count=1000 --epochs 20
    python benchmarks/ssl_scenes_table.py --only moco mls           # a subset
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tagless.compare import mean_difference
from tagless.data import build_dataset
from tagless.device import device_name
from tagless.engine import Trainer
from tagless.engine.baselines import pixels, random_init_backbone
from tagless.engine.features import view_features
from tagless.engine.run_config import load_config
from tagless.eval.scoring import score_multilabel, score_single_label
from tagless.tables import format_table

# name -> (recipe, extra overrides). SimSiam runs on moco_scenes with its method section replaced.
METHOD_RUNS = {
    "moco": ("MoCo-v2", "moco_scenes", []),
    "mls": ("MLS (BCE, Eq. 9)", "mls_scenes", []),
    "mls_knn": ("MLS, kNN-softmax (Eq. 14)", "mls_scenes", ["method.loss=knn_softmax"]),
    "mls_bce_pos": ("MLS, BCE-pos (Eq. 15)", "mls_scenes", ["method.loss=bce_pos"]),
    "mls_late": ("MLS, term from epoch 25, weight 0.3", "mls_scenes",
                 ["method.mls_start_epochs=25", "method.mls_weight=0.3"]),
    "simsiam": ("SimSiam", "moco_scenes", ["method.name=simsiam"]),
    "simsiam_logo": ("SimSiam-LoGo", "simsiam_logo_scenes", []),
    "moco_logo": ("MoCo-LoGo", "logo_scenes", []),
    "swav": ("SwAV multi-crop", "swav_scenes", []),
}
MAP, KNN = "scenes mAP@class (%)", "digits kNN top-1 (%)"


class Floor:
    """The evaluation sets of one seed: scenes (multi-label) and digits (single-label)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.scenes = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
        digits = load_config("demo_moco", ["data.source=digits", f"data.image_size={cfg.data.image_size}"]).data
        self.digits = build_dataset(digits, "train"), build_dataset(digits, "test")

    def score(self, embed) -> dict:
        """``embed(dataset) -> N x D`` features scored on both evaluation sets."""
        (s_tr, s_te), (d_tr, d_te) = self.scenes, self.digits
        (scene,), _ = score_multilabel(embed(s_tr), s_tr.targets, embed(s_te), s_te.targets)
        digit_rows, _ = score_single_label(embed(d_tr), d_tr.targets, embed(d_te), d_te.targets)
        return {MAP: scene["mAP@class (%)"], "scenes mAP@sample (%)": scene["mAP@sample (%)"],
                KNN: digit_rows[0]["top-1 (%)"], "digits linear top-1 (%)": digit_rows[1]["top-1 (%)"]}


def one_seed(seed: int, args, out: Path) -> dict[str, dict]:
    base = [f"seed={seed}", f"out_dir={out}", "train.knn_every_epochs=0", *args.set]
    base += [f"train.epochs={args.epochs}"] if args.epochs else []
    floor = Floor(load_config("moco_scenes", base))
    rows = {}
    start = time.perf_counter()
    mu = pixels(floor.scenes[0]).mean(0, keepdims=True)
    mu_d = pixels(floor.digits[0]).mean(0, keepdims=True)
    raw = lambda ds: pixels(ds) - (mu_d if ds.label_kind == "single" else mu)
    rows["raw pixels"] = floor.score(raw) | {"wall (s)": time.perf_counter() - start}
    start = time.perf_counter()
    rnd = random_init_backbone(floor.cfg)
    rows["random init"] = floor.score(lambda ds: view_features(rnd, ds.images, floor.cfg.views).numpy()) | {
        "wall (s)": time.perf_counter() - start}
    for key in args.only:
        label, recipe, extra = METHOD_RUNS[key]
        trainer = Trainer(load_config(recipe, [*base, f"name={key}-{seed}", *extra]), progress=False)
        result = trainer.run()
        rows[label] = floor.score(lambda ds, t=trainer: view_features(t.backbone, ds.images, t.cfg.views).numpy()) | {
            "images/s": result.images_per_s, "wall (s)": result.wall_s}
        print(f"seed {seed} {label}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[label].items()), flush=True)
    return rows


def summarise(per_seed: list[dict[str, dict]]) -> list[dict]:
    """Mean +- std per column; a difference from MoCo-v2 beyond 2 standard errors is flagged."""
    def values(name, col):
        return np.array([s[name][col] for s in per_seed if col in s[name]])

    ref = "MoCo-v2" if "MoCo-v2" in per_seed[0] else None
    table = []
    for name in per_seed[0]:
        row = {"run": name}
        for col in per_seed[0][name]:
            v = values(name, col)
            row[col] = f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        if ref and name != ref and len(per_seed) > 1:
            diff, _, verdict = mean_difference(values(name, MAP), values(ref, MAP))
            row["vs MoCo-v2 mAP"] = f"{diff:+.1f} ({verdict})"
        table.append(row)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs of every recipe")
    p.add_argument("--only", nargs="+", default=list(METHOD_RUNS), choices=list(METHOD_RUNS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--json", default="", help="write the per-seed numbers here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_seed = []
        for s in args.seeds:
            per_seed.append(one_seed(s, args, Path(tmp)))
            if args.json:
                Path(args.json).write_text(json.dumps(per_seed, indent=2))
    cfg = load_config("moco_scenes", args.set + ([f"train.epochs={args.epochs}"] if args.epochs else []))
    print(f"device: {device_name(torch.device('cpu'))}; digit scenes: {cfg.data.scene_count} images at "
          f"{cfg.data.image_size} px, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
          f"{cfg.model.backbone} x{cfg.model.width}; seeds {args.seeds}; overrides {args.set}")
    print(format_table(summarise(per_seed), title="frozen backbones: linear probe on held-out scenes, "
                                                  "weighted kNN (k=20) on digits; mean +- std over seeds"))


if __name__ == "__main__":
    main()
