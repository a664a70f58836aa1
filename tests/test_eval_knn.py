"""kNN parity: scikit-learn for the majority vote, a brute-force loop for the weighted vote."""

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from tagless.errors import TaglessError
from tagless.eval import knn_accuracy, knn_multilabel_scores, knn_predict


def _data(n_bank=400, n_query=150, dim=16, classes=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    bank_labels = torch.arange(n_bank) % classes
    query_labels = torch.randint(classes, (n_query,), generator=g)
    bank = centres[bank_labels] + 1.5 * torch.randn(n_bank, dim, generator=g, dtype=torch.float64)
    queries = centres[query_labels] + 1.5 * torch.randn(n_query, dim, generator=g, dtype=torch.float64)
    return bank.to(dtype), bank_labels, queries.to(dtype), query_labels


def _weighted_loop(bank, labels, queries, k, temperature, classes):
    b = bank.numpy() / np.linalg.norm(bank.numpy(), axis=1, keepdims=True)
    preds = []
    for q in queries.numpy():
        s = b @ (q / np.linalg.norm(q))
        nearest = np.argsort(-s, kind="stable")[:k]
        votes = np.zeros(classes)
        for j in nearest:
            votes[labels[j]] += np.exp(s[j] / temperature)
        preds.append(int(np.argmax(votes)))
    return np.array(preds)


@pytest.mark.parametrize("k", [1, 4, 10, 25])
def test_majority_vote_matches_sklearn(k):
    bank, labels, queries, _ = _data()
    ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="uniform", algorithm="brute")
    ref = ref.fit(bank.numpy(), labels.numpy()).predict(queries.numpy())
    pred = knn_predict(bank, labels, queries, k=k, weighted=False)
    assert pred.dtype == torch.int64
    np.testing.assert_array_equal(pred.numpy(), ref)


def test_majority_vote_float32_matches_sklearn():
    bank, labels, queries, _ = _data(dtype=torch.float32, seed=3)
    ref = KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")
    ref = ref.fit(bank.double().numpy(), labels.numpy()).predict(queries.double().numpy())
    pred = knn_predict(bank, labels, queries, k=10, weighted=False)
    assert (pred.numpy() == ref).mean() >= 0.99  # fp32 may flip a near-tie neighbour


def test_majority_ties_go_to_smallest_class():
    # query equidistant to everything: k=4 with two votes each for classes 3 and 1
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    labels = torch.tensor([3, 1, 3, 1])
    query = torch.tensor([[1e-12, 1e-12]])
    pred = knn_predict(bank, labels, query, k=4, weighted=False)
    ref = KNeighborsClassifier(n_neighbors=4, metric="cosine", algorithm="brute").fit(bank.numpy(), labels.numpy())
    assert pred.tolist() == [1] == ref.predict(query.numpy()).tolist()


@pytest.mark.parametrize("k,temperature", [(20, 0.07), (50, 0.1), (5, 1.0)])
def test_weighted_vote_matches_loop(k, temperature):
    bank, labels, queries, _ = _data(seed=1)
    ref = _weighted_loop(bank, labels.numpy(), queries, k, temperature, 5)
    pred = knn_predict(bank, labels, queries, k=k, temperature=temperature)
    np.testing.assert_array_equal(pred.numpy(), ref)


def test_small_temperature_stays_finite():
    bank, labels, queries, _ = _data(seed=2, dtype=torch.float32)
    pred = knn_predict(bank, labels, queries, k=10, temperature=0.001)
    ref = _weighted_loop(bank.double(), labels.numpy(), queries.double(), 1, 1.0, 5)  # ~ nearest neighbour
    assert (pred.numpy() == ref).mean() > 0.95


def test_several_k_in_one_pass_equal_separate_calls():
    bank, labels, queries, _ = _data(seed=4)
    for weighted in (True, False):
        many = knn_predict(bank, labels, queries, k=[5, 20, 1], weighted=weighted)
        assert set(many) == {1, 5, 20}
        for k, pred in many.items():
            torch.testing.assert_close(pred, knn_predict(bank, labels, queries, k=k, weighted=weighted))


