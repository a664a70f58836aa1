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
    OMP_NUM_THREADS=1 python benchmarks/ssl_scenes_table.py --seeds 0 --json a.json &   # runs split over
    OMP_NUM_THREADS=1 python benchmarks/ssl_scenes_table.py --seeds 1 --json b.json &   # processes (one core
    python benchmarks/ssl_scenes_table.py --merge a.json b.json                         # each), then one table
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

# key -> (row label, recipe, extra overrides). "train.epochs=2x" doubles the run's epochs.
METHOD_RUNS = {
    "moco": ("MoCo-v2", "moco_scenes", []),
    "moco_local": ("MoCo-v2 without shuffle-BN", "moco_scenes", ["method.bn_mode=local"]),
    "mls": ("MLS (BCE, Eq. 9)", "mls_scenes", []),
    "mls_key": ("MLS, mining with the key's g2", "mls_scenes", ["method.mine_view=key"]),
    "mls_knn": ("MLS, kNN-softmax (Eq. 14)", "mls_scenes", ["method.loss=knn_softmax"]),
    "mls_bce_pos": ("MLS, BCE-pos (Eq. 15)", "mls_scenes", ["method.loss=bce_pos"]),
    "moco_2x": ("MoCo-v2, 2x epochs", "moco_scenes", ["train.epochs=2x"]),
    "moco_globals": ("MoCo-v2 on LoGo's global crops", "moco_scenes", ["views.global_scale=[0.4,1.0]"]),
    "moco_4crop": ("MoCo-v2 4-crop (LoGo's crops)", "logo_scenes", ["method.objective=all_pairs"]),
    "moco_logo_no_ll": ("MoCo-LoGo w/o L_ll", "logo_scenes", ["method.ll_mode=weighted", "method.ll_weight=0"]),
    "moco_logo": ("MoCo-LoGo", "logo_scenes", []),
    "simsiam": ("SimSiam", "simsiam_scenes", []),
    "simsiam_2x": ("SimSiam, 2x epochs", "simsiam_scenes", ["train.epochs=2x"]),
    "simsiam_4crop": ("SimSiam 4-crop (LoGo's crops)", "simsiam_logo_scenes", ["method.objective=all_pairs"]),
    "simsiam_logo_no_ll": ("SimSiam-LoGo w/o L_ll", "simsiam_logo_scenes", ["method.ll_weight=0"]),
    "simsiam_logo": ("SimSiam-LoGo", "simsiam_logo_scenes", []),
    "swav": ("SwAV multi-crop (2+6)", "swav_scenes", []),
    "swav_4crop": ("SwAV 4-crop (2+2)", "swav_scenes", ["views.num_local=2"]),
    "swav_2views": ("SwAV, 2 views", "swav_scenes", ["views.num_local=0"]),
    "swav_k30": ("SwAV, K=30 prototypes", "swav_scenes", ["method.num_prototypes=30"]),
}
# The papers' claims, as (better, worse) pairs of row keys: paper 000 (MLS > MoCo-v2), paper 004
# (LoGo > its baseline, LoGo without L_ll between them, SwAV 4-crop below LoGo).
CLAIMS = [("mls", "moco"), ("moco_logo", "moco"), ("moco_logo", "moco_logo_no_ll"), ("moco_logo_no_ll", "moco"),
          ("moco_logo", "moco_2x"), ("moco_logo", "moco_4crop"), ("simsiam_logo", "simsiam"),
          ("simsiam_logo", "simsiam_logo_no_ll"), ("simsiam_logo_no_ll", "simsiam"), ("simsiam_logo", "simsiam_2x"),
          ("simsiam_logo", "simsiam_4crop"), ("moco_logo", "swav_4crop")]
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


def _overrides(extra: list[str], epochs: int) -> list[str]:
    return [f"train.epochs={2 * epochs}" if o == "train.epochs=2x" else o for o in extra]


def one_seed(seed: int, args, out: Path, rows: dict, save) -> dict[str, dict]:
    """Fill ``rows`` (keyed by row key) for one seed, skipping rows it already holds (``--json``
    resumes an interrupted table); ``save()`` after each row."""
    base = [f"seed={seed}", f"out_dir={out}", "train.knn_every_epochs=0", *args.set]
    base += [f"train.epochs={args.epochs}"] if args.epochs else []
    floor = Floor(load_config("moco_scenes", base))
    epochs = floor.cfg.train.epochs
    if "raw" not in rows:
        start = time.perf_counter()
        mu = pixels(floor.scenes[0]).mean(0, keepdims=True)
        mu_d = pixels(floor.digits[0]).mean(0, keepdims=True)
        raw = lambda ds: pixels(ds) - (mu_d if ds.label_kind == "single" else mu)
        rows["raw"] = floor.score(raw) | {"wall (s)": time.perf_counter() - start}
        start = time.perf_counter()
        rnd = random_init_backbone(floor.cfg)
        rows["random"] = floor.score(lambda ds: view_features(rnd, ds.images, floor.cfg.views).numpy()) | {
            "wall (s)": time.perf_counter() - start}
        save()
    for key in args.only:
        if key in rows:
            continue
        label, recipe, extra = METHOD_RUNS[key]
        trainer = Trainer(load_config(recipe, [*base, f"name={key}-{seed}", *_overrides(extra, epochs)]),
                          progress=False)
        result = trainer.run()
        rows[key] = floor.score(lambda ds, t=trainer: view_features(t.backbone, ds.images, t.cfg.views).numpy()) | {
            "images/s": result.images_per_s, "wall (s)": result.wall_s} | {
            f"last {k}": v for k, v in _last_epoch_logs(result.run_dir).items()}
        print(f"seed {seed} {label}: " + ", ".join(f"{k} {v:.3g}" for k, v in rows[key].items()), flush=True)
        save()
    return rows


