"""Label modes (full / partial / single-positive splits) against NumPy counts, a written-out
copy of Cole's observation loop, and binomial / chi-square tolerances."""
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from tagless.data.dataset import ImageDataset
from tagless.data.label_modes import (
    LabelsConfig,
    build_label_split,
    label_statistics,
    load_label_split,
    resolve_label_split,
    save_label_split,
    split_dataset,
)
from tagless.errors import TaglessError


def random_targets(n=600, c=8, p=0.3, seed=0, unknown=0.0):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, c)) < p).astype(np.int8)
    if unknown:
        t[rng.random((n, c)) < unknown] = -1
    t[:5] = 0  # a few images without any positive
    return t


@pytest.mark.parametrize("kw, what", [
    ({"mode": "weak"}, "labels.mode"),
    ({"mode": "partial", "keep_fraction": 0.0}, "keep_fraction"),
    ({"mode": "partial", "keep_fraction": 1.5}, "keep_fraction"),
    ({"mode": "single_positive", "keep_fraction": 0.5}, "keep_fraction"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"val_fraction": -0.1}, "val_fraction"),
])
def test_config_validate(kw, what):
    with pytest.raises(TaglessError, match=what):
        LabelsConfig(**kw).validate()
    LabelsConfig(mode="partial", keep_fraction=0.4, val_fraction=0.2).validate()


def test_bad_targets():
    with pytest.raises(TaglessError, match="N x C"):
        build_label_split(np.arange(5), LabelsConfig())
    with pytest.raises(TaglessError, match="1 .positive"):
        build_label_split(np.full((3, 2), 2), LabelsConfig())


@pytest.mark.parametrize("mode, keep", [("single_positive", 1.0), ("partial", 0.5)])
def test_same_seed_same_split_other_seed_differs(mode, keep):
    t = random_targets()
    a = build_label_split(t, LabelsConfig(mode=mode, keep_fraction=keep, seed=3, val_fraction=0.2))
    b = build_label_split(t, LabelsConfig(mode=mode, keep_fraction=keep, seed=3, val_fraction=0.2))
    c = build_label_split(t, LabelsConfig(mode=mode, keep_fraction=keep, seed=4, val_fraction=0.2))
    for field in ("train_index", "val_index", "observed", "full"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.val_index, c.val_index)
    d = build_label_split(t, LabelsConfig(mode=mode, keep_fraction=keep, seed=4))  # no carve-out
    e = build_label_split(t, LabelsConfig(mode=mode, keep_fraction=keep, seed=3))
    assert not np.array_equal(d.observed, e.observed)


def test_single_positive_one_true_positive_per_image():
    t = random_targets(unknown=0.05)
    s = build_label_split(t, LabelsConfig(mode="single_positive", seed=1))
    full, obs = t[s.train_index], s.observed
    has = (full == 1).any(1)
    assert ((obs == 1).sum(1) == has.astype(int)).all()  # one where there is a positive, else none
    assert (full[obs == 1] == 1).all()  # always a true positive
    assert set(np.unique(obs)) <= {-1, 1}  # no observed negatives
    assert (obs[~has] == -1).all() and (~has).sum() >= 5  # positive-free images kept, all unknown
    assert s.label_kind == "single_positive" and s.observed.dtype == np.int8


def test_single_positive_uniform_choice():
    # class-balanced: every image has the same 4 positives out of 6 classes
    n = 4000
    t = np.zeros((n, 6), np.int8)
    t[:, [0, 2, 3, 5]] = 1
    s = build_label_split(t, LabelsConfig(mode="single_positive", seed=7))
    counts = (s.observed == 1).sum(0)[[0, 2, 3, 5]]
    assert counts.sum() == n
    assert chisquare(counts).pvalue > 1e-3  # uniform over the 4 positives
    # mixed sizes: among images with k positives each of them is chosen ~ 1/k of the time
    rng = np.random.default_rng(1)
    t = (rng.random((3000, 5)) < 0.5).astype(np.int8)
    s = build_label_split(t, LabelsConfig(mode="single_positive", seed=2))
    rows = t.sum(1) == 3
    chosen_rank = [int(np.flatnonzero(np.flatnonzero(r == 1) == np.flatnonzero(o == 1)[0])[0])
                   for r, o in zip(t[rows], s.observed[rows])]
    assert chisquare(np.bincount(chosen_rank, minlength=3)).pvalue > 1e-3


