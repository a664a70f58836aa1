"""The imbalanced training splits of paper 002's Sec. 4.5 (light / heavy), and class_keep."""

import numpy as np
import pytest

from tagless.data import DataConfig, build_dataset
from tagless.errors import TaglessError


def counts(**kw):
    return np.bincount(build_dataset(DataConfig(source="digits", image_size=8, **kw), "train").targets, minlength=10)


def test_light_and_heavy_keep_the_stated_shares_of_the_train_split():
    full = counts()
    np.testing.assert_array_equal(counts(imbalance="light"), np.r_[full[:9], round(0.5 * full[9])])
    heavy = counts(imbalance="heavy")
    np.testing.assert_array_equal(heavy, [round((1 - 0.1 * c) * full[c]) for c in range(10)])
    assert (np.diff(heavy) < 0).all()
    keep = [1.0, 0.0] + [0.3] * 8
    np.testing.assert_array_equal(counts(class_keep=keep), [round(f * n) for f, n in zip(keep, full)])


def test_seeded_test_split_untouched_and_errors():
    a = build_dataset(DataConfig(source="digits", image_size=8, imbalance="heavy"), "train")
    b = build_dataset(DataConfig(source="digits", image_size=8, imbalance="heavy"), "train")
    assert np.array_equal(a.images, b.images)
    t1 = build_dataset(DataConfig(source="digits", image_size=8, imbalance="heavy"), "test")
    t0 = build_dataset(DataConfig(source="digits", image_size=8), "test")
    assert np.array_equal(t1.targets, t0.targets)
    with pytest.raises(TaglessError, match="class_keep has 3 fractions for 10 classes"):
        counts(class_keep=[0.5, 0.5, 0.5])
    with pytest.raises(TaglessError, match="imbalance must be one of"):
        counts(imbalance="extreme")
    with pytest.raises(TaglessError, match="need single labels"):
        build_dataset(DataConfig(source="digit_scenes", image_size=16, scene_count=50, imbalance="light"), "train")
