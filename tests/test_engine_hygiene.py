"""What a user sees and what the hot path does: no library warnings on a normal run from an
image folder, views made in fp32 under autocast, and one evaluation preprocessing for the eval
recipe, the feature extractor and the monitor."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image

import tagless.augment as A
from tagless.engine import train
from tagless.engine.features import extract_features
from tagless.engine.run_config import load_config


def test_training_on_an_image_folder_prints_no_warning(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cats", "dogs"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(24):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    cfg = load_config("demo_moco", [
        f"out_dir={tmp_path}", "name=folder", "data.source=image_folder", f"data.root={tmp_path / 'imgs'}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=16", "model.width=0.125", "method.queue_size=32",
        "method.proj_hidden_dim=16", "method.proj_dim=8", "train.batch_size=16", "train.epochs=1",
        "train.knn_every_epochs=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the run
        result = train(cfg, progress=False)
        result_prefetched = train(load_config(str(result.run_dir / "config.yaml"),
                                              ["name=folder2", "train.preload_max_mb=0"]), progress=False)
    assert result.knn_top1 is not None and result_prefetched.steps == result.steps


def test_views_are_fp32_under_autocast():
    maker = A.build_views(A.two_views(global_size=16))
    x = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    plain = maker(x, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = maker(x, torch.Generator().manual_seed(0))
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16  # autocast is on
    for a, b in zip(plain.crops, under.crops):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_one_evaluation_preprocessing():
    """The eval recipe, eval_view and extract_features agree, and eval_crop_fraction changes all
    three (it used to reach only one of the two paths)."""
    x = torch.randint(0, 256, (4, 3, 40, 48), dtype=torch.uint8)
    identity = torch.nn.Flatten()  # "features" are the preprocessed pixels

    class Pixels(torch.nn.Module):
        def forward(self, v):
            return identity(v)

    for fraction in (1.0, 0.5):
        recipe = A.build_views(A.eval_views(global_size=16, eval_crop_fraction=fraction))(x).crops[0]
        direct = A.eval_view(x, 16, fraction)
        feats = extract_features(Pixels(), x.permute(0, 2, 3, 1).numpy(), 16, crop_fraction=fraction)
        assert torch.allclose(recipe, direct, atol=1e-6) and torch.allclose(feats, direct.flatten(1), atol=1e-6)
    full, half = A.eval_view(x, 16, 1.0), A.eval_view(x, 16, 0.5)
    assert not torch.allclose(full, half, atol=1e-2)
    # by hand: fraction 0.5 of a 40 x 48 image is the centred 20 x 20 square at (14, 10)
    crop = x[:, :, 10:30, 14:34].float() / 255
    ref = torch.nn.functional.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(half, A.normalize(ref), atol=1e-5)
