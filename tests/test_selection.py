"""Choosing the epoch on the validation split (train.select_metric, checkpoints/best.pt): the
choice follows the validation numbers of metrics.jsonl and never the test labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tagless.engine import Trainer, train
from tagless.engine.run_config import load_config

TINY = ["data.image_size=24", "views.global_size=16", "data.scene_count=100", "model.width=0.125",
        "train.batch_size=16", "train.epochs=2", "train.log_every_steps=1", "train.knn_every_epochs=1"]


def config(tmp_path, name, *extra):
    return load_config("multilabel_scenes", [f"out_dir={tmp_path}", f"name={name}", *TINY, *extra])


def test_best_checkpoint_is_chosen_on_validation_and_test_labels_never_matter(tmp_path, monkeypatch):
    """With a clean validation carve-out, best.pt is the epoch with the best validation mAP, test.json
    reports that epoch's test numbers and names it; shuffling the TEST labels changes no choice."""
    from tagless.data import registry

    extra = ("labels.mode=single_positive", "labels.val_fraction=0.25", "loss.name=an", "train.epochs=4",
             "train.knn_every_epochs=1")
    first = train(config(tmp_path, "sel", *extra), progress=False)
    run = first.run_dir
    assert (run / "checkpoints" / "best.pt").is_file() and first.selection["metric"] == "map_class"
    vals = {r["epoch"]: r["map_class"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "eval" and "map_class" in r}
    assert len(vals) == 4 and first.selection["epoch"] == max(vals, key=vals.get)
    assert first.selection["value"] == pytest.approx(vals[first.selection["epoch"]])
    record = json.loads((run / "test.json").read_text())
    assert record["selected_epoch"] == first.selection["epoch"] and record["map_class"] == pytest.approx(
        first.test["map_class"])
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == first.selection["epoch"] and "optimizers" not in best

    real = registry.build_dataset

    def shuffled_test(cfg, split="train"):
        ds = real(cfg, split)
        if split == "test":
            t = np.asarray(ds.targets)
            ds.targets = t[np.random.default_rng(1).permutation(len(t))]
        return ds

    from tagless.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "build_dataset", shuffled_test)
    second = train(config(tmp_path, "sel_shuffled", *extra), progress=False)
    assert second.selection == first.selection  # the choice never saw the test labels
    assert second.test["map_class"] != pytest.approx(first.test["map_class"])  # but the test numbers did


def test_selection_needs_the_monitor(tmp_path):
    from tagless.errors import TaglessError

    with pytest.raises(TaglessError, match="select_metric"):
        Trainer(config(tmp_path, "x", "labels.val_fraction=0.25", "train.knn_every_epochs=0"), progress=False)
    Trainer(config(tmp_path, "y", "labels.val_fraction=0.25", "train.knn_every_epochs=0",
                   "train.select_metric=none"), progress=False)
