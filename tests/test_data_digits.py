"""Digits and digit scenes: real scikit-learn digits, seeded splits, scene boxes/targets."""
from collections import Counter

import numpy as np
import pytest

from tagless.data import DataConfig, ImageDataset, build_dataset, digit_scenes
from tagless.data.sources import digits as digits_mod
from tagless.data.sources.digits import digit_arrays
from tagless.data.splits import split_indices
from tagless.errors import TaglessError


def _rows(ds):
    return Counter(im.tobytes() for im in ds.images)


def test_digits_counts_and_disjoint_split():
    train = build_dataset(DataConfig(), "train")
    test = build_dataset(DataConfig(), "test")
    full = build_dataset(DataConfig(), "all")
    assert (len(train), len(test), len(full)) == (1438, 359, 1797)
    assert _rows(train) + _rows(test) == _rows(full)
    idx_train, idx_test = split_indices(1797, "train", 0.2, 0), split_indices(1797, "test", 0.2, 0)
    assert not set(idx_train) & set(idx_test)
    assert train.label_kind == "single" and train.targets.dtype == np.int64
    assert train.classes == [str(d) for d in range(10)] and train.num_classes == 10
    assert set(np.unique(full.targets)) == set(range(10))
    assert train.boxes is None and train.paths is None


def test_digits_pixels_are_the_real_digits():
    grey, labels = digit_arrays()
    ds = build_dataset(DataConfig(image_size=8), "all")
    assert ds.images.shape == (1797, 8, 8, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[..., 0], grey)
    np.testing.assert_array_equal(ds.images[..., 1], ds.images[..., 2])
    np.testing.assert_array_equal(ds.targets, labels)
    assert grey.max() == 255 and grey.min() == 0
    big = build_dataset(DataConfig(image_size=32, limit=5), "train")
    assert big.images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(big.images[..., 0], big.images[..., 2])


def test_digits_limit_and_seed():
    a = build_dataset(DataConfig(limit=50), "train")
    b = build_dataset(DataConfig(limit=50), "train")
    c = build_dataset(DataConfig(limit=50, split_seed=1), "train")
    full = build_dataset(DataConfig(), "train")
    assert len(a) == 50
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    assert not _rows(a) - _rows(full)  # a limited split is part of the full split


def test_empty_split_is_an_error():
    for source in ("digits", "digit_scenes"):
        with pytest.raises(TaglessError, match="empty"):
            build_dataset(DataConfig(source=source, test_fraction=0.0), "test")


def _check_scenes(ds: ImageDataset, size: int, k_range=(1, 4)):
    assert ds.images.shape[1:] == (size, size, 3) and ds.label_kind == "multi"
    assert ds.targets.dtype == np.int8 and set(np.unique(ds.targets)) <= {0, 1}
    for img, target, boxes in zip(ds.images, ds.targets, ds.boxes):
        assert boxes.dtype == np.float32 and boxes.shape[1] == 5
        assert k_range[0] <= len(boxes) <= k_range[1]
        covered = np.zeros((size, size), bool)
        for x0, y0, x1, y1, _c in boxes:
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert img[int(y0):int(y1), int(x0):int(x1)].any()
            covered[int(y0):int(y1), int(x0):int(x1)] = True
        assert not img[~covered].any(), "ink outside every box"
        expected = np.zeros(10, np.int8)
        expected[boxes[:, 4].astype(int)] = 1
        np.testing.assert_array_equal(target, expected)


def test_scenes_boxes_cover_ink_and_match_targets():
    cfg = DataConfig(source="digit_scenes", image_size=48, scene_count=100)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 80
    _check_scenes(ds, 48)
    assert len(build_dataset(cfg, "test")) == 20
    assert ds.targets.sum(1).mean() > 1.5  # several digits per scene on average


def test_scenes_deterministic_and_seeded():
    cfg = DataConfig(source="digit_scenes", image_size=32, scene_count=50)
    a, b = build_dataset(cfg, "train"), build_dataset(cfg, "train")
    np.testing.assert_array_equal(a.images, b.images)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    other = build_dataset(DataConfig(source="digit_scenes", image_size=32, scene_count=50, split_seed=3), "train")
    assert not np.array_equal(a.images, other.images)
    assert not np.array_equal(a.images[:10], build_dataset(cfg, "test").images[:10])
    prefix = build_dataset(DataConfig(source="digit_scenes", image_size=32, scene_count=50, limit=7), "train")
    np.testing.assert_array_equal(prefix.images, a.images[:7])


def test_train_scenes_use_train_digits(monkeypatch):
    seen = {}

    def spy(digits, labels, count, **kw):
        seen["digits"] = digits
        return digit_scenes(digits, labels, count, **kw)

    monkeypatch.setattr(digits_mod, "digit_scenes", spy)
    build_dataset(DataConfig(source="digit_scenes", scene_count=10), "test")
    grey, _ = digit_arrays()
    pool = grey[np.sort(split_indices(1797, "test", 0.2, 0))]
    np.testing.assert_array_equal(seen["digits"], pool)


def test_digit_scenes_function_options():
    grey, labels = digit_arrays()
    sevens = grey[labels == 7][:5]
    ds = digit_scenes(sevens, np.full(5, 7), 30, image_size=40, digits_per_scene=(2, 3),
                      digit_size=(8, 12), max_overlap=0.0, seed=5)
    _check_scenes(ds, 40, (1, 3))
    assert (ds.targets[:, 7] == 1).all() and ds.targets.sum() == 30
    for boxes in ds.boxes:  # max_overlap=0: digit squares, hence boxes, are disjoint
        for i in range(len(boxes)):
            for j in range(i):
                w = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
                h = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
                assert w <= 0 or h <= 0
    noisy = digit_scenes(sevens, np.full(5, 7), 3, image_size=40, noise_std=5.0, seed=5)
    assert (noisy.images == 0).mean() < 0.9
    again = digit_scenes(sevens, np.full(5, 7), 3, image_size=40, noise_std=5.0, seed=5)
    np.testing.assert_array_equal(noisy.images, again.images)


def test_scenes_are_built_without_per_digit_setup(monkeypatch):
    """What made 2000 scenes cheap, checked without a clock: the digits are read once (cached),
    each digit side builds its resize matrices once, and no per-image decode/resize runs."""
    import sklearn.datasets

    from tagless.data import decode, scenes

    loads, mats = [], []
    real_load, real_matrix = sklearn.datasets.load_digits, scenes._bilinear_matrix
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    monkeypatch.setattr(scenes, "_bilinear_matrix", lambda n_in, n_out: mats.append(n_out) or real_matrix(n_in, n_out))

    def no_resize(*args, **kwargs):
        raise AssertionError("scenes must not resize image by image")

    monkeypatch.setattr(decode, "resize_array", no_resize)
    monkeypatch.setattr(decode, "resize_batch", no_resize)
    digit_arrays.cache_clear()
    cfg = DataConfig(source="digit_scenes", image_size=64, scene_count=500)
    ds = build_dataset(cfg, "all")
    again = build_dataset(cfg, "all")
    assert len(ds) == 500 and ds.targets.sum() > 1000  # > 1000 digits pasted (classes per scene: a lower bound)
    np.testing.assert_array_equal(ds.images, again.images)
    assert len(loads) == 1  # the second build is served from the digit_arrays cache
    lo, hi = cfg.scene_digit_size
    sides = Counter(mats)
    assert set(sides) <= set(range(lo, hi + 1))
    assert all(n == 2 * 2 for n in sides.values())  # rows and columns, once per side and build
