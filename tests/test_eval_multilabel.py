"""Multi-label metrics against scikit-learn and hand-computed cases."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

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


def test_object_size_buckets_and_map_hand_built():
    # 640 x 640 images so COCO thresholds apply as is: small < 1024 <= medium < 9216 <= large
    targets = torch.tensor([[1, 1, 0],
                            [1, 0, 1],
                            [0, 1, 1],
                            [1, 0, 0]])
    boxes = [
        np.array([[0, 0, 10, 10, 0], [0, 0, 200, 200, 0], [0, 0, 50, 50, 1]]),  # c0 large (max), c1 medium
        np.array([[0, 0, 20, 20, 0], [0, 0, 40, 40, 2]]),                        # c0 small, c2 medium
        np.array([[0, 0, 100, 100, 1], [0, 0, 5, 5, 2], [0, 0, 30, 30, 0]]),     # c1 large, c2 small, c0 box of a negative
        None,                                                                    # c0 positive without a box
    ]
    bucket, names, edges = object_size_buckets(targets, boxes, 640)
    assert names == ["small", "medium", "large"]
    expected = torch.tensor([[2, 1, -1],
                             [0, -1, 1],
                             [-1, 2, 0],
                             [-1, -1, -1]])
    torch.testing.assert_close(bucket, expected)
    # at 320 px the same relative sizes give the same buckets
    torch.testing.assert_close(object_size_buckets(targets, [None if b is None else b * [.5, .5, .5, .5, 1]
                                                             for b in boxes], 320)[0], expected)
    scores = torch.tensor([[0.9, 0.2, 0.5],
                           [0.3, 0.4, 0.6],
                           [0.5, 0.8, 0.1],
                           [0.7, 0.1, 0.3]])
    out = map_by_object_size(scores, targets, boxes, 640)
    # small: c0 positive row1 (0.3) vs negatives row2 (0.5) -> AP 1/2; c2 positive row2 (0.1) vs
    # negatives rows 0, 3 (0.5, 0.3) -> AP 1/3
    assert out["small"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # medium: c1 row0 (0.2) vs negatives rows 1, 3 (0.4, 0.1) -> 1/2; c2 row1 (0.6) vs 0.5, 0.3 -> 1
    assert out["medium"] == pytest.approx((1 / 2 + 1) / 2)
    # large: c0 row0 (0.9) -> 1; c1 row2 (0.8) -> 1
    assert out["large"] == pytest.approx(1.0)
    # manual check of the definition with the generic AP on masked targets
    for i, name in enumerate(names):
        masked = torch.where(bucket == i, 1, torch.where(targets == 0, 0, -1))
        assert out[name] == pytest.approx(map_class(scores, masked))


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
