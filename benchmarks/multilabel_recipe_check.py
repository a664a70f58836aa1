"""Does the multi-label recipe carry over to scenes it was not tuned on?

A held-out scene set unlike the embedded one (64 px canvases, digits of 14-32 px, 1-4 per
image, its own seed) is written as a COCO folder (PNGs + instances JSON), then read back as a
user's COCO data. On it and on the embedded digit scenes, with full labels and BCE, 3 seeds:
- the ``multilabel_scenes`` recipe as bundled (since 2026-12-03 a plain whole-image
  classifier: the same ResNet-18 x0.25 on the whole image squished to 32 px with small shifts,
  crops of 80-100% of the area, Adam at lr 1e-3, no weight decay);
- paper 003's augmentation with SGD, the recipe before: square crops of 25-100% of a 48 px
  source resized to 32, SGD with Nesterov momentum at lr 1.0 per 256, weight decay 5e-4, cosine;
- any recipe variant given with ``--variant NAME KEY=VALUE ...``.
Every run chooses its best epoch on a clean 20% validation split (best.pt); the table is the
test mAP@class of that epoch, mean +- std over seeds, and the difference from the bundled
recipe with its seed-noise verdict.

    python benchmarks/multilabel_recipe_check.py [--seeds 0 1 2] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from PIL import Image

from tagless.compare import mean_difference
from tagless.data import DataConfig, build_dataset
from tagless.device import device_name
from tagless.engine import train
from tagless.engine.run_config import load_config
from tagless.tables import format_table

HELD_OUT = DataConfig(source="digit_scenes", image_size=64, scene_count=1200, scene_digits=(1, 4),
                      scene_digit_size=(14, 32), split_seed=7, cache_dir="")
BUNDLED = "multilabel_scenes (bundled: plain whole-image classifier)"
PAPER_CROPS_SGD = ["data.image_size=48", "views.global_scale=[0.25,1.0]", "optim.name=sgd", "optim.lr=0",
                   "optim.lr_per_256=1.0", "optim.weight_decay=5e-4", "optim.nesterov=true",
                   "optim.schedule=cosine", "optim.warmup_epochs=1"]
COMMON = ["labels.val_fraction=0.2", "train.knn_every_epochs=1", "loss.name=bce", "labels.mode=full"]


def write_coco(cfg: DataConfig, root: Path) -> list[str]:
    """The scenes of ``cfg`` as a COCO folder; returns the data overrides that read it back."""
    for split, name in (("train", "train"), ("test", "val")):
        ds = build_dataset(cfg, split)
        (root / name).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i, (pixels, boxes) in enumerate(zip(ds.images, ds.boxes)):
            Image.fromarray(pixels).save(root / name / f"{i:05d}.png")
            h, w = pixels.shape[:2]
            images.append({"id": i + 1, "file_name": f"{i:05d}.png", "width": w, "height": h})
            for x0, y0, x1, y1, c in boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0,
                                    "area": float((x1 - x0) * (y1 - y0))})
        categories = [{"id": c + 1, "name": ds.classes[c]} for c in range(len(ds.classes))]
        (root / f"instances_{name}.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                                 "categories": categories}))
    return ["data.source=coco", f"data.root={root}/{{split}}", f"data.annotations={root}/instances_{{split}}.json",
            "data.object_size_thresholds=[256.0,576.0]"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                   help="a recipe variant to check besides the bundled recipe and the one before it")
    p.add_argument("--json", default="", help="write the numbers here")
    args = p.parse_args()
    variants = {BUNDLED: [], "paper 003's crops, SGD (the recipe before)": PAPER_CROPS_SGD,
                **{v[0]: v[1:] for v in args.variant}}
    out: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datasets = {"embedded digit scenes": [], "held-out COCO scenes (64 px)": write_coco(HELD_OUT, tmp / "coco")}
        for d, (data_name, data) in enumerate(datasets.items()):
            for v, (variant, extra) in enumerate(variants.items()):
                values = []
                for seed in args.seeds:
                    name = f"d{d}-v{v}-s{seed}"
                    cfg = load_config("multilabel_scenes", [*data, *COMMON, *extra, f"train.epochs={args.epochs}",
                                                            f"seed={seed}", f"out_dir={tmp / 'runs'}", f"name={name}"])
                    values.append(train(cfg, progress=False).test["map_class"])
                    print(f"{data_name} / {variant} / seed {seed}: test mAP@class {values[-1]:.1f}", flush=True)
                out.setdefault(data_name, {})[variant] = values
                if args.json:
                    Path(args.json).write_text(json.dumps(out, indent=2))
    rows = []
    for data_name, by_variant in out.items():
        bundled = by_variant[BUNDLED]
        for variant, values in by_variant.items():
            t = torch.tensor(values)
            diff, _, verdict = mean_difference(values, bundled)
            rows.append({"data": data_name, "recipe": variant,
                         "test mAP@class (%)": f"{t.mean():.1f} +- {t.std():.1f}" if len(values) > 1 else f"{t[0]:.1f}",
                         "vs bundled": "-" if values is bundled else f"{diff:+.1f} ({verdict})"})
    print(f"device: {device_name(torch.device('cpu'))}; full labels, BCE, {args.epochs} epochs, best epoch on a "
          f"clean 20% validation split; seeds {args.seeds}")
    print(format_table(rows, title="the bundled multi-label recipe against paper 003's crops with SGD (test "
                                   "mAP@class of the epoch chosen on validation)"))


if __name__ == "__main__":
    main()
