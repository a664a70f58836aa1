"""Paper 004 (LoGo)'s transfer protocol through ``tagless eval linear``: the metric (top-1 or
mean-per-class accuracy, MPC) in the L2 sweep and the report, the L-BFGS iteration count reaching
the solver, and the ``transfer_*`` recipes of its Table 1 carrying both."""

import json
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from tagless.checkpoint import FORMAT, save_atomic
from tagless.cli import main
from tagless.engine.run_config import load_config
from tagless.eval import linear as linear_module
from tagless.eval.linear import linear_probe, linear_sweep
from tagless.models import build_backbone

# Paper 004, supplementary Table 1: training, validation, test images, classes, metric
TABLE_1 = {
    "food": (68175, 7575, 25250, 101, "top1"),
    "mit67": (4690, 670, 1340, 67, "top1"),
    "pets": (2940, 740, 3669, 37, "mean_per_class"),
    "flowers": (1020, 1020, 6149, 102, "mean_per_class"),
    "caltech101": (2525, 505, 5647, 101, "mean_per_class"),
    "cars": (6494, 1650, 8041, 196, "top1"),
    "aircraft": (3334, 3333, 3333, 100, "mean_per_class"),
    "dtd": (1880, 1880, 1880, 47, "top1"),
}


def _imbalanced(seed=0, n=(300, 200), d=16):
    """Four classes in shares 55/25/15/5 %, close enough together that the rare ones are missed
    more often (so MPC and top-1 differ)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, d)) * 0.45
    out = []
    for size in n:
        y = rng.choice(4, size=size, p=[0.55, 0.25, 0.15, 0.05])
        out += [(centers[y] + rng.normal(size=(size, d))).astype(np.float32), y]
    return out


def test_mean_per_class_is_balanced_accuracy_in_the_sweep_and_the_result():
    x, y, xt, yt = _imbalanced()
    sweep = linear_sweep(x, y, xt, yt, np.logspace(-4, 2, 7), metric="mean_per_class", keep_models=True)
    assert sweep.metric == "mean_per_class_accuracy"
    for score, model in zip(sweep.scores, sweep.models):
        assert score == pytest.approx(balanced_accuracy_score(yt, model.predict(xt).numpy()), abs=1e-12)
    res = linear_probe(x, y, xt, yt, metric="mean_per_class", l2_values=np.logspace(-4, 2, 7))
    pred = res.model.predict(xt).numpy()
    assert res.score == pytest.approx(balanced_accuracy_score(yt, pred), abs=1e-12)
    assert abs(res.score - accuracy_score(yt, pred)) > 0.01  # the two metrics differ on this data
    top1 = linear_probe(x, y, xt, yt, metric="top1", l2_values=np.logspace(-4, 2, 7))
    assert top1.metric == "accuracy"
    assert top1.score == pytest.approx(accuracy_score(yt, top1.model.predict(xt).numpy()), abs=1e-12)


def _features(tmp_path, seed=0):
    x, y, xt, yt = _imbalanced(seed)
    path = tmp_path / "f.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path, (x, y, xt, yt)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_eval_linear_metric_is_reported_and_equals_the_library(tmp_path, capsys):
    path, (x, y, xt, yt) = _features(tmp_path)
    assert main(["eval", "linear", "--features", str(path), "--metric", "mean_per_class", "--num-l2", "7",
                 "--l2-range", "1e-4", "1e2", "--json"]) == 0
    out = _last_json(capsys)
    assert out["metric"] == "mean_per_class_accuracy"
    res = linear_probe(x, y, xt, yt, metric="mean_per_class", l2_values=np.logspace(-4, 2, 7))
    assert out["results"][0]["mean per-class acc. (%)"] == pytest.approx(100 * res.score)
    assert out["score"] == pytest.approx(balanced_accuracy_score(yt, res.model.predict(xt).numpy()))


class _Spy(linear_module.LBFGSPath):
    max_iters: ClassVar[list[int]] = []

    def __init__(self, problem, precond, max_iter, *args, **kwargs):
        _Spy.max_iters.append(max_iter)
        super().__init__(problem, precond, max_iter, *args, **kwargs)


@pytest.mark.parametrize(("argv", "expected"), [
    ([], 1000),  # the default stays
    (["--max-iter", "7"], 7),
    (["--data", "transfer_dtd"], 5000),  # the recipe's probe section: paper 004's 5000 iterations
    (["--data", "transfer_dtd", "--max-iter", "9"], 9),  # the command line wins over the recipe
])
def test_max_iter_reaches_the_solver(tmp_path, capsys, monkeypatch, argv, expected):
    path, _ = _features(tmp_path)
    monkeypatch.setattr(linear_module, "LBFGSPath", _Spy)
    _Spy.max_iters = []
    assert main(["eval", "linear", "--features", str(path), "--num-l2", "3", *argv, "--json"]) == 0
    assert _Spy.max_iters and set(_Spy.max_iters) == {expected}
    assert _last_json(capsys)["probe"]["max_iter"] == expected


def test_the_recipe_carries_the_metric_and_the_command_line_wins(tmp_path, capsys):
    path, _ = _features(tmp_path)
    assert main(["eval", "linear", "--features", str(path), "--data", "transfer_pets", "--num-l2", "3", "--json"]) == 0
    out = _last_json(capsys)
    assert out["metric"] == "mean_per_class_accuracy" and out["probe"]["val_fraction"] == pytest.approx(0.2011)
    assert main(["eval", "linear", "--features", str(path), "--data", "transfer_pets", "--metric", "top1",
                 "--num-l2", "3", "--json"]) == 0
    assert _last_json(capsys)["metric"] == "accuracy"


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_transfer_recipes_follow_table_1(name):
    train, val, _test, _classes, metric = TABLE_1[name]
    cfg = load_config(f"transfer_{name}")
    assert cfg.probe.metric == metric
    assert cfg.probe.max_iter == 5000 and cfg.probe.protocol == "val"
    assert cfg.probe.val_fraction == pytest.approx(val / (train + val), abs=1e-4)
    assert cfg.data.source == "image_folder" and cfg.data.root == f"data/transfer/{name}"


def _image_folder(root, n_train=12, n_test=6, size=20, seed=0):
    """Two classes of flat-colour images with noise: train/<class>/*.png, test/<class>/*.png."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{split}_{c}_{i}.png")


def _tiny_checkpoint(path):
    kwargs = {"stem": "cifar", "width": 0.125, "zero_init_residual": False}
    backbone = build_backbone("resnet18", **kwargs)
    save_atomic({"format": FORMAT, "backbone": backbone.state_dict(), "backbone_name": "resnet18",
                 "backbone_kwargs": kwargs, "config": {"views": {"recipe": "two_views", "global_size": 16}}}, path)


def test_the_whole_command_on_an_image_folder(tmp_path, capsys):
    root = tmp_path / "dtd"
    _image_folder(root)
    ckpt = tmp_path / "last.pt"
    _tiny_checkpoint(ckpt)
    assert main(["eval", "linear", "--checkpoint", str(ckpt), "--data", "transfer_dtd", "--set", f"root={root}",
                 "--set", "image_size=20", "--set", "cache_dir=", "--num-l2", "5", "--json"]) == 0
    out = _last_json(capsys)
    assert out["metric"] == "accuracy" and out["probe"]["max_iter"] == 5000
    assert out["score"] > 0.9  # two colours
