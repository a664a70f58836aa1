"""``tagless eval`` end to end: .npz inputs, checkpoint inputs, --json, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier

from tagless.cli import main


def blobs(n=200, d=8, k=4, seed=0):
    centres = np.random.default_rng(99).normal(0, 3, (k, d))  # shared by every split
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y


def write(tmp_path, name="f.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def tiny_run(tmp_path, epochs: int, knn_every: int):
    """Pre-train a tiny MoCo on 96 digits; returns the run directory."""
    from tagless.engine import train
    from tagless.engine.run_config import load_config

    cfg = load_config("demo_moco", [f"out_dir={tmp_path}", "name=r", "data.image_size=16", "data.limit=96",
                                    "model.width=0.125", "views.global_size=16", "method.queue_size=64",
                                    "train.batch_size=32", f"train.epochs={epochs}",
                                    f"train.knn_every_epochs={knn_every}", f"data.cache_dir={tmp_path / 'cache'}"])
    return train(cfg, progress=False).run_dir


def run_json(capsys, argv):
    code = main(["--json", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out.strip().splitlines()[-1])


def test_knn_features_matches_sklearn_majority(tmp_path, capsys):
    x_tr, y_tr = blobs(300, seed=1)
    x_te, y_te = blobs(100, seed=2)
    f = write(tmp_path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    res = run_json(capsys, ["eval", "knn", "--features", f, "--k", "5", "--majority"])
    ref = KNeighborsClassifier(5, metric="cosine", algorithm="brute").fit(x_tr, y_tr).score(x_te, y_te)
    assert res["results"][0]["top-1 (%)"] == pytest.approx(100 * ref, abs=1e-6)


def test_cluster_with_given_assignments(tmp_path, capsys):
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([1, 1, 0, 0, 2, 2, 0])
    f = write(tmp_path, y_test=y, pred=pred)
    res = run_json(capsys, ["eval", "cluster", "--features", f])
    assert res["results"][0]["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, pred), abs=1e-6)


def cluster_file(tmp_path, with_x=True, with_pred=True, n=120, k=4):
    """y_test with pred == y_test (NMI 100) and structureless x_test (k-means NMI far below)."""
    rng = np.random.default_rng(5)
    y = rng.integers(0, k, n)
    arrays = dict(y_test=y)
    if with_x:
        arrays["x_test"] = rng.normal(size=(n, 8)).astype(np.float32)
    if with_pred:
        arrays["pred"] = (y + 1) % k  # a relabelling of y_test: a perfect clustering
    return write(tmp_path, "c.npz", **arrays)


def run_cluster_cli(capsys, argv):
    code = main(["--json", "eval", "cluster", *argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = out.out.strip().splitlines()
    return json.loads(lines[-1])["results"][0], "\n".join(lines[:-1])


def test_cluster_scores_given_pred_over_x_test(tmp_path, capsys):
    """A file with both pred and x_test: pred is scored (not re-clustered), and the output says so."""
    row, text = run_cluster_cli(capsys, ["--features", cluster_file(tmp_path)])
    assert row["clustering"] == "given assignments"
    assert row["nmi"] == pytest.approx(100) and row["accuracy"] == pytest.approx(100)
    assert "scoring the given assignments 'pred'" in text and "--kmeans" in text


def test_cluster_kmeans_flag_clusters_x_test_despite_pred(tmp_path, capsys):
    with_pred = cluster_file(tmp_path)
    row, text = run_cluster_cli(capsys, ["--features", with_pred, "--kmeans", "--n-init", "1"])
    assert row["clustering"].startswith("k-means (k=4)")
    assert row["nmi"] < 50  # k-means of noise, not the perfect pred
    assert "--kmeans: clustering the x_test" in text
    # exactly the k-means of the same x_test without any pred in the file
    (tmp_path / "x").mkdir()
    no_pred = cluster_file(tmp_path / "x", with_pred=False)
    ref, ref_text = run_cluster_cli(capsys, ["--features", no_pred, "--n-init", "1"])
    assert {k: v for k, v in row.items() if k != "clustering"} == {k: v for k, v in ref.items() if k != "clustering"}
    assert "pred" not in ref_text.splitlines()[0]  # no note when there is no pred to speak of


def test_cluster_kmeans_flag_without_x_test_is_a_one_line_error(tmp_path, capsys):
    f = cluster_file(tmp_path, with_x=False)
    assert main(["eval", "cluster", "--features", f, "--kmeans"]) == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert "--kmeans" in err and "x_test" in err and len(err.splitlines()) == 1
    assert "Traceback" not in out.err and out.out == ""


def test_cluster_pred_only_is_scored(tmp_path, capsys):
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    pred = np.array([2, 2, 1, 0, 0, 0, 1, 1, 1, 1])
    f = write(tmp_path, y_test=y, pred=pred)
    row, text = run_cluster_cli(capsys, ["--features", f])
    assert row["clustering"] == "given assignments"
    assert row["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, pred), abs=1e-6)
    assert "--kmeans" not in text  # nothing else to cluster: no note


def test_cluster_needs_x_test_or_pred(tmp_path, capsys):
    f = write(tmp_path, y_test=np.array([0, 1, 1]))
    assert main(["eval", "cluster", "--features", f]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing array 'x_test' or 'pred'" in err and len(err.splitlines()) == 1


def test_json_line_is_strict_json(tmp_path, capsys):
    """A class with no positive gives a NaN AP inside; the JSON line carries null, not NaN."""
    y = np.array([[1, 0], [0, 0], [1, 0]])
    f = write(tmp_path, y_test=y, scores=np.random.default_rng(0).random((3, 2)).astype(np.float32))
    assert main(["--json", "eval", "map", "--features", f]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_map_with_given_scores(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (30, 4))
    s = rng.random((30, 4)).astype(np.float32)
    f = write(tmp_path, y_test=y, scores=s)
    res = run_json(capsys, ["eval", "map", "--features", f])
    ref = np.mean([average_precision_score(y[:, c], s[:, c]) for c in range(4)])
    assert res["results"][0]["mAP@class"] == pytest.approx(100 * ref, abs=1e-4)


def test_linear_and_map_probe_from_features(tmp_path, capsys):
    x_tr, y_tr = blobs(200, seed=3)
    x_te, y_te = blobs(80, seed=4)
    f = write(tmp_path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    res = run_json(capsys, ["eval", "linear", "--features", f, "--num-l2", "5"])
    assert res["results"][0]["top-1 (%)"] > 90
    ml = lambda y: np.eye(4, dtype=np.int64)[y] | np.eye(4, dtype=np.int64)[(y + 1) % 4]
    f2 = write(tmp_path, "m.npz", x_train=x_tr, y_train=ml(y_tr), x_test=x_te, y_test=ml(y_te))
    res = run_json(capsys, ["eval", "map", "--features", f2, "--num-l2", "5"])
    assert res["results"][0]["mAP@class"] > 90


@pytest.mark.parametrize(
    "arrays, argv, message",
    [
        (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 0], x_test=np.zeros((2, 2))), ["knn"], "missing array 'y_test'"),
        (dict(x_train=np.zeros((3, 2)), y_train=[0, 1], x_test=np.zeros((2, 2)), y_test=[0, 1]), ["knn"],
         "has 2 rows but the features have 3"),
        (dict(x_train=np.full((3, 2), np.nan), y_train=[0, 1, 0], x_test=np.zeros((2, 2)), y_test=[0, 1]), ["knn"],
         "NaN"),
        (dict(x_train=np.zeros((3, 2)), y_train=[0, -3, 0], x_test=np.zeros((2, 2)), y_test=[0, 1]), ["knn"],
         "below -1"),
        (dict(y_test=np.array([[0, 2]]), scores=np.zeros((1, 2))), ["map"], "only 1, 0 or -1"),
        (dict(x_train=np.zeros((3, 2)), y_train=[0, 1, 0], x_test=np.zeros((2, 3)), y_test=[0, 1]), ["linear"],
         "x_test has 3"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, capsys, arrays, argv, message):
    f = write(tmp_path, **arrays)
    assert main(["eval", *argv, "--features", f]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_file_and_no_input(tmp_path, capsys):
    assert main(["eval", "knn", "--features", str(tmp_path / "none.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "knn"]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_checkpoint_inputs_knn_layers_cluster(tmp_path, capsys):
    """Train 1 tiny epoch, then evaluate the checkpoint by every route."""
    ckpt = str(tiny_run(tmp_path, epochs=1, knn_every=0) / "checkpoints" / "last.pt")
    res = run_json(capsys, ["eval", "knn", "--checkpoint", ckpt, "--k", "10", "--k", "20"])
    assert [r["k"] for r in res["results"]] == [10, 20]
    assert (tmp_path / "cache" / "features").is_dir()  # features were cached
    again = run_json(capsys, ["eval", "knn", "--checkpoint", ckpt, "--k", "10", "--k", "20"])
    assert again["results"] == res["results"]
    res = run_json(capsys, ["eval", "layers", "--checkpoint", ckpt, "--layers", "layer1,layer4", "--num-l2", "3",
                            "--pool-dim", "512"])
    assert [r["features"] for r in res["results"]] == ["layer1", "layer4"]
    assert all(isinstance(r["l2"], float) for r in res["results"])  # numbers stay numbers in --json
    res = run_json(capsys, ["eval", "cluster", "--checkpoint", ckpt])
    assert 0 <= res["results"][0]["nmi"] <= 100
    assert main(["eval", "layers", "--checkpoint", ckpt, "--layers", "conv9"]) == 2
    assert "unknown layer" in capsys.readouterr().err


def test_report_of_a_run(tmp_path, capsys):
    """tagless report: HTML with the evaluation table and PNGs that exist, results.json."""
    run = tiny_run(tmp_path, epochs=2, knn_every=1)
    res = run_json(capsys, ["report", str(run)])
    html = (run / "report.html").read_text()
    assert "weighted kNN (k=20, T=0.07)" in html and "linear probe" in html
    import re

    images = re.findall(r'src="([^"]+\.png)"', html)
    assert len(images) >= 3 and all((run / p).is_file() for p in images)
    saved = json.loads((run / "results.json").read_text())["evaluations"]
    assert saved[0]["top-1 (%)"] == pytest.approx(res["results"][0]["top-1 (%)"])
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_report_of_a_relative_run_directory(tmp_path, capsys, monkeypatch):
    """`make demo` writes runs/NAME relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    run = tiny_run(tmp_path, epochs=1, knn_every=1).relative_to(tmp_path)
    res = run_json(capsys, ["report", str(run)])
    assert (tmp_path / run / "report.html").is_file() and res["results"]