def test_single_positive_follows_coles_procedure():
    """Cole's generate_observed_labels.py, written out: labels to +-1, RandomState(seed),
    per image shuffle the positive indices (keep the first), then the negative ones."""
    t = random_targets(n=200, c=6, seed=5)
    rng = np.random.RandomState(1200)
    expected = np.zeros(t.shape, np.int8)
    for i in range(len(t)):
        pos = [j for j in range(t.shape[1]) if t[i, j] == 1]
        neg = [j for j in range(t.shape[1]) if t[i, j] != 1]
        pos, neg = np.array(pos, dtype=np.int64), np.array(neg, dtype=np.int64)
        rng.shuffle(pos)
        rng.shuffle(neg)
        if len(pos):
            expected[i, pos[0]] = 1
    s = build_label_split(t, LabelsConfig(mode="single_positive", seed=1200, val_fraction=0.2))
    np.testing.assert_array_equal(s.observed == 1, expected[s.train_index] == 1)
    # Cole's generate_split: RandomState(1200).permutation, the last round(0.2 n) are val
    perm = np.random.RandomState(1200).permutation(200)
    np.testing.assert_array_equal(s.val_index, np.sort(perm[-40:]))


@pytest.mark.parametrize("keep", [0.75, 0.4])
def test_partial_keeps_fraction_and_one_per_image(keep):
    t = random_targets(n=1500, c=10, p=0.35, seed=2, unknown=0.03)
    s = build_label_split(t, LabelsConfig(mode="partial", keep_fraction=keep, seed=0))
    full, obs = s.full, s.observed
    np.testing.assert_array_equal(full, t[s.train_index])
    n_pos = int((full == 1).sum())
    kept = int((obs == 1).sum())
    sigma = math.sqrt(n_pos * keep * (1 - keep))
    assert abs(kept - keep * n_pos) <= 3 * sigma + 1
    has = (full == 1).any(1)
    assert ((obs == 1).sum(1)[has] >= 1).all() and not (obs[~has] == 1).any()
    assert (full[obs == 1] == 1).all()  # never invents a positive
    assert set(np.unique(obs)) <= {-1, 1}
    # the kept positives are spread over the classes: each class keeps about `keep` of its own
    per_class = (obs == 1).sum(0) / (full == 1).sum(0)
    assert np.abs(per_class - keep).max() < 0.12


def test_partial_below_one_per_image_keeps_one_each():
    t = np.ones((50, 4), np.int8)  # 200 positives, 50 images: 10% asks for less than one each
    s = build_label_split(t, LabelsConfig(mode="partial", keep_fraction=0.1))
    assert ((s.observed == 1).sum(1) == 1).all()


def test_full_mode_leaves_targets():
    t = random_targets(unknown=0.1)
    s = build_label_split(t, LabelsConfig(mode="full", val_fraction=0.25, seed=9))
    np.testing.assert_array_equal(s.observed, t[s.train_index])
    assert s.label_kind == "multi"


@pytest.mark.parametrize("n, frac", [(600, 0.2), (101, 0.33), (50, 0.0)])
def test_val_carve_out(n, frac):
    t = random_targets(n=n)
    s = build_label_split(t, LabelsConfig(mode="single_positive", val_fraction=frac, seed=11))
    assert len(s.val_index) == round(frac * n)
    assert len(np.intersect1d(s.train_index, s.val_index)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([s.train_index, s.val_index])), np.arange(n))
    assert (np.diff(s.train_index) > 0).all() and s.observed.shape == (n - round(frac * n), t.shape[1])
    # an image's observed label does not depend on the carve-out
    whole = build_label_split(t, LabelsConfig(mode="single_positive", seed=11))
    np.testing.assert_array_equal(s.observed, whole.observed[s.train_index])


