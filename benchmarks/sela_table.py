"""SeLa against its baselines on one dataset, several seeds (paper 002's comparisons, small).

Rows (same backbone, epochs and seeds): SeLa; SeLa with K-means self-labelling (the paper's
ablation); random labels (never updated); K-means on raw pixels; K-means on random-init
features; K-means on MoCo-v2 features; SeLa started from that MoCo-v2 backbone. Columns:
NMI / aNMI / ARI of the labels on the training split (head 0 for SeLa, k = classes for
K-means), then weighted kNN and linear-probe top-1 of the backbone on the held-out split, and
wall time. Mean +- std over seeds.

    python benchmarks/sela_table.py                         # digits, 3 seeds
    python benchmarks/sela_table.py --set data.source=image_folder --set data.root=DIR
    python benchmarks/sela_table.py --imbalance             # paper 002 Table 8 on this data
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tagless.data import build_dataset
from tagless.device import device_name
from tagless.engine import Trainer
from tagless.engine.baselines import pixels, random_init_backbone
from tagless.engine.features import view_features
from tagless.engine.run_config import load_config
from tagless.eval import cluster_scores, kmeans
from tagless.eval.scoring import score_single_label
from tagless.tables import format_table


def kmeans_scores(features: np.ndarray, targets: np.ndarray, k: int, seed: int) -> dict:
    x = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    _, assign, _ = kmeans(x, k, iters=100, n_init=3, seed=seed)
    s = cluster_scores(targets, assign.numpy())
    return {"NMI": 100 * s["nmi"], "aNMI": 100 * s["anmi"], "ARI": 100 * s["ari"]}


def probe_scores(x_tr, y_tr, x_te, y_te) -> dict:
    rows, _ = score_single_label(x_tr, y_tr, x_te, y_te)
    return {"kNN": rows[0]["top-1 (%)"], "linear": rows[1]["top-1 (%)"]}


def features_of(backbone, cfg, dataset) -> np.ndarray:
    return view_features(backbone, dataset.images, cfg.views).numpy()


def train_run(recipe: str, overrides: list[str]) -> tuple[Trainer, float]:
    start = time.perf_counter()
    trainer = Trainer(load_config(recipe, overrides), progress=False)
    trainer.run()
    return trainer, time.perf_counter() - start


def sela_row(trainer: Trainer, train_set, test_set, wall: float) -> dict:
    from tagless.eval import adjusted_nmi, ari, nmi

    labels, truth = trainer.method.labels[0].cpu().numpy(), np.asarray(train_set.targets)
    row = {"NMI": 100 * nmi(truth, labels), "aNMI": 100 * adjusted_nmi(truth, labels), "ARI": 100 * ari(truth, labels)}
    cfg = trainer.cfg
    row.update(probe_scores(features_of(trainer.backbone, cfg, train_set), train_set.targets,
                            features_of(trainer.backbone, cfg, test_set), test_set.targets))
    return row | {"wall (s)": wall}


def one_seed(seed: int, args, out: Path) -> dict[str, dict]:
    base = [f"seed={seed}", f"out_dir={out}", "train.knn_every_epochs=0", *args.set]
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.recipe, base)
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    k = len(train_set.classes)
    rows = {}
    for name, extra in (("SeLa", []), ("SeLa, K-means labels", ["method.labeller=kmeans"]),
                        ("random labels", ["method.labeller=random"])):
        trainer, wall = train_run(args.recipe,
                                  [*base, f"name={name.replace(' ', '_').replace(',', '')}-{seed}", *extra])
        rows[name] = sela_row(trainer, train_set, test_set, wall)
    start = time.perf_counter()
    pix = pixels
    mu = pix(train_set).mean(0, keepdims=True)
    rows["K-means, raw pixels"] = kmeans_scores(pix(train_set) - mu, train_set.targets, k, seed) | probe_scores(
        pix(train_set) - mu, train_set.targets, pix(test_set) - mu, test_set.targets) | {
        "wall (s)": time.perf_counter() - start}
    start = time.perf_counter()
    rnd = random_init_backbone(cfg)
    x_tr, x_te = features_of(rnd, cfg, train_set), features_of(rnd, cfg, test_set)
    rows["K-means, random-init features"] = kmeans_scores(x_tr, train_set.targets, k, seed) | probe_scores(
        x_tr, train_set.targets, x_te, test_set.targets) | {"wall (s)": time.perf_counter() - start}
    moco_overrides = [o for o in base if not o.startswith("method.")] + [f"name=moco-{seed}"]
    moco, wall = train_run(args.moco_recipe, moco_overrides)
    x_tr, x_te = features_of(moco.backbone, moco.cfg, train_set), features_of(moco.backbone, moco.cfg, test_set)
    rows["K-means, MoCo-v2 features"] = kmeans_scores(x_tr, train_set.targets, k, seed) | probe_scores(
        x_tr, train_set.targets, x_te, test_set.targets) | {"wall (s)": wall}
    ckpt = moco.run_dir / "checkpoints" / "last.pt"
    trainer, wall2 = train_run(args.recipe, [*base, f"name=sela-from-moco-{seed}", f"model.init_checkpoint={ckpt}"])
    rows["SeLa from the MoCo-v2 backbone"] = sela_row(trainer, train_set, test_set, wall + wall2)
    return rows


def imbalance_seed(seed: int, args, out: Path) -> dict[str, dict]:
    """Paper 002 Table 8 on this data: SeLa vs K-means self-labelling on full / light / heavy."""
    rows = {}
    for imb in ("none", "light", "heavy"):
        base = [f"seed={seed}", f"out_dir={out}", "train.knn_every_epochs=0", f"data.imbalance={imb}", *args.set]
        cfg = load_config(args.recipe, base)
        train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
        for name, extra in (("SK", []), ("K-means", ["method.labeller=kmeans"])):
            trainer, wall = train_run(args.recipe, [*base, f"name={imb}-{name}-{seed}", *extra])
            rows[f"{imb}: ours ({name})"] = sela_row(trainer, train_set, test_set, wall)
    return rows


def summarise(per_seed: list[dict[str, dict]]) -> list[dict]:
    table = []
    for name in per_seed[0]:
        row = {"run": name}
        for col in per_seed[0][name]:
            vals = np.array([s[name][col] for s in per_seed])
            row[col] = f"{vals.mean():.1f} +- {vals.std():.1f}" if len(vals) > 1 else f"{vals[0]:.1f}"
        table.append(row)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="sela_digits")
    p.add_argument("--moco-recipe", default="demo_moco")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs of both recipes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--imbalance", action="store_true", help="paper 002 Table 8: full / light / heavy imbalance")
    p.add_argument("--json", default="", help="write the per-seed numbers here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        per_seed = [(imbalance_seed if args.imbalance else one_seed)(s, args, Path(tmp)) for s in args.seeds]
    print(f"device: {device_name(torch.device('cpu'))}; recipe {args.recipe}; seeds {args.seeds}; overrides {args.set}")
    print(format_table(summarise(per_seed), title="labels: NMI / aNMI / ARI on the training split (x100); "
                                                  "backbone: kNN / linear top-1 on the held-out split (%)"))
    if args.json:
        Path(args.json).write_text(json.dumps(per_seed, indent=2))


if __name__ == "__main__":
    main()
