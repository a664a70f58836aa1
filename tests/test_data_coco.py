"""COCO instances JSON: multi-label targets, scaled boxes, crowd flags, {split} paths."""
import json

import numpy as np
import pytest
from PIL import Image

from tagless.data import DataConfig, build_dataset
from tagless.errors import TaglessError

CATEGORIES = [{"id": 7, "name": "zebra"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]


def write_coco(root, split, images, annotations):
    (root / f"{split}2014").mkdir(parents=True, exist_ok=True)
    for im in images:
        Image.new("RGB", (im["width"], im["height"]), (50, 60, 70)).save(root / f"{split}2014" / im["file_name"])
    (root / "annotations").mkdir(exist_ok=True)
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(data))


@pytest.fixture
def coco(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, "train", [
        {"id": 42, "file_name": "b.jpg", "width": 40, "height": 20},
        {"id": 5, "file_name": "a.jpg", "width": 20, "height": 20},
        {"id": 9, "file_name": "empty.jpg", "width": 10, "height": 30},
    ], [
        {"id": 1, "image_id": 42, "category_id": 1, "bbox": [4, 2, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 7, "bbox": [0, 0, 40, 20], "iscrowd": 1},
        {"id": 3, "image_id": 5, "category_id": 3, "bbox": [10, 10, 5, 5], "iscrowd": 0},
        {"id": 4, "image_id": 42, "category_id": 1, "bbox": [30, 5, 8, 8], "iscrowd": 0},
    ])
    write_coco(root, "val", [{"id": 1, "file_name": "v.jpg", "width": 16, "height": 16}],
               [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [0, 0, 8, 8]}])
    return root


def cfg(coco, tmp_path, **kw):
    return DataConfig(source="coco", root=str(coco / "{split}2014"), image_size=10,
                      annotations=str(coco / "annotations" / "instances_{split}2014.json"),
                      cache_dir=str(tmp_path / "cache"), **{"test_split_name": "val", **kw})


def test_targets_boxes_and_crowd(coco, tmp_path):
    ds = build_dataset(cfg(coco, tmp_path), "train")
    assert ds.classes == ["person", "car", "zebra"] and ds.label_kind == "multi"
    assert [p.rsplit("/", 1)[1] for p in ds.paths] == ["a.jpg", "empty.jpg", "b.jpg"]  # image-id order
    assert ds.targets.tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 1]]
    np.testing.assert_allclose(ds.boxes[0], [[5, 5, 7.5, 7.5, 1]])
    assert ds.boxes[1].shape == (0, 5)
    # 40 x 20 image -> 10 x 10: x scaled by 1/4, y by 1/2
    np.testing.assert_allclose(ds.boxes[2], [[1, 1, 6, 6, 0], [0, 0, 10, 10, 2], [7.5, 2.5, 9.5, 6.5, 0]])
    assert [c.tolist() for c in ds.extras["crowd"]] == [[False], [], [False, True, False]]
    assert np.abs(ds.images.astype(int) - [50, 60, 70]).max() <= 4  # JPEG is lossy


def test_split_placeholder_and_all(coco, tmp_path):
    test = build_dataset(cfg(coco, tmp_path), "test")
    assert len(test) == 1 and test.targets.tolist() == [[0, 1, 0]]
    np.testing.assert_allclose(test.boxes[0], [[0, 0, 5, 5, 1]])
    both = build_dataset(cfg(coco, tmp_path), "all")
    assert len(both) == 4 and len(both.extras["crowd"]) == 4
    cached = build_dataset(cfg(coco, tmp_path), "all")  # boxes and extras survive the cache
    assert all(np.array_equal(a, b) for a, b in zip(both.boxes, cached.boxes))
    assert [c.tolist() for c in cached.extras["crowd"]] == [c.tolist() for c in both.extras["crowd"]]


def test_errors(coco, tmp_path):
    with pytest.raises(TaglessError, match="category 'zebra'"):
        build_dataset(cfg(coco, tmp_path, classes=["person", "car"]), "train")
    with pytest.raises(TaglessError, match="instances_nope2014.json"):
        build_dataset(cfg(coco, tmp_path, test_split_name="nope"), "test")
    (coco / "annotations" / "instances_val2014.json").write_text('{"images": []}')
    with pytest.raises(TaglessError, match="not a COCO instances file"):
        build_dataset(cfg(coco, tmp_path), "test")
