"""The decoded-image cache: reuse without decoding, invalidation, atomic writes."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from tagless.data import DataConfig, ImageDataset, build_dataset
from tagless.data import decode as decode_mod


def make_folder(root, n=4):
    for i in range(n):
        for name, colour in (("a", (i * 10, 0, 0)), ("b", (0, i * 10, 0))):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 10), colour).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = decode_mod.decode_image

    def counting(path, size, *limit):
        calls.append(path)
        return real(path, size, *limit)

    monkeypatch.setattr(decode_mod, "decode_image", counting)
    return calls


def entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_second_build_reuses_cache(tmp_path, count_decodes):
    root = make_folder(tmp_path / "imgs")
    cfg = DataConfig(source="image_folder", root=str(root), image_size=6,
                     cache_dir=str(tmp_path / "cache"), test_fraction=0.0)
    first = build_dataset(cfg, "train")
    assert len(count_decodes) == 8
    second = build_dataset(cfg, "train")
    assert len(count_decodes) == 8, "cache hit must not decode"
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.targets, second.targets)
    assert first.paths == second.paths and first.classes == second.classes
    (entry,) = entries(tmp_path / "cache")
    manifest = json.loads((tmp_path / "cache" / entry / "manifest.json").read_text())
    assert manifest["count"] == 8 and manifest["format"].startswith("tagless-data-cache")
    np.load(tmp_path / "cache" / entry / "meta.npz", allow_pickle=False)["targets"]

    build_dataset(DataConfig(**{**cfg.__dict__, "image_size": 5}), "train")
    assert len(count_decodes) == 16 and len(entries(tmp_path / "cache")) == 2

    img = root / "a" / "1.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(img)
    os.utime(img, ns=(1, 1))  # a changed file gets a new key
    third = build_dataset(cfg, "train")
    assert len(count_decodes) == 24
    assert third.images[third.paths.index(str(img))][0, 0].tolist() == [1, 2, 3]


def test_interrupted_build_leaves_no_entry(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs")
    cfg = DataConfig(source="image_folder", root=str(root), image_size=6,
                     cache_dir=str(tmp_path / "cache"), test_fraction=0.0)
    real, calls = decode_mod.decode_image, []

    def interrupted(path, size, *limit):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, size, *limit)

    monkeypatch.setattr(decode_mod, "decode_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg, "train")
    assert entries(tmp_path / "cache") == []
    monkeypatch.setattr(decode_mod, "decode_image", real)
    assert len(build_dataset(cfg, "train")) == 8


def test_damaged_entry_is_rebuilt(tmp_path, count_decodes):
    root = make_folder(tmp_path / "imgs")
    cfg = DataConfig(source="image_folder", root=str(root), image_size=6,
                     cache_dir=str(tmp_path / "cache"), test_fraction=0.0)
    build_dataset(cfg, "train")
    (entry,) = entries(tmp_path / "cache")
    (tmp_path / "cache" / entry / "meta.npz").write_bytes(b"garbage")
    ds = build_dataset(cfg, "train")
    assert len(ds) == 8 and len(count_decodes) == 16


def test_cache_disabled_and_many_files_threaded(tmp_path, count_decodes):
    root = make_folder(tmp_path / "imgs", n=20)  # 40 files: decoded on a thread pool
    cfg = DataConfig(source="image_folder", root=str(root), image_size=4, cache_dir="",
                     test_fraction=0.0, decode_workers=3)
    ds = build_dataset(cfg, "train")
    assert len(ds) == 40 and not isinstance(ds.images, np.memmap) and len(count_decodes) == 40
    for img, p in zip(ds.images, ds.paths):
        i = int(os.path.basename(p)[:-4])
        expected = [i * 10, 0, 0] if "/a/" in p else [0, i * 10, 0]
        assert img[0, 0].tolist() == expected
    assert not (tmp_path / ".cache").exists()


def test_skipped_files_are_cached_and_reported(tmp_path, caplog, count_decodes):
    root = make_folder(tmp_path / "imgs")
    (root / "a" / "2.png").write_bytes(b"broken")
    cfg = DataConfig(source="image_folder", root=str(root), image_size=6,
                     cache_dir=str(tmp_path / "cache"), test_fraction=0.0)
    assert len(build_dataset(cfg, "train")) == 7
    caplog.clear()
    again = build_dataset(cfg, "train")
    assert len(again) == 7 and len(count_decodes) == 8  # 7 good + 1 broken, once
    assert "1 of 8 images were skipped" in caplog.text


def test_subset():
    ds = ImageDataset(images=np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3),
                      targets=np.array([0, 1, 2, 3]), classes=list("abcd"), label_kind="single",
                      boxes=[np.zeros((i, 5), np.float32) for i in range(4)],
                      paths=["p0", "p1", "p2", "p3"], name="t",
                      extras={"flag": [np.ones(i, bool) for i in range(4)], "w": np.arange(4.0)})
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub.targets.tolist() == [3, 1] and sub.paths == ["p3", "p1"]
    assert [len(b) for b in sub.boxes] == [3, 1] and sub.extras["w"].tolist() == [3.0, 1.0]
    np.testing.assert_array_equal(sub.images[0], ds.images[3])
    mask = ds.subset(np.array([True, False, True, False]))
    assert mask.targets.tolist() == [0, 2] and mask.num_classes == 4
    with pytest.raises(ValueError):
        ImageDataset(images=ds.images, targets=ds.targets[:2], classes=[], label_kind="single")
