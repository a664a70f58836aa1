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


def plain_cfg(coco, tmp_path, **kw):
    """No split names: COCO's defaults, train and val."""
    kw = {"annotations": str(coco / "annotations" / "instances_{split}2014.json"), **kw}
    return DataConfig(source="coco", root=str(coco / "{split}2014"), image_size=10,
                      cache_dir=str(tmp_path / "cache"), **kw)


def test_default_split_names_train_and_val(coco, tmp_path):
    train, test = build_dataset(plain_cfg(coco, tmp_path), "train"), build_dataset(plain_cfg(coco, tmp_path), "test")
    assert (len(train), len(test)) == (3, 1) and test.paths[0].endswith("val2014/v.jpg")
    assert train.classes == test.classes == ["person", "car", "zebra"]
    assert any("the test split is COCO's 'val' files" in n for n in test.notes)
    assert build_dataset(cfg(coco, tmp_path), "test").notes == []  # named: nothing inferred


def test_missing_split_file_lists_the_existing_ones(coco, tmp_path):
    with pytest.raises(TaglessError, match=r"COCO annotations not found: .*/instances_test2014.json "
                                           r"\(matching instances_\*2014.json: instances_train2014.json, "
                                           r"instances_val2014.json\); set data.test_split_name$"):
        build_dataset(plain_cfg(coco, tmp_path, test_split_name="test"), "test")
    with pytest.raises(TaglessError, match=r"instances_minival2014.json .*; set data.train_split_name$"):
        build_dataset(plain_cfg(coco, tmp_path, train_split_name="minival"), "all")
    ann = coco / "annotations"
    (ann / "instances_test2014.json").write_text((ann / "instances_val2014.json").read_text())
    with pytest.raises(TaglessError, match=r"COCO image folder not found: .*/test2014 "
                                           r"\(matching \*2014: train2014, val2014\); set data.test_split_name$"):
        build_dataset(plain_cfg(coco, tmp_path, test_split_name="test"), "test")
    with pytest.raises(TaglessError, match=r"\(nothing matches other_\*.json\)"):
        build_dataset(plain_cfg(coco, tmp_path, annotations=str(ann / "other_{split}.json")), "train")
    with pytest.raises(TaglessError, match=r"COCO annotations not found: .*/fixed.json$"):  # no {split}
        build_dataset(plain_cfg(coco, tmp_path, annotations=str(ann / "fixed.json")), "train")