def test_save_load_round_trip_and_mismatch(tmp_path):
    t = random_targets()
    cfg = LabelsConfig(mode="partial", keep_fraction=0.4, seed=5, val_fraction=0.2)
    s = build_label_split(t, cfg)
    path = save_label_split(s, tmp_path / "splits" / "coco_40")  # no .npz suffix added
    assert path.is_file() and path.name == "coco_40"
    back = load_label_split(path, t)
    for field in ("train_index", "val_index", "observed", "full"):
        np.testing.assert_array_equal(getattr(back, field), getattr(s, field))
    assert (back.mode, back.keep_fraction, back.seed, back.val_fraction) == ("partial", 0.4, 5, 0.2)
    cfg.split_file = str(path)
    np.testing.assert_array_equal(resolve_label_split(t, cfg).observed, s.observed)
    with pytest.raises(TaglessError, match="coco_40.*600 images x 8 classes.*599 x 8"):
        load_label_split(path, t[:-1])
    with pytest.raises(TaglessError, match="coco_40.*x 7"):
        load_label_split(path, t[:, :-1])
    changed = t.copy()
    changed[s.train_index[np.flatnonzero(s.observed == 1)[0] // t.shape[1]]] = 0
    with pytest.raises(TaglessError, match="coco_40.*do not fit"):
        load_label_split(path, changed)
    with pytest.raises(TaglessError, match="not found"):
        load_label_split(tmp_path / "missing.npz", t)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TaglessError, match="junk.npz: not a tagless label split"):
        load_label_split(tmp_path / "junk.npz", t)
    with pytest.raises(TaglessError, match="holds a partial split"):
        resolve_label_split(t, LabelsConfig(mode="single_positive", split_file=str(path)))


def test_statistics_against_numpy():
    t = random_targets(n=400, c=5, seed=3, unknown=0.05)
    s = build_label_split(t, LabelsConfig(mode="single_positive", seed=2, val_fraction=0.25))
    rows = label_statistics(s, list("abcde"))
    full = t[s.train_index]
    assert rows[0]["class"] == "all classes" and [r["class"] for r in rows[1:]] == list("abcde")
    pos = np.count_nonzero(full == 1, axis=0)
    obs = np.count_nonzero(s.observed == 1, axis=0)
    for j, r in enumerate(rows[1:]):
        assert (r["positives"], r["observed"]) == (pos[j], obs[j])
        assert r["kept (%)"] == pytest.approx(100 * obs[j] / pos[j])
    total = rows[0]
    assert (total["positives"] == np.count_nonzero(full == 1)
            and total["observed"] == np.count_nonzero(full == 1, axis=1).clip(max=1).sum())
    assert total["kept (%)"] == pytest.approx(100 * total["observed"] / total["positives"])
    assert total["images"] == 300
    assert total["positives/image"] == pytest.approx((full == 1).sum(1).mean())
    assert total["observed/image"] == pytest.approx((full == 1).any(1).mean())  # one each where there is one
    with pytest.raises(TaglessError, match="class names"):
        label_statistics(s, ["a"])


def test_split_dataset():
    t = random_targets(n=40, c=3)
    ds = ImageDataset(images=np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(3, 3), targets=t,
                      classes=list("xyz"), label_kind="multi")
    s = build_label_split(t, LabelsConfig(mode="single_positive", val_fraction=0.25))
    train, val = split_dataset(ds, s)
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], s.train_index)
    np.testing.assert_array_equal(train.targets, s.observed)
    assert train.label_kind == "single_positive" and val.label_kind == "multi"
    np.testing.assert_array_equal(val.targets, t[s.val_index])
    with pytest.raises(TaglessError, match="40 images"):
        split_dataset(ds.subset(np.arange(30)), s)


def test_clean_targets_are_the_training_rows_full_labels(tmp_path):
    """engine.label_setup.clean_targets: the labels the label mode hid, row for row with the
    observed labels the method trains on (also after --resume reloads the split); None
    without a split."""
    from types import SimpleNamespace

    import torch

    from tagless.engine.label_setup import clean_targets, prepare_labels

    t = random_targets(n=40, c=3)
    ds = ImageDataset(images=np.zeros((40, 1, 1, 3), np.uint8), targets=t, classes=list("xyz"), label_kind="multi")
    labels = LabelsConfig(mode="single_positive", val_fraction=0.25)
    cfg = SimpleNamespace(labels=labels, data=SimpleNamespace(source="test"))
    for resume in (False, True):
        train, _, split = prepare_labels(cfg, ds, tmp_path, resume=resume)
        clean = clean_targets(split)
        assert clean.dtype == torch.int8 and clean.shape == (30, 3)
        np.testing.assert_array_equal(clean.numpy(), t[split.train_index])
        assert ((train.targets == 1) <= (clean.numpy() == 1)).all()  # the observed positives are true ones
        assert ((train.targets == -1) & (clean.numpy() == 1)).any()  # and some positives were hidden
    plain = SimpleNamespace(labels=LabelsConfig(), data=SimpleNamespace(source="test"))
    assert prepare_labels(plain, ds, tmp_path / "other", resume=False)[2] is None and clean_targets(None) is None
