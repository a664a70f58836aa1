"""Multi-label metrics against scikit-learn and hand-computed cases."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from tagless.data import DataConfig, build_dataset
from tagless.data.sources.voc import VOC_CLASSES
from tagless.errors import TaglessError
from tagless.eval import (
    average_precision,
    map_by_object_size,
    map_class,
    map_sample,
    object_size_buckets,
    threshold_metrics,
    topk_metrics,
)


def _random(n=300, c=12, seed=0, decimals=1):
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.25).astype(np.int64)
    scores = rng.random((n, c)) + 0.3 * targets
    if decimals is not None:
        scores = np.round(scores, decimals)  # heavy ties
    return scores, targets


def _sk_ap(scores, targets):
    return np.array([average_precision_score(targets[:, j], scores[:, j]) for j in range(targets.shape[1])])


@pytest.mark.parametrize("decimals", [None, 2, 1, 0])
def test_ap_matches_sklearn_with_ties(decimals):
    scores, targets = _random(decimals=decimals)
    ap = average_precision(torch.tensor(scores), torch.tensor(targets))
    np.testing.assert_allclose(ap.numpy(), _sk_ap(scores, targets), rtol=0, atol=1e-12)


def test_ap_known_tie_example():
    # notes §6.2: y = [1, 0, 0, 1, 0], s = [.9, .5, .5, .5, .1] -> 0.75; all tied -> prevalence
    s = torch.tensor([[0.9], [0.5], [0.5], [0.5], [0.1]])
    y = torch.tensor([[1], [0], [0], [1], [0]])
    assert average_precision(s, y).item() == pytest.approx(0.75)
    assert average_precision(torch.ones(4, 1), torch.tensor([[0], [1], [0], [0]])).item() == pytest.approx(0.25)


def test_ap_float32_scores_and_all_negative_class():
    scores, targets = _random(seed=1, decimals=None)
    targets[:, 3] = 0
    ap = average_precision(torch.tensor(scores, dtype=torch.float32), torch.tensor(targets))
    assert math.isnan(ap[3].item())
    keep = [j for j in range(targets.shape[1]) if j != 3]
    ref = _sk_ap(scores.astype(np.float32)[:, keep], targets[:, keep])
    np.testing.assert_allclose(ap.numpy()[keep], ref, atol=1e-12)
    assert map_class(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(ref.mean())


def test_ignored_entries_equal_sklearn_on_kept_entries():
    scores, targets = _random(seed=2, decimals=1)
    rng = np.random.default_rng(5)
    targets[rng.random(targets.shape) < 0.3] = -1
    ap = average_precision(torch.tensor(scores), torch.tensor(targets)).numpy()
    for j in range(targets.shape[1]):
        keep = targets[:, j] != -1
        assert ap[j] == pytest.approx(average_precision_score(targets[keep, j], scores[keep, j]), abs=1e-12)


def test_map_sample_matches_sklearn_rows():
    scores, targets = _random(n=80, c=10, seed=3, decimals=1)
    targets[:5] = 0  # rows without positives are excluded
    targets[5, :] = 1
    ref = [average_precision_score(targets[i], scores[i]) for i in range(len(targets)) if targets[i].any()]
    assert map_sample(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(np.mean(ref), abs=1e-12)


def test_numpy_inputs_and_errors():
    scores, targets = _random(n=20, c=3)
    assert map_class(scores, targets) == pytest.approx(_sk_ap(scores, targets).mean())
    with pytest.raises(TaglessError):
        map_class(scores, targets[:, :2])
    with pytest.raises(TaglessError):
        map_class(scores, targets * 2)
    bad = scores.copy()
    bad[0, 0] = np.nan
    with pytest.raises(TaglessError):
        map_class(bad, targets)


def test_threshold_and_topk_metrics_hand_computed():
    scores = torch.tensor([[0.9, 0.6, 0.2],
                           [0.4, 0.7, 0.8],
                           [0.1, 0.3, 0.55],
                           [0.8, 0.1, 0.2]])
    targets = torch.tensor([[1, 0, 0],
                            [1, 1, -1],
                            [0, 0, 0],
                            [1, 0, 0]])
    m = threshold_metrics(scores, targets, threshold=0.5)
    # predictions >= 0.5 (ignored entry [1, 2] counts nowhere):
    # class 0: pred rows {0, 3}, pos {0, 1, 3}: Nc=2 Np=2 Ng=3
    # class 1: pred {0, 1}, pos {1}: Nc=1 Np=2 Ng=1
    # class 2: pred {2} (row 1 ignored), no positives -> excluded from CP/CR
    cp, cr = (1.0 + 0.5) / 2, (2 / 3 + 1.0) / 2
    op, orr = 3 / 5, 3 / 4
    assert m["CP"] == pytest.approx(cp) and m["CR"] == pytest.approx(cr)
    assert m["CF1"] == pytest.approx(2 * cp * cr / (cp + cr))
    assert m["OP"] == pytest.approx(op) and m["OR"] == pytest.approx(orr)
    assert m["OF1"] == pytest.approx(2 * op * orr / (op + orr))
    t = topk_metrics(scores, targets, k=1)
    # top-1: row0 -> 0 (tp), row1 -> 2 (ignored), row2 -> 2 (fp, class 2), row3 -> 0 (tp)
    # class 0: Nc=2 Np=2 Ng=3; class 1: Nc=0 Np=0 (precision 0) Ng=1
    assert t["CP"] == pytest.approx(0.5) and t["CR"] == pytest.approx((2 / 3 + 0) / 2)
    assert t["OP"] == pytest.approx(2 / 3) and t["OR"] == pytest.approx(2 / 4)
    none = threshold_metrics(scores, targets, threshold=2.0)
    assert none == {"CP": 0.0, "CR": 0.0, "CF1": 0.0, "OP": 0.0, "OR": 0.0, "OF1": 0.0}


def _box_areas(boxes):
    return [None if b is None else ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float32) for b in boxes]


def test_object_size_buckets_and_map_hand_built():
    # boxes of 640 x 640 originals: small < 1024 <= medium < 9216 <= large (COCO, original pixels)
    targets = torch.tensor([[1, 1, 0],
                            [1, 0, 1],
                            [0, 1, 1],
                            [1, 0, 0]])
    boxes = [
        np.array([[0, 0, 10, 10, 0], [0, 0, 200, 200, 0], [0, 0, 50, 50, 1]]),  # c0 large (max), c1 medium
        np.array([[0, 0, 20, 20, 0], [0, 0, 40, 40, 2], [5, 5, 30, 30, 0]]),  # c0 small (max 625, sum 1025), c2 medium
        np.array([[0, 0, 100, 100, 1], [0, 0, 5, 5, 2], [0, 0, 30, 30, 0]]),  # c1 large, c2 small, c0 box of a negative
        None,                                                                    # c0 positive without a box
    ]
    expected = torch.tensor([[2, 1, -1],
                             [0, -1, 1],
                             [-1, 2, 0],
                             [-1, -1, -1]])
    areas = _box_areas(boxes)  # in original pixels
    cached = [None if b is None else b * [.1, .1, .1, .1, 1] for b in boxes]  # cached at 64 px
    bucket, names, edges = object_size_buckets(targets, cached, 64, areas=areas)
    assert names == ["small", "medium", "large"] and edges.tolist() == [1024.0, 9216.0]
    torch.testing.assert_close(bucket, expected)
    # the recorded areas decide, not the cached boxes: every instance 2000 px^2 -> all medium
    same = [None if a is None else np.full_like(a, 2000.0) for a in areas]
    torch.testing.assert_close(object_size_buckets(targets, cached, 64, areas=same)[0],
                               torch.where(expected >= 0, 1, -1))
    # other thresholds (e.g. for small scenes): 30^2 = 900 and 60^2 = 3600
    low = object_size_buckets(targets, cached, 64, thresholds=(900, 3600), areas=areas)[0]
    torch.testing.assert_close(low, torch.tensor([[2, 1, -1], [0, -1, 1], [-1, 2, 0], [-1, -1, -1]]))
    low = object_size_buckets(targets, cached, 64, thresholds=(401, 1601), areas=areas)[0]
    torch.testing.assert_close(low, torch.tensor([[2, 2, -1], [1, -1, 1], [-1, 2, 0], [-1, -1, -1]]))
    # fallback without areas: relative area scaled to a 640 x 640 image, whatever the cached size
    torch.testing.assert_close(object_size_buckets(targets, boxes, 640)[0], expected)
    torch.testing.assert_close(object_size_buckets(targets, cached, 64)[0], expected)
    scores = torch.tensor([[0.9, 0.2, 0.5],
                           [0.3, 0.4, 0.6],
                           [0.5, 0.8, 0.1],
                           [0.7, 0.1, 0.3]])
    out = map_by_object_size(scores, targets, cached, 64, areas=areas)
    # small: c0 positive row1 (0.3) vs negatives row2 (0.5) -> AP 1/2; c2 positive row2 (0.1) vs
    # negatives rows 0, 3 (0.5, 0.3) -> AP 1/3
    assert out["small"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # medium: c1 row0 (0.2) vs negatives rows 1, 3 (0.4, 0.1) -> 1/2; c2 row1 (0.6) vs 0.5, 0.3 -> 1
    assert out["medium"] == pytest.approx((1 / 2 + 1) / 2)
    # large: c0 row0 (0.9) -> 1; c1 row2 (0.8) -> 1
    assert out["large"] == pytest.approx(1.0)
    assert map_by_object_size(scores, targets, boxes, 640) == out
    # manual check of the definition with the generic AP on masked targets
    for i, name in enumerate(names):
        masked = torch.where(bucket == i, 1, torch.where(targets == 0, 0, -1))
        assert out[name] == pytest.approx(map_class(scores, masked))


def test_object_size_bad_areas_and_thresholds():
    targets = torch.tensor([[1, 0]])
    boxes = [np.array([[0, 0, 4, 4, 0], [1, 1, 2, 2, 0]])]
    with pytest.raises(TaglessError, match="areas\\[0\\] has 1 values for 2 boxes"):
        object_size_buckets(targets, boxes, 8, areas=[np.array([3.0])])
    with pytest.raises(TaglessError, match="areas has 2 entries for 1 images"):
        object_size_buckets(targets, boxes, 8, areas=[np.array([3.0, 1.0])] * 2)
    with pytest.raises(TaglessError, match="thresholds"):
        object_size_buckets(targets, boxes, 8, thresholds=(100, 10))
    with pytest.raises(TaglessError, match="data.object_size_thresholds"):
        DataConfig(object_size_thresholds=(9216.0, 1024.0)).validate()
    with pytest.raises(TaglessError, match="data.object_size_thresholds"):
        DataConfig(object_size_thresholds=(0.0, 1024.0)).validate()
    DataConfig(object_size_thresholds=(64.0, 400.0)).validate()


def _coco(tmp_path):
    from PIL import Image

    root = tmp_path / "coco"
    images = [{"id": 1, "file_name": "big.jpg", "width": 1000, "height": 1000},
              {"id": 2, "file_name": "wide.jpg", "width": 500, "height": 250}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 40, 40]},  # no area: 40 x 40 = 1600
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 300, 300], "area": 5000.0},  # mask area
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 400.0},
    ]
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for im in images:
            Image.new("RGB", (im["width"], im["height"]), (90, 90, 90)).save(root / split / im["file_name"])
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return DataConfig(source="coco", root=str(root / "{split}"), annotations=str(root / "instances.json"),
                      image_size=64, cache_dir=str(tmp_path / "cache"))


def test_coco_sizes_in_original_pixels(tmp_path):
    from tagless.data.summary import split_facts

    cfg = _coco(tmp_path)
    ds = build_dataset(cfg, "train")
    assert [a.tolist() for a in ds.extras["area"]] == [[1600.0, 5000.0], [400.0]]
    np.testing.assert_allclose(ds.boxes[0][0], [6.4, 6.4, 8.96, 8.96, 0], rtol=1e-6)  # cached at 64 px
    bucket, _, _ = object_size_buckets(ds.targets, ds.boxes, 64, areas=ds.extras["area"])
    # the 40 x 40 box of the 1000 x 1000 image is medium (1600 px^2); 'b' follows its area field
    # (5000: medium), not its 300 x 300 box; the 20 x 20 box of the 500 x 250 image is small
    assert bucket.tolist() == [[1, 1, -1], [-1, -1, 0]]
    # the relative-area fallback would call the 40 x 40 box small (1600 / 1000^2 x 640^2 = 655)
    assert object_size_buckets(ds.targets, ds.boxes, 64)[0][0, 0] == 0
    again = build_dataset(cfg, "train")  # from the cache
    assert again.cache_path and [a.tolist() for a in again.extras["area"]] == [[1600.0, 5000.0], [400.0]]
    assert split_facts(again, 64)["object_sizes"] == {"small": 1, "medium": 2, "large": 0}
    assert split_facts(again, 64, (300.0, 1000.0))["object_sizes"] == {"small": 0, "medium": 1, "large": 2}


def test_voc_area_in_original_pixels(tmp_path):
    from PIL import Image

    root = tmp_path / "VOC"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    Image.new("RGB", (200, 100), 0).save(root / "JPEGImages" / "a.jpg")
    box = "<bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax></bndbox>"  # 40 x 40 pixels
    (root / "Annotations" / "a.xml").write_text(f"<annotation><object><name>cat</name>{box}</object></annotation>")
    for name in ("trainval", "test"):
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("a\n")
    ds = build_dataset(DataConfig(source="voc", root=str(root), image_size=16, cache_dir=""), "train")
    assert ds.extras["area"][0].tolist() == [1600.0]
    bucket = object_size_buckets(ds.targets, ds.boxes, 16, areas=ds.extras["area"])[0]
    assert bucket[0, VOC_CLASSES.index("cat")] == 1  # medium


def test_digit_scenes_sizes_are_their_pixel_areas():
    cfg = DataConfig(source="digit_scenes", image_size=96, scene_count=80, scene_digit_size=(10, 48), cache_dir="")
    ds = build_dataset(cfg, "train")
    area = ds.extras["area"]
    expected = np.full(ds.targets.shape, -1)
    for i, b in enumerate(ds.boxes):
        for x0, y0, x1, y1, c in b:
            a = (x1 - x0) * (y1 - y0)
            size = 0 if a < 32 ** 2 else 1 if a < 96 ** 2 else 2
            expected[i, int(c)] = max(expected[i, int(c)], size)
        np.testing.assert_array_equal(area[i], (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    bucket = object_size_buckets(ds.targets, ds.boxes, 96, areas=area)[0]
    np.testing.assert_array_equal(bucket.numpy(), expected)
    counts = np.bincount(bucket[bucket >= 0].numpy(), minlength=3)
    assert counts[0] > 0 and counts[1] > 0 and counts[2] == 0  # 48^2 = 2304 < 96^2
    assert (object_size_buckets(ds.targets, ds.boxes, 96)[0] == 2).sum() > 0  # the fallback's "large"


def test_eval_map_passes_areas_and_thresholds(monkeypatch, capsys):
    import argparse

    from tagless.commands import evaluate as commands
    from tagless.engine import checkpoint_features as features

    data = DataConfig(source="digit_scenes", image_size=64, scene_count=60, scene_digit_size=(8, 40),
                      object_size_thresholds=(200.0, 900.0), cache_dir="")
    from types import SimpleNamespace

    monkeypatch.setattr(features, "load_backbone", lambda ckpt, device: SimpleNamespace(checkpoint_path=ckpt))
    monkeypatch.setattr(features, "data_config_for", lambda loaded, path, overrides: data)
    monkeypatch.setattr(features, "dataset_features",
                        lambda loaded, d, split, *a, **k: (np.zeros((1, 2), np.float32), build_dataset(d, split)))
    args = argparse.Namespace(checkpoint="ckpt", features=None, device="cpu", data=None, data_overrides=[],
                              cache_dir=None, layer=None, threshold=0.5, topk=3, probe=True)
    inp = commands._from_checkpoint(args)
    test = build_dataset(data, "test")
    assert inp.size_thresholds == (200.0, 900.0)
    assert [a.tolist() for a in inp.areas] == [a.tolist() for a in test.extras["area"]]
    inp.scores = np.random.default_rng(0).normal(size=test.targets.shape).astype(np.float32)
    monkeypatch.setattr(commands, "_inputs", lambda a, evaluator: inp)
    res = commands.run_map(args)
    ref = map_by_object_size(inp.scores, test.targets, test.boxes, 64, thresholds=(200.0, 900.0),
                             areas=test.extras["area"])
    assert res["by_object_size"] == ref
    assert ref != map_by_object_size(inp.scores, test.targets, test.boxes, 64)  # the old call differs


def test_object_size_equal_count_bins():
    rng = np.random.default_rng(0)
    n, c = 60, 4
    targets = torch.tensor((rng.random((n, c)) < 0.5).astype(np.int64))
    boxes = []
    for i in range(n):
        rows = [[0, 0, s, s, j] for j in range(c) for s in [rng.uniform(5, 300)] if targets[i, j] == 1]
        boxes.append(np.array(rows) if rows else None)
    bucket, names, edges = object_size_buckets(targets, boxes, 320, bins=3)
    counts = torch.bincount(bucket[bucket >= 0], minlength=3)
    assert names == ["bin0", "bin1", "bin2"] and counts.max() - counts.min() <= 1
    out = map_by_object_size(rng.random((n, c)), targets, boxes, 320, bins=3)
    assert set(out) == set(names)
    # equal-count bins use the relative area, even when original areas are given
    areas = [None if b is None else rng.uniform(1, 1e5, len(b)) for b in boxes]
    torch.testing.assert_close(object_size_buckets(targets, boxes, 320, bins=3, areas=areas)[0], bucket)
    # against NumPy: the largest relative area of each positive pair, cut at its tertiles
    rel = np.full((n, c), -1.0)
    for i, b in enumerate(boxes):
        for x0, y0, x1, y1, j in ([] if b is None else b):
            rel[i, int(j)] = max(rel[i, int(j)], (x1 - x0) * (y1 - y0) / 320 ** 2)
    pos = targets.numpy() == 1
    cuts = np.quantile(rel[pos], [1 / 3, 2 / 3])
    np.testing.assert_allclose(edges.numpy(), cuts)
    # (cut with the returned edges: a pair that is itself the tertile sits on an edge up to rounding)
    np.testing.assert_array_equal(bucket.numpy(), np.where(pos, np.searchsorted(edges.numpy(), rel, side="right"), -1))
