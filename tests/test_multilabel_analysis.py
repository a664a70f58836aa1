"""Score-distribution, confident-class and logit-bias analyses against np.histogram, loops with
math.exp and hand means; the plots write PNGs and reject bad shapes."""
import math

import numpy as np
import pytest

from tagless.errors import TaglessError
from tagless.eval import multilabel_analysis as mla
from tagless.eval.multilabel_analysis import confident_counts, logit_bias, score_histograms, top_scores
from tagless.report import multilabel_plots as mlp
from tagless.report.multilabel_plots import plot_cam_grid, plot_confident_counts, plot_run_score_histograms


def _data(n=120, c=7, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.choice([1, 0, -1], size=(n, c), p=[0.2, 0.6, 0.2]).astype(np.int8)
    s = rng.normal(0, 3, (n, c)) + 2.0 * (t == 1)
    return s, t


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_score_histograms_match_numpy():
    s, t = _data()
    h = score_histograms(s, t, bins=10)
    p = np.vectorize(_sig)(s)
    edges = np.linspace(0, 1, 11)
    np.testing.assert_allclose(h["edges"], edges)
    np.testing.assert_array_equal(h["positives"], np.histogram(p[t == 1], edges)[0])
    np.testing.assert_array_equal(h["negatives"], np.histogram(p[t == 0], edges)[0])
    assert h["positives"].sum() == (t == 1).sum() and h["negatives"].sum() == (t == 0).sum()  # -1 left out
    default = score_histograms(s, t)
    assert len(default["edges"]) == mla.SCORE_BINS + 1
    with pytest.raises(TaglessError, match="N x C"):
        score_histograms(s, t[:, :3])
    with pytest.raises(TaglessError, match="1 .positive"):
        score_histograms(s, t * 2)


def test_confident_counts_match_a_loop():
    s, _ = _data(seed=1)
    for thr in (0.5, 0.9):
        ref = [sum(_sig(v) > thr for v in row) for row in s]
        np.testing.assert_array_equal(confident_counts(s, threshold=thr), ref)
    # extreme logits: no overflow; a score of exactly 0.5 (logit 0) is not above 0.5
    assert confident_counts(np.array([[-1e4, 1e4, 800.0], [0.0, 0.0, 1.0]])).tolist() == [2, 1]


def test_top_scores_match_sorted_rows():
    s, _ = _data(n=20, c=6, seed=2)
    top = top_scores(s, k=4)
    ref = [sorted((_sig(v) for v in row), reverse=True)[:4] for row in s]
    np.testing.assert_allclose(top, ref, rtol=1e-12)
    with pytest.raises(TaglessError, match="k=7"):
        top_scores(s, k=7)


def test_logit_bias_hand_means():
    s = np.array([[2.0, -1.0, 5.0],
                  [0.5, -3.0, 9.0],
                  [4.0, 1.0, -2.0]])
    t = np.array([[1, 0, -1],
                  [1, 0, -1],
                  [0, 1, 0]])
    out = logit_bias(s, t)
    mean_pos = (2.0 + 0.5 + 1.0) / 3
    mean_neg = (-1.0 - 3.0 + 4.0 - 2.0) / 4
    assert out["mean_pos_logit"] == pytest.approx(mean_pos)
    assert out["mean_neg_logit"] == pytest.approx(mean_neg)
    assert out["gap"] == pytest.approx(mean_pos - mean_neg)
    none = logit_bias(s, np.where(t == 1, -1, t))
    assert math.isnan(none["mean_pos_logit"]) and math.isnan(none["gap"])


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs(tmp_path):
    s, t = _data()
    hists = {"AN": score_histograms(s, t), "EN + SCL": score_histograms(s + 1, t),
             "empty pos": score_histograms(s, np.minimum(t, 0))}
    assert _is_png(plot_run_score_histograms(hists, tmp_path / "hist.png"))
    counts = {"AN": confident_counts(s), "BCE full": confident_counts(s + 2)}
    assert _is_png(plot_confident_counts(counts, tmp_path / "sub" / "counts.png"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    assert _is_png(plot_cam_grid(images, rng.random((5, 4, 4)), [f"class {i}" for i in range(5)], tmp_path / "cam.png"))
    assert _is_png(plot_cam_grid(images[..., :1], rng.normal(0, 4, (5, 7, 7)), None, tmp_path / "cam_grey.png"))


def test_plots_reject_bad_inputs(tmp_path):
    s, t = _data()
    h = score_histograms(s, t)
    with pytest.raises(TaglessError, match="at least one"):
        plot_run_score_histograms({}, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="'bad'.*counts per side"):
        plot_run_score_histograms({"bad": {**h, "positives": h["positives"][:-1]}}, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="'bad'.*edges / positives / negatives"):
        plot_run_score_histograms({"bad": {"edges": h["edges"]}}, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="'AN'.*1-D"):
        plot_confident_counts({"AN": np.ones((3, 2), int)}, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="'AN'.*1-D"):
        plot_confident_counts({"AN": np.array([0.5, 1.0])}, tmp_path / "x.png")
    images = np.zeros((3, 16, 16, 3), np.uint8)
    with pytest.raises(TaglessError, match="N x h x w with N = 3"):
        plot_cam_grid(images, np.zeros((2, 4, 4)), None, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="N x h x w"):
        plot_cam_grid(images, np.zeros((3, 16)), None, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="uint8"):
        plot_cam_grid(images.astype(np.float32), np.zeros((3, 4, 4)), None, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="uint8"):
        plot_cam_grid(images[0], np.zeros((3, 4, 4)), None, tmp_path / "x.png")
    with pytest.raises(TaglessError, match="2 titles for 3"):
        plot_cam_grid(images, np.zeros((3, 4, 4)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(TaglessError, match="finite"):
        plot_cam_grid(images, np.full((3, 4, 4), np.nan), None, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_cam_upsampling_and_logits(tmp_path, monkeypatch):
    # bilinear with half-pixel centres: output pixel j of 4 samples input position (j + .5) / 2 - .5
    up = mlp._upsample(np.array([[[0.0, 1.0]]]), 1, 4)
    np.testing.assert_allclose(up[0, 0], [0.0, 0.25, 0.75, 1.0])
    seen = []
    real = mlp._upsample
    monkeypatch.setattr(mlp, "_upsample", lambda m, h, w: seen.append(m) or real(m, h, w))
    images = np.zeros((2, 8, 8, 3), np.uint8)
    logits = np.array([[[-2.0, 0.0], [1.0, 3.0]]] * 2)
    plot_cam_grid(images, logits, None, tmp_path / "a.png")
    np.testing.assert_allclose(seen[-1], np.vectorize(_sig)(logits))  # logits -> sigmoid
    probs = np.array([[[0.1, 0.5], [0.7, 1.0]]] * 2)
    plot_cam_grid(images, probs, None, tmp_path / "b.png")
    np.testing.assert_allclose(seen[-1], probs)  # maps in [0, 1] are used as they are