def test_chunked_equals_unchunked():
    bank, labels, queries, _ = _data(seed=5, dtype=torch.float32)
    full = knn_predict(bank, labels, queries, k=20, chunk_size=10_000)
    for chunk in (1, 7, 64):
        torch.testing.assert_close(knn_predict(bank, labels, queries, k=20, chunk_size=chunk), full)


def test_accuracy_top1_matches_predict_and_top5_bound():
    bank, labels, queries, qlabels = _data(seed=6)
    acc = knn_accuracy(bank, labels, queries, qlabels, k=20)
    pred = knn_predict(bank, labels, queries, k=20)
    assert acc["top1"] == pytest.approx((pred == qlabels).double().mean().item())
    assert acc["top1"] <= acc["top5"] == 1.0  # 5 classes: top-5 always right
    many = knn_accuracy(bank, labels, queries, qlabels, k=[1, 20], topk=(1, 2))
    assert many[20]["top1"] == acc["top1"] and many[1]["top2"] >= many[1]["top1"]


def test_top2_matches_brute_force():
    bank, labels, queries, qlabels = _data(seed=7, classes=6)
    acc = knn_accuracy(bank, labels, queries, qlabels, k=10, weighted=False, topk=(2,))
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    idx = sims.topk(10, dim=1).indices
    hits = 0
    for row, t in zip(labels[idx].tolist(), qlabels.tolist()):
        votes = np.bincount(row, minlength=6)
        ranking = sorted(range(6), key=lambda c: (-votes[c], c))
        hits += t in ranking[:2]
    assert acc["top2"] == pytest.approx(hits / len(qlabels))


def test_bad_inputs_raise():
    bank, labels, queries, _ = _data()
    with pytest.raises(TaglessError):
        knn_predict(bank, labels, queries, k=len(bank) + 1)
    with pytest.raises(TaglessError):
        knn_predict(bank, labels - 1, queries)
    with pytest.raises(TaglessError):
        knn_predict(bank, labels, queries[:, :3])
    with pytest.raises(TaglessError):
        knn_predict(bank, labels, queries, temperature=0)


def test_default_search_equals_plain_fp32(monkeypatch):
    # the default may prune with certified 16-bit candidates; results must be fp32's
    import tagless.eval.knn as knn

    monkeypatch.setattr(knn, "_CERTIFIED_MIN_WORK", 0)  # use it even on this small bank
    bank, labels, queries, _ = _data(n_bank=3000, n_query=300, dim=64, seed=8, dtype=torch.float32)
    for k in (1, 20, [5, 50]):
        for weighted in (True, False):
            auto = knn_predict(bank, labels, queries, k=k, weighted=weighted)
            plain = knn_predict(bank, labels, queries, k=k, weighted=weighted, dtype=torch.float32)
            if isinstance(auto, dict):
                for kk in auto:
                    torch.testing.assert_close(auto[kk], plain[kk])
            else:
                torch.testing.assert_close(auto, plain)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n_candidates", [21, 30, 68])
def test_certified_topk_is_exact(half, n_candidates):
    from tagless.eval.knn import _certified_topk

    bank, _, queries, _ = _data(n_bank=2000, n_query=100, dim=32, seed=9, dtype=torch.float32)
    bank = torch.nn.functional.normalize(bank, dim=1)
    queries = torch.nn.functional.normalize(queries, dim=1)
    sims, idx = _certified_topk(queries, bank, bank.to(half), 20, n_candidates)
    ref_sims, ref_idx = (queries @ bank.T).topk(20, dim=1)
    torch.testing.assert_close(idx.sort(1).values, ref_idx.sort(1).values)
    torch.testing.assert_close(sims, ref_sims, atol=1e-5, rtol=0)


