"""Report plots: each writes a valid PNG; t-SNE separates clusters; the confusion matrix is right."""

import math

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import make_blobs
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.neighbors import KNeighborsClassifier

from tagless.errors import TaglessError
from tagless.report import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_image_grid,
    plot_per_class_ap,
    plot_score_histograms,
    plot_training_curves,
    plot_tsne,
    tsne_embedding,
)


def metrics_rows(steps=60, steps_per_epoch=10, knn_every=2):
    rows = []
    for step in range(2, steps + 1, 2):
        rows.append({"step": step, "epoch": step / steps_per_epoch, "split": "train",
                     "loss": 4 * math.exp(-step / 20) + 0.5, "lr": 0.05 * math.cos(step / steps * math.pi / 2),
                     "contrastive_acc": 100 * (1 - math.exp(-step / 15)), "note": "text is skipped", "nan_ok": False})
        if step % (steps_per_epoch * knn_every) == 0:
            rows.append({"step": step, "epoch": step // steps_per_epoch, "split": "eval", "knn_top1": 50 + step / 2})
    return rows


def check_png(path, min_size=(200, 150)):
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_size[0] and im.height >= min_size[1]
        # not a blank canvas
        assert len(im.convert("L").getcolors(maxcolors=1 << 20) or []) > 10
        return im.size


def test_training_curves_png(tmp_path):
    out = plot_training_curves(metrics_rows(), tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    w, h = check_png(out, (600, 300))
    assert w > h  # 4 panels in a 3-wide grid: 2 rows


def test_training_curves_train_only_and_empty(tmp_path):
    rows = [r for r in metrics_rows() if r["split"] == "train"]
    check_png(plot_training_curves(rows, tmp_path / "c.png"))
    with pytest.raises(TaglessError, match="no numeric metrics"):
        plot_training_curves([], tmp_path / "e.png")
    with pytest.raises(TaglessError):
        plot_training_curves([{"step": 1, "split": "train", "note": "x"}], tmp_path / "e.png")


def _blobs(n=240, centers=4, dim=64, std=3.0, seed=0):
    return make_blobs(n, n_features=dim, centers=centers, cluster_std=std, center_box=(-12, 12), random_state=seed)


def test_tsne_separates_blobs():
    x, y = _blobs()
    emb, index = tsne_embedding(x, seed=0)
    assert emb.shape == (len(x), 2) and np.array_equal(index, np.arange(len(x)))
    # leave-one-out 5-NN accuracy in the 2-D map: the clusters must stay apart
    knn = KNeighborsClassifier(n_neighbors=6).fit(emb, y)
    _, nbrs = knn.kneighbors(emb)
    votes = y[nbrs[:, 1:]]
    pred = np.array([np.bincount(v, minlength=4).argmax() for v in votes])
    assert (pred == y).mean() > 0.97
    # and a random 2-D layout would not be: the check has teeth
    rand = np.random.default_rng(0).standard_normal(emb.shape)
    _, nbrs = KNeighborsClassifier(n_neighbors=6).fit(rand, y).kneighbors(rand)
    pred = np.array([np.bincount(v, minlength=4).argmax() for v in y[nbrs[:, 1:]]])
    assert (pred == y).mean() < 0.6


def test_tsne_subsamples_and_is_seeded():
    x, _ = _blobs(n=150, dim=8)
    emb, index = tsne_embedding(x, max_points=60, seed=3)
    assert emb.shape == (60, 2) and len(np.unique(index)) == 60 and np.all(np.diff(index) > 0)
    emb2, index2 = tsne_embedding(x, max_points=60, seed=3)
    assert np.array_equal(index, index2) and np.allclose(emb, emb2)
    with pytest.raises(TaglessError, match="at least 5"):
        tsne_embedding(x[:3])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(TaglessError, match="NaN"):
        tsne_embedding(bad)


def test_plot_tsne_single_and_multilabel(tmp_path):
    x, y = _blobs(n=80, dim=16)
    y = y.copy()
    y[:5] = -1  # unlabelled points are drawn too
    check_png(plot_tsne(x, y, ["a", "b", "c", "d"], tmp_path / "single.png"), (400, 400))
    multi = np.zeros((80, 4), dtype=np.int8)
    multi[np.arange(80), y.clip(0)] = 1
    multi[:3] = 0  # no positive
    multi[3:6, 1] = -1
    check_png(plot_tsne(x, multi, ["a", "b", "c", "d"], tmp_path / "multi.png", max_points=50), (400, 400))
    with pytest.raises(TaglessError, match="rows"):
        plot_tsne(x, y[:10], None, tmp_path / "bad.png")


def test_confusion_matrix_known_case(tmp_path):
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, -1])
    y_pred = np.array([0, 0, 1, 2, 1, 1, 2, 2, 0, 0])
    cm = confusion_matrix(y_true, y_pred, num_classes=4)
    expected = np.array([[0.5, 0.25, 0.25, 0], [0, 1, 0, 0], [1 / 3, 0, 2 / 3, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(cm, expected)
    keep = y_true >= 0
    ref = sk_confusion_matrix(y_true[keep], y_pred[keep], labels=[0, 1, 2], normalize="true")
    np.testing.assert_allclose(cm[:3, :3], ref)
    check_png(plot_confusion_matrix(y_true, y_pred, ["zero", "one", "two", "three"], tmp_path / "cm.png"), (300, 300))
    with pytest.raises(TaglessError, match="length"):
        confusion_matrix(y_true, y_pred[:-1])
    with pytest.raises(TaglessError, match="number of classes"):
        confusion_matrix([0, 5], [0, 1], num_classes=3)


def test_confusion_matrix_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 25, 500)
    pred = np.where(rng.random(500) < 0.7, y, rng.integers(0, 25, 500))
    check_png(plot_confusion_matrix(y, pred, [f"c{i}" for i in range(25)], tmp_path / "cm25.png"), (400, 400))


def test_per_class_ap(tmp_path):
    ap = np.array([0.9, np.nan, 0.3, 0.65, 0.1])
    check_png(plot_per_class_ap(ap, list("abcde"), tmp_path / "ap.png"))
    with pytest.raises(TaglessError, match="NaN"):
        plot_per_class_ap([np.nan, np.nan], ["a", "b"], tmp_path / "nan.png")


def test_score_histograms(tmp_path):
    rng = np.random.default_rng(0)
    targets = (rng.random((300, 6)) < 0.2).astype(np.int8)
    targets[rng.random((300, 6)) < 0.1] = -1
    logits = rng.standard_normal((300, 6)) + 3 * (targets == 1)
    check_png(plot_score_histograms(logits, targets, tmp_path / "h.png"))
    check_png(plot_score_histograms(1 / (1 + np.exp(-logits)), targets, tmp_path / "p.png", sigmoid=False,
                                    class_names=list("abcdef"), max_classes=2))
    with pytest.raises(TaglessError, match="no positive"):
        plot_score_histograms(logits, -np.ones_like(targets), tmp_path / "x.png")
    with pytest.raises(TaglessError, match="N x C"):
        plot_score_histograms(logits, targets[:, :3], tmp_path / "x.png")


def test_image_grid(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8)
    w, h = check_png(plot_image_grid(rgb, tmp_path / "g.png", titles=[f"#{i}" for i in range(16)], nrow=8))
    assert w > 1.5 * h  # 2 rows of 8
    grey = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    w, h = check_png(plot_image_grid(grey, tmp_path / "grey.png", nrow=1), (50, 200))
    assert h > 3 * w  # one per row
    with pytest.raises(TaglessError, match="uint8"):
        plot_image_grid(rgb.astype(np.float32), tmp_path / "f.png")
    with pytest.raises(TaglessError, match="titles"):
        plot_image_grid(rgb, tmp_path / "t.png", titles=["a"])


def test_tsne_of_fewer_points_than_pca_components():
    """12 points of 64 dims: PCA to 50 components is impossible, t-SNE runs on the raw features."""
    from tagless.report.plots import tsne_embedding

    x = np.random.default_rng(0).normal(size=(12, 64)).astype(np.float32)
    emb, index = tsne_embedding(x)
    assert emb.shape == (12, 2) and np.isfinite(emb).all() and index.tolist() == list(range(12))