DIAGNOSTICS = ("queue_mean_norm", "positive_precision", "codes_prototypes_used", "pred_prototypes_used",
               "pred_largest_share", "z_std")


def _last_epoch_logs(run_dir: Path) -> dict:
    """The last logged value of each collapse diagnostic in the run's metrics.jsonl."""
    out = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out.update({k: row[k] for k in DIAGNOSTICS if isinstance(row.get(k), (int, float))})
    return out


LABELS = {"raw": "raw pixels", "random": "random init", **{k: v[0] for k, v in METHOD_RUNS.items()}}


def _reference(key: str) -> str | None:
    """A row's baseline: SimSiam for the SimSiam family, MoCo-v2 for every other method."""
    if key in ("raw", "random", "moco"):
        return None
    return "simsiam" if key.startswith("simsiam") and key != "simsiam" else "moco"


def summarise(per_seed: list[dict[str, dict]]) -> list[dict]:
    """Mean +- std per column; the difference of mAP@class from the row's baseline (MoCo-v2 or
    SimSiam), beyond noise when it exceeds 2 standard errors."""
    def values(key, col):
        return np.array([s[key][col] for s in per_seed if key in s and col in s[key]])

    keys = list(dict.fromkeys(k for s in per_seed for k in s))
    table = []
    for key in keys:
        row = {"run": LABELS.get(key, key)}
        for col in dict.fromkeys(c for s in per_seed if key in s for c in s[key]):
            v = values(key, col)
            row[col] = f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"
        ref = _reference(key)
        if ref and any(ref in s for s in per_seed) and len(values(key, MAP)) > 1:
            diff, _, verdict = mean_difference(values(key, MAP), values(ref, MAP))
            row["vs baseline mAP"] = f"{diff:+.1f} vs {LABELS[ref]} ({verdict})"
        table.append(row)
    return table


def claims(per_seed: list[dict[str, dict]]) -> list[dict]:
    """Each claim (row a above row b on scenes mAP@class): the difference and the verdict."""
    out = []
    for a, b in CLAIMS:
        va = [s[a][MAP] for s in per_seed if a in s]
        vb = [s[b][MAP] for s in per_seed if b in s]
        if not va or not vb:
            continue
        diff, se, noise = mean_difference(va, vb)
        holds = "holds" if diff > 0 else "does not hold"
        size = f"{diff:+.1f} +- {se:.1f}" if np.isfinite(se) else f"{diff:+.1f}"
        out.append({"claim": f"{LABELS[a]} > {LABELS[b]}", "difference (mAP)": size, "verdict": f"{holds} ({noise})"})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs of every recipe")
    p.add_argument("--only", nargs="+", default=list(METHOD_RUNS), choices=list(METHOD_RUNS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--json", default="", help="per-seed numbers: written after every row, and read back to resume")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="print the table of these --json files (runs split over processes) and exit")
    args = p.parse_args()
    if args.merge:
        merged: dict[str, dict] = {}
        for f in args.merge:
            for seed, rows in json.loads(Path(f).read_text()).items():
                merged.setdefault(seed, {}).update(rows)
        args.seeds = sorted(int(s) for s in merged)
        per_seed = [merged[str(s)] for s in args.seeds]
        print(format_table(summarise(per_seed), title=f"seeds {args.seeds} (merged from {len(args.merge)} files)"))
        print(format_table(claims(per_seed), title="the papers' claims on scenes mAP@class"))
        return
    path = Path(args.json) if args.json else None
    saved = json.loads(path.read_text()) if path is not None and path.is_file() else {}
    per_seed = [saved.get(str(s), {}) for s in args.seeds]
    save = lambda: path.write_text(json.dumps(dict(zip(map(str, args.seeds), per_seed)), indent=2)) if path else None
    with tempfile.TemporaryDirectory() as tmp:
        for s, rows in zip(args.seeds, per_seed):
            one_seed(s, args, Path(tmp), rows, save)
    cfg = load_config("moco_scenes", args.set + ([f"train.epochs={args.epochs}"] if args.epochs else []))
    print(f"device: {device_name(torch.device('cpu'))}; digit scenes: {cfg.data.scene_count} images at "
          f"{cfg.data.image_size} px, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
          f"{cfg.model.backbone} x{cfg.model.width}; seeds {args.seeds}; overrides {args.set}")
    print(format_table(summarise(per_seed), title="frozen backbones: linear probe on held-out scenes, "
                                                  "weighted kNN (k=20) on digits; mean +- std over seeds"))
    print(format_table(claims(per_seed), title="the papers' claims on scenes mAP@class (difference +- its standard "
                                               "error; beyond noise when > 2 standard errors)"))


if __name__ == "__main__":
    main()