def _multilabel_data(n_bank=60, n_query=25, dim=12, classes=6, seed=10):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(n_bank, dim, generator=g)
    queries = torch.randn(n_query, dim, generator=g)
    targets = torch.randint(-1, 2, (n_bank, classes), generator=g, dtype=torch.int8)  # 1 / 0 / -1
    targets[:, 4] = -1  # a class no neighbour knows
    targets[:, 5] = -1
    targets[:3, 5] = torch.tensor([1, 0, 1], dtype=torch.int8)  # known for three bank rows only
    return bank, targets, queries


def _multilabel_loop(bank, targets, queries, k, temperature):
    b = bank.double().numpy()
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    y = targets.numpy()
    out = np.zeros((len(queries), y.shape[1]))
    for i, q in enumerate(queries.double().numpy()):
        s = b @ (q / np.linalg.norm(q))
        nearest = np.argsort(-s, kind="stable")[:k]
        for c in range(y.shape[1]):
            pos = known = 0.0
            for j in nearest:
                w = np.exp((s[j] - s[nearest[0]]) / temperature)
                if y[j, c] == 1:
                    pos += w
                if y[j, c] != -1:
                    known += w
            out[i, c] = pos / known if known > 0 else 0.0
    return out


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (7, 0.07), (20, 0.5), (60, 0.1)])
def test_multilabel_scores_match_loop(k, temperature):
    bank, targets, queries = _multilabel_data()
    assert k <= len(bank)
    scores = knn_multilabel_scores(bank, targets, queries, k=k, temperature=temperature)
    assert scores.shape == (len(queries), targets.shape[1]) and scores.dtype == torch.float32
    ref = _multilabel_loop(bank, targets, queries, k, temperature)
    np.testing.assert_allclose(scores.double().numpy(), ref, atol=1e-5, rtol=0)
    assert (scores[:, 4] == 0).all()  # unknown for every neighbour: 0
    assert ((scores >= 0) & (scores <= 1)).all()
    if k == len(bank):  # the whole bank: every query sees the three rows that know class 5
        w = ref[:, 5]
        assert (w > 0).all() and (w < 1).all()
    chunked = knn_multilabel_scores(bank, targets, queries, k=k, temperature=temperature, chunk_size=4)
    torch.testing.assert_close(chunked, scores)


def test_multilabel_scores_with_a_single_positive_neighbour():
    # k=1: the score is the nearest neighbour's label (0 when unknown), whatever T is
    bank, targets, queries = _multilabel_data(seed=11)
    scores = knn_multilabel_scores(bank, targets, queries, k=1, temperature=0.01)
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(bank, dim=1).T
    nearest = targets[sims.argmax(1)].float()
    torch.testing.assert_close(scores, nearest.clamp_min(0))


def test_multilabel_scores_bad_inputs_raise():
    bank, targets, queries = _multilabel_data()
    with pytest.raises(TaglessError, match="bank_targets"):
        knn_multilabel_scores(bank, targets[:, 0], queries)  # not N x C
    with pytest.raises(TaglessError, match="bank_targets"):
        knn_multilabel_scores(bank, targets[:-1], queries)  # N does not match the bank
    with pytest.raises(TaglessError, match="k="):
        knn_multilabel_scores(bank, targets, queries, k=0)
    with pytest.raises(TaglessError, match="k="):
        knn_multilabel_scores(bank, targets, queries, k=len(bank) + 1)
    with pytest.raises(TaglessError, match="queries"):
        knn_multilabel_scores(bank, targets, queries[0])


@pytest.mark.parametrize("case", ["zero_temperature", "negative_temperature", "dim_mismatch"])
def test_multilabel_scores_validate_like_knn_predict(case):
    bank, targets, queries = _multilabel_data()
    kwargs = {"zero_temperature": {"temperature": 0.0}, "negative_temperature": {"temperature": -0.1}}.get(case, {})
    if case == "dim_mismatch":
        queries = queries[:, :5]
    with pytest.raises(TaglessError):
        knn_multilabel_scores(bank, targets, queries, k=5, **kwargs)
