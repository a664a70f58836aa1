"""The on-disk feature cache of ``tagless eval``: a hit while checkpoint, data and layer are
unchanged; a recomputation when any of them changes or the cache file is damaged.

Hits and misses are counted by wrapping ``tagless.engine.checkpoint_features.compute_features`` (the
only place features are computed), so the tests see what was computed, not only the result.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

import tagless.engine.checkpoint_features as features
from tagless.checkpoint import FORMAT, save_atomic
from tagless.data import DataConfig
from tagless.engine.checkpoint_features import dataset_features, load_backbone
from tagless.models import build_backbone

KWARGS = {"stem": "cifar", "width": 0.125, "zero_init_residual": False}


def write_checkpoint(path, seed: int, step: int, data: DataConfig) -> None:
    """A real (tiny) tagless checkpoint of a randomly initialised ResNet-18, like the trainer's."""
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", **KWARGS)
    save_atomic({"format": FORMAT, "backbone": backbone.state_dict(), "backbone_name": "resnet18",
                 "backbone_kwargs": dict(KWARGS), "step": step,
                 "config": {"views": {"global_size": 16}, "data": dataclasses.asdict(data)}}, path)


def bump_mtime(path, seconds: int = 10) -> None:
    """Move the modification time clearly forward: a rewrite within the file system's
    timestamp granularity may otherwise keep the same ``st_mtime_ns``."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


@pytest.fixture
def calls(monkeypatch):
    """Counts the extractor calls of ``dataset_features``."""
    count = {"n": 0}
    real = features.compute_features

    def counting(*args, **kwargs):
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "compute_features", counting)
    return count


@pytest.fixture
def setup(tmp_path):
    data = DataConfig(source="digits", image_size=16, limit=40, cache_dir=str(tmp_path / "cache"))
    ckpt = tmp_path / "ckpt" / "last.pt"
    write_checkpoint(ckpt, seed=0, step=0, data=data)
    return ckpt, data


def features_of(ckpt, data, split="train", layer=None, **kw):
    x, _ds = dataset_features(load_backbone(ckpt), data, split, layer=layer, **kw)
    return x


def test_second_identical_call_hits_the_cache(setup, calls):
    ckpt, data = setup
    first = features_of(ckpt, data)
    assert calls["n"] == 1
    assert first.shape[0] == 40 and first.dtype == np.float32
    assert len(list((ckpt.parent.parent / "cache" / "features").glob("*.npz"))) == 1
    again = features_of(ckpt, data)  # a fresh load_backbone of the same file
    assert calls["n"] == 1, "an identical request recomputed instead of reading the cache"
    np.testing.assert_array_equal(again, first)


def test_a_rewritten_checkpoint_is_recomputed(setup, calls):
    ckpt, data = setup
    before = features_of(ckpt, data)
    assert calls["n"] == 1
    write_checkpoint(ckpt, seed=1, step=5, data=data)  # new weights, new step
    bump_mtime(ckpt)  # a new mtime even where the clock is coarser than the two writes
    after = features_of(ckpt, data)
    assert calls["n"] == 2, "features of the old checkpoint were served for the new one"
    assert after.shape == before.shape and not np.allclose(after, before)
    features_of(ckpt, data)
    assert calls["n"] == 2  # the new checkpoint's features are cached in turn


def test_a_touched_checkpoint_is_recomputed(setup, calls):
    """Same bytes, same step, only a newer mtime (e.g. copied over by rsync): the cache
    cannot know the weights are equal, so it must recompute."""
    ckpt, data = setup
    before = features_of(ckpt, data)
    bump_mtime(ckpt)
    after = features_of(ckpt, data)
    assert calls["n"] == 2
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("change", [{"limit": 30}, {"image_size": 12}, {"split_seed": 1}, {"source": "digit_scenes"}],
                         ids=lambda c: next(iter(c)))
def test_changed_data_is_recomputed(setup, calls, change):
    ckpt, data = setup
    before = features_of(ckpt, data)
    other = dataclasses.replace(data, **change, **({"scene_count": 50} if "source" in change else {}))
    after = features_of(ckpt, other)
    assert calls["n"] == 2, f"{change} served the features of the old data"
    if "limit" in change:
        assert after.shape[0] == 30
    else:
        assert after.shape != before.shape or not np.array_equal(after, before)
    features_of(ckpt, data)  # the original entry is still there
    assert calls["n"] == 2


def test_another_split_is_recomputed(setup, calls):
    ckpt, data = setup
    train = features_of(ckpt, data, "train")
    test = features_of(ckpt, data, "test")
    assert calls["n"] == 2
    assert not np.array_equal(train, test)
    features_of(ckpt, data, "test")
    assert calls["n"] == 2


def test_another_layer_or_pooling_is_recomputed(setup, calls):
    ckpt, data = setup
    pooled = features_of(ckpt, data)
    layer1 = features_of(ckpt, data, layer="layer1", pool_dim=256)
    assert calls["n"] == 2 and layer1.shape[1] != pooled.shape[1]
    features_of(ckpt, data, layer="layer2", pool_dim=256)
    assert calls["n"] == 3
    features_of(ckpt, data, layer="layer1", pool_dim=64)
    assert calls["n"] == 4
    features_of(ckpt, data, layer="layer1", pool_dim=256, pool_mode="avg")
    assert calls["n"] == 5
    again = features_of(ckpt, data, layer="layer1", pool_dim=256)
    assert calls["n"] == 5
    np.testing.assert_array_equal(again, layer1)


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the array's data: the zip CRC no longer matches
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [
    pytest.param(truncate, id="truncated"),
    pytest.param(flip_a_byte, id="flipped-byte"),
    pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    pytest.param(lambda p: p.write_bytes(b"not an npz file at all"), id="garbage"),
    pytest.param(lambda p: np.savez(p, y=np.zeros(3)), id="no-x"),
    pytest.param(lambda p: np.savez(p, x=np.zeros((7, 4), np.float32)), id="wrong-rows"),
    pytest.param(lambda p: np.savez(p, x=np.float32(0)), id="scalar-x"),
    pytest.param(lambda p: np.savez(p, x=np.zeros(40, np.float32)), id="1d-x"),
])
def test_a_damaged_cache_file_is_recomputed(setup, calls, damage):
    ckpt, data = setup
    first = features_of(ckpt, data)
    (entry,) = (ckpt.parent.parent / "cache" / "features").glob("*.npz")
    damage(entry)
    again = features_of(ckpt, data)
    assert calls["n"] == 2
    np.testing.assert_array_equal(again, first)
    features_of(ckpt, data)  # the damaged entry was replaced by a good one
    assert calls["n"] == 2


def test_no_cache_dir_always_computes(setup, calls):
    ckpt, data = setup
    nocache = dataclasses.replace(data, cache_dir="")
    features_of(ckpt, nocache)
    features_of(ckpt, nocache)
    assert calls["n"] == 2
