"""The bundled scene recipes as a user runs them on their own COCO-format folder: PNG scenes
and an instances JSON written here, ``data.source=coco data.root=... data.annotations=...``
on the command line, then the multi-label linear probe of the checkpoint."""

import json

import numpy as np
import pytest
from PIL import Image

from tagless.cli import main
from tagless.data import DataConfig, build_dataset

RECIPES = {
    "moco_scenes": ["method.queue_size=32"],
    "simsiam_scenes": [],
    "mls_scenes": ["method.queue_size=32", "method.topk=4"],
    "logo_scenes": ["method.queue_size=32", "views.local_size=16"],
    "simsiam_logo_scenes": ["views.local_size=16"],
    "swav_scenes": ["views.local_size=8", "method.num_prototypes=10", "method.freeze_prototypes_iters=1"],
}


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory):
    """Digit scenes exported as a COCO dataset: train/ and val/ PNGs, instances_{split}.json."""
    root = tmp_path_factory.mktemp("coco")
    scenes = DataConfig(source="digit_scenes", image_size=32, scene_count=60, cache_dir="")
    for split, name in (("train", "train"), ("test", "val")):
        ds = build_dataset(scenes, split)
        (root / name).mkdir()
        images, annotations = [], []
        for i, (pixels, boxes) in enumerate(zip(ds.images, ds.boxes)):
            Image.fromarray(pixels).save(root / name / f"{i:04d}.png")
            images.append({"id": i + 1, "file_name": f"{i:04d}.png", "width": 32, "height": 32})
            for x0, y0, x1, y1, c in boxes:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "iscrowd": 0})
        categories = [{"id": c + 1, "name": ds.classes[c]} for c in range(len(ds.classes))]
        (root / f"instances_{name}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_scene_recipe_runs_on_a_coco_folder(recipe, coco_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = ["data.source=coco", f"data.root={coco_folder}/{{split}}",
            f"data.annotations={coco_folder}/instances_{{split}}.json"]
    tiny = ["data.image_size=16", "views.global_size=16", "model.width=0.125", "train.epochs=2",
            "train.batch_size=16", "train.knn_every_epochs=1", "out_dir=runs", f"name={recipe}"]
    assert main(["train", recipe, *data, *tiny, *RECIPES[recipe], "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(result["final loss"]) and result["steps"] == 2 * 3  # 48 training scenes, batch 16
    run = tmp_path / "runs" / recipe
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("map_class" in r for r in history)  # the monitor reads the COCO labels as multi-label
    assert main(["eval", "map", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--json"]) == 0
    probe = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    text = json.dumps(probe)
    assert "mAP" in text and "nan" not in text.lower()


def test_scene_recipes_share_data_backbone_optimiser_epochs_and_seed():
    from tagless import config_io
    from tagless.engine.run_config import load_config

    sections = {}
    for recipe in RECIPES:
        d = config_io.to_dict(load_config(recipe))
        sections[recipe] = {k: d[k] for k in ("seed", "data", "model", "optim", "train")}
    reference = sections["moco_scenes"]
    assert all(s == reference for s in sections.values())
    assert reference["train"]["epochs"] == 50 and reference["data"]["source"] == "digit_scenes"


# What each recipe may change in the views against its baseline, and why (everything else, the
# colour jitter, grayscale, blur, solarize, flip, aspect ratios and normalisation, is equal).
LOGO_CROPS = {"recipe": "logo", "num_local": 2, "global_scale": [0.4, 1.0], "local_scale": [0.08, 0.6],
              "local_size": 32}  # paper 004 supp. Sec. 1: global [0.4, 1], local [0.08, 0.6], resized to 32
INTENDED_VIEW_DIFFERENCES = {
    "moco_scenes": {},
    "mls_scenes": {},  # paper 000: MLS is MoCo-v2's pipeline plus Q_g
    "simsiam_scenes": {},
    "logo_scenes": LOGO_CROPS,
    "simsiam_logo_scenes": LOGO_CROPS,
    # SwAV's multi-crop (Caron et al. 2020): 2 global (0.14, 1) + 6 local (0.05, 0.14) at 16 px
    "swav_scenes": {"recipe": "multi_crop", "num_local": 6, "global_scale": [0.14, 1.0],
                    "local_scale": [0.05, 0.14]},
}


def test_scene_recipes_views_differ_from_the_baseline_only_where_the_paper_does():
    from tagless import config_io
    from tagless.engine.run_config import load_config

    views = {name: config_io.to_dict(load_config(name).views) for name in INTENDED_VIEW_DIFFERENCES}
    baseline = views["moco_scenes"]
    assert baseline["blur_p"] == 0.5 and baseline["global_scale"] == [0.2, 1.0]
    for name, intended in INTENDED_VIEW_DIFFERENCES.items():
        differs = {k: v for k, v in views[name].items() if v != baseline[k]}
        assert differs == intended, name
