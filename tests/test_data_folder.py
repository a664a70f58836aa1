"""Image folders (class sub-folders, split folders, flat CSV form) and unreadable files."""
import logging

import numpy as np
import pytest
from PIL import Image

from tagless.data import DataConfig, build_dataset
from tagless.errors import TaglessError

COLOURS = {"blue": (10, 20, 230), "green": (5, 200, 40), "red": (220, 15, 25)}


def solid(path, colour, size=(20, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def make_folder(root, per_class=3, ext="png"):
    for name, colour in COLOURS.items():
        for i in range(per_class):
            solid(root / name / f"{i}.{ext}", colour, size=(20 + i, 12 + 2 * i))
    return root


def cfg(root, tmp_path, **kw):
    return DataConfig(source="image_folder", root=str(root), image_size=8,
                      cache_dir=str(tmp_path / "cache"), **kw)


def test_pixels_targets_and_classes(tmp_path):
    root = make_folder(tmp_path / "imgs")
    ds = build_dataset(cfg(root, tmp_path, test_fraction=0.0), "train")
    assert ds.classes == ["blue", "green", "red"] and ds.label_kind == "single"
    assert ds.images.shape == (9, 8, 8, 3) and ds.images.dtype == np.uint8
    assert ds.targets.dtype == np.int64 and sorted(ds.targets) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for img, t, p in zip(ds.images, ds.targets, ds.paths):
        assert f"/{ds.classes[t]}/" in p
        assert (img == np.array(COLOURS[ds.classes[t]], np.uint8)).all()


def test_jpeg_and_extensions(tmp_path):
    root = tmp_path / "imgs"
    solid(root / "a" / "x.JPG", (200, 100, 50))
    solid(root / "a" / "y.jpeg", (200, 100, 50))
    solid(root / "b" / "z.bmp", (0, 0, 255))
    solid(root / "b" / "w.webp", (0, 0, 255))
    (root / "b" / "notes.txt").write_text("not an image")
    ds = build_dataset(cfg(root, tmp_path, test_fraction=0.0), "train")
    assert len(ds) == 4
    a = ds.images[ds.targets == 0].astype(int)
    assert np.abs(a - np.array([200, 100, 50])).max() <= 4  # JPEG is lossy


def test_seeded_split_and_split_folders(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=4)
    train = build_dataset(cfg(root, tmp_path, test_fraction=0.25), "train")
    test = build_dataset(cfg(root, tmp_path, test_fraction=0.25), "test")
    assert (len(train), len(test)) == (9, 3) and not set(train.paths) & set(test.paths)
    other = build_dataset(cfg(root, tmp_path, test_fraction=0.25, split_seed=7), "test")
    assert set(other.paths) != set(test.paths)

    split_root = tmp_path / "split"
    make_folder(split_root / "train", per_class=2)
    solid(split_root / "val" / "green" / "v.png", COLOURS["green"])
    train = build_dataset(cfg(split_root, tmp_path), "train")
    test = build_dataset(cfg(split_root, tmp_path), "test")
    both = build_dataset(cfg(split_root, tmp_path), "all")
    assert (len(train), len(test), len(both)) == (6, 1, 7)
    assert test.classes == train.classes == ["blue", "green", "red"]
    assert test.targets.tolist() == [1]


def test_flat_form_with_csv(tmp_path):
    root = tmp_path / "flat"
    solid(root / "one.png", (255, 0, 0))
    solid(root / "sub" / "two.png", (0, 255, 0))
    solid(root / "three.png", (0, 0, 255))
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("path,labels\none.png,cat\nsub/two.png,dog\nthree.png,\n")
    ds = build_dataset(cfg(root, tmp_path, csv_path=str(csv_file), test_fraction=0.0), "train")
    assert ds.label_kind == "single" and ds.classes == ["cat", "dog"]
    assert ds.targets.tolist() == [0, 1, -1]
    assert ds.images[1, 0, 0].tolist() == [0, 255, 0]


def test_class_list(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    ds = build_dataset(cfg(root, tmp_path, classes=["red", "green", "blue", "extra"], test_fraction=0.0), "train")
    assert ds.classes == ["red", "green", "blue", "extra"]
    assert {ds.classes[t] for t in ds.targets} == {"red", "green", "blue"}
    with pytest.raises(TaglessError, match="red"):
        build_dataset(cfg(root, tmp_path, classes=["blue", "green"]), "train")


def test_corrupt_images_skipped_with_count(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs", per_class=3)
    png = (root / "green" / "1.png").read_bytes()
    (root / "green" / "1.png").write_bytes(png[: len(png) // 2])  # truncated
    (root / "red" / "bad.jpg").write_text("this is not a jpeg")
    with caplog.at_level(logging.WARNING, logger="tagless.data"):
        ds = build_dataset(cfg(root, tmp_path, test_fraction=0.0), "train")
    assert len(ds) == 8 and len(ds.targets) == len(ds.paths) == 8
    assert str(root / "green" / "1.png") not in ds.paths
    assert "skipped 2 of 10 images" in caplog.text
    assert "green/1.png" in caplog.text and "red/bad.jpg" in caplog.text
    for img, t in zip(ds.images, ds.targets):  # rows stay aligned with targets
        assert (img == np.array(COLOURS[ds.classes[t]], np.uint8)).all()
    with pytest.raises(TaglessError, match="bad.jpg|1.png"):
        build_dataset(cfg(root, tmp_path, test_fraction=0.0, on_corrupt="fail"), "train")


def test_all_unreadable_is_an_error(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(TaglessError, match="none of the 1 images"):
        build_dataset(cfg(tmp_path / "imgs", tmp_path, test_fraction=0.0), "train")


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(TaglessError, match="nowhere"):
        build_dataset(cfg(tmp_path / "nowhere", tmp_path), "train")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(TaglessError, match="no images"):
        build_dataset(cfg(tmp_path / "empty", tmp_path), "train")
    (tmp_path / "noclass").mkdir()
    with pytest.raises(TaglessError, match="no class folders"):
        build_dataset(cfg(tmp_path / "noclass", tmp_path), "train")
    with pytest.raises(TaglessError, match="data.root is empty"):
        build_dataset(DataConfig(source="image_folder"), "train")


def test_only_train_folder_is_splits_with_carved_test(tmp_path):
    root = tmp_path / "only_train"
    make_folder(root / "train", per_class=4)
    c = cfg(root, tmp_path, test_fraction=0.25, split_seed=3)
    train, test, both = (build_dataset(c, s) for s in ("train", "test", "all"))
    assert train.classes == test.classes == ["blue", "green", "red"]  # not one class "train"
    assert (len(train), len(test), len(both)) == (9, 3, 12)
    assert sorted(train.paths + test.paths) == sorted(both.paths)
    from tagless.data.splits import split_indices

    expected = sorted(both.paths[i] for i in split_indices(12, "test", 0.25, 3))
    assert sorted(test.paths) == expected  # carved out by the seeded split, reproducibly
    assert build_dataset(c, "test").paths == test.paths
    other = build_dataset(cfg(root, tmp_path, test_fraction=0.25, split_seed=4), "test")
    assert set(other.paths) != set(test.paths)
    for ds in (train, test):
        for img, t, p in zip(ds.images, ds.targets, ds.paths):
            assert f"/train/{ds.classes[t]}/" in p
            assert (img == np.array(COLOURS[ds.classes[t]], np.uint8)).all()
    note = "the test split is carved out of train/ with data.test_fraction=0.25 (seed data.split_seed=3)"
    assert any(note in n for n in train.notes) and test.notes == train.notes


def test_train_and_val_without_test(tmp_path):
    root = tmp_path / "tv"
    make_folder(root / "train", per_class=2)
    solid(root / "val" / "green" / "v.png", COLOURS["green"])
    solid(root / "val" / "purple" / "p.png", (120, 0, 120))  # a class only in val/
    train, test = build_dataset(cfg(root, tmp_path), "train"), build_dataset(cfg(root, tmp_path), "test")
    assert train.classes == test.classes == ["blue", "green", "purple", "red"]
    assert (len(train), len(test)) == (6, 2) and sorted(test.targets.tolist()) == [1, 2]
    assert train.notes == test.notes == ["no test/ folder: val/ is the test split"]
    solid(root / "test" / "red" / "t.png", COLOURS["red"])  # test/ wins over val/, no note
    test = build_dataset(cfg(root, tmp_path), "test")
    assert test.classes == ["blue", "green", "red"]  # val/ is not read then
    assert test.targets.tolist() == [2] and test.notes == []


def test_train_next_to_class_folders_stays_a_class(tmp_path):
    root = make_folder(tmp_path / "mixed", per_class=1)
    solid(root / "train" / "x.png", (1, 2, 3))
    ds = build_dataset(cfg(root, tmp_path, test_fraction=0.0), "train")
    assert ds.classes == ["blue", "green", "red", "train"] and ds.notes == []
    solid(tmp_path / "flat_train" / "train" / "x.png", (1, 2, 3))  # images, no class folders
    with pytest.raises(TaglessError, match="no class folders under .*flat_train/train"):
        build_dataset(cfg(tmp_path / "flat_train", tmp_path), "train")
