"""CIFAR-10/100 python pickles written in the real format (bytes keys, N x 3072 CHW rows)."""
import pickle

import numpy as np
import pytest

from tagless.data import DataConfig, build_dataset
from tagless.errors import TaglessError


def chw_rows(colours):
    """N x 3072 uint8 rows: R plane, G plane, B plane of 32 x 32 solid images."""
    return np.concatenate([np.repeat(np.asarray(colours, np.uint8), 1024, axis=1)], axis=1)


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def cifar10(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for b in range(1, 6):
        colours = [(b, 10 * b, 20 * b), (b, 0, 255)]
        dump(root / f"data_batch_{b}", {b"batch_label": b"training batch", b"data": chw_rows(colours),
                                        b"labels": [b % 10, (b + 1) % 10]})
    dump(root / "test_batch", {b"data": chw_rows([(7, 8, 9)] * 3), b"labels": [3, 4, 5]})
    names = [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                  "frog", "horse", "ship", "truck"]]
    dump(root / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 2})
    return root


def test_cifar10_pixels_labels_and_splits(cifar10, tmp_path):
    cfg = DataConfig(source="cifar10", root=str(cifar10), cache_dir=str(tmp_path / "cache"))
    train = build_dataset(cfg, "train")
    assert train.images.shape == (10, 32, 32, 3) and train.label_kind == "single"
    assert train.classes[:3] == ["airplane", "automobile", "bird"]
    assert train.targets.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert train.images[2, 5, 7].tolist() == [2, 20, 40]  # CHW rows -> HWC
    assert (train.images[3] == np.array([2, 0, 255], np.uint8)).all()
    test = build_dataset(cfg, "test")
    assert len(test) == 3 and test.targets.tolist() == [3, 4, 5]
    assert len(build_dataset(cfg, "all")) == 13
    assert not (tmp_path / "cache").exists()  # 32 px arrays are used as they are


def test_cifar10_resized_and_limited(cifar10, tmp_path):
    cfg = DataConfig(source="cifar10", root=str(cifar10), image_size=12, limit=4,
                     cache_dir=str(tmp_path / "cache"))
    ds = build_dataset(cfg, "train")
    assert ds.images.shape == (4, 12, 12, 3)
    full = build_dataset(DataConfig(source="cifar10", root=str(cifar10), image_size=12, cache_dir=""), "train")
    for img, t in zip(ds.images, ds.targets):  # solid colours survive bilinear resizing
        assert len(np.unique(img.reshape(-1, 3), axis=0)) == 1
        assert any((img == f).all() for f, ft in zip(full.images, full.targets) if ft == t)
    again = build_dataset(cfg, "train")
    np.testing.assert_array_equal(ds.images, again.images)
    assert isinstance(again.images, np.memmap)


def test_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    dump(root / "train", {b"data": chw_rows([(1, 2, 3), (4, 5, 6)]), b"fine_labels": [99, 0],
                          b"coarse_labels": [19, 0]})
    dump(root / "test", {b"data": chw_rows([(9, 9, 9)]), b"fine_labels": [42], b"coarse_labels": [1]})
    dump(root / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                         b"coarse_label_names": [b"x"] * 20})
    cfg = DataConfig(source="cifar100", root=str(root), cache_dir="")
    train = build_dataset(cfg, "train")
    assert train.num_classes == 100 and train.classes[99] == "c99"
    assert train.targets.tolist() == [99, 0] and train.images[0, 0, 0].tolist() == [1, 2, 3]
    assert build_dataset(cfg, "test").targets.tolist() == [42]


def test_cifar_errors(cifar10, tmp_path):
    with pytest.raises(TaglessError, match="cifar10 folder not found"):
        build_dataset(DataConfig(source="cifar10", root=str(tmp_path / "nope")), "train")
    (cifar10 / "data_batch_3").unlink()
    with pytest.raises(TaglessError, match="data_batch_3"):
        build_dataset(DataConfig(source="cifar10", root=str(cifar10), cache_dir=""), "train")
    dump(cifar10 / "data_batch_3", {b"labels": [1]})
    with pytest.raises(TaglessError, match="missing key 'data'"):
        build_dataset(DataConfig(source="cifar10", root=str(cifar10), cache_dir=""), "train")
