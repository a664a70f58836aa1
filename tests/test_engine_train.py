"""The training loop end to end on digits: resume equals an uninterrupted run, NaN stops
with the last good checkpoint kept, checkpoints load without tagless, DDP smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tagless.config import load_config
from tagless.engine import Trainer, train
from tagless.engine.checkpoint import load_checkpoint
from tagless.errors import TaglessError

TINY = [
    "data.source=digits", "data.image_size=16", "data.limit=160",
    "model.width=0.125", "views.global_size=16",
    "method.queue_size=64", "method.proj_hidden_dim=32", "method.proj_dim=16",
    "train.batch_size=32", "train.knn_every_epochs=1", "train.log_every_steps=1",
]


def tiny(tmp_path, name, *extra):
    return load_config("demo_moco", [f"out_dir={tmp_path}", f"name={name}", *TINY, *extra])


def losses(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


def test_resume_gives_the_same_losses(tmp_path):
    full = train(tiny(tmp_path, "full", "train.epochs=3"), progress=False)
    # the interrupted run: stop after 5 steps (mid-epoch 2), then resume to the end
    part = tiny(tmp_path, "part", "train.epochs=3", "train.max_steps=5", "train.checkpoint_every_steps=5")
    train(part, progress=False)
    assert load_checkpoint(part.run_dir / "checkpoints" / "last.pt")["step"] == 5
    resumed = train(tiny(tmp_path, "part", "train.epochs=3"), resume=True, progress=False)
    assert resumed.steps == full.steps == 3 * (160 // 32)  # data.limit applies to each split
    a, b = losses(full.run_dir), losses(resumed.run_dir)
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-6), step
    ck_a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    ck_b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    for k, v in ck_a["method"].items():
        assert torch.allclose(v.float(), ck_b["method"][k].float(), atol=1e-6), k


def test_run_directory_contents_and_plain_torch_loading(tmp_path):
    result = train(tiny(tmp_path, "r", "train.epochs=1"), progress=False)
    run = result.run_dir
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "run_info.json", "checkpoints"}
    assert load_config(str(run / "config.yaml")).train.epochs == 1  # the resolved config reloads
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    from tagless.models import build_backbone

    fresh = build_backbone(ckpt["backbone_name"], **ckpt["backbone_kwargs"])
    fresh.load_state_dict(ckpt["backbone"])
    assert result.knn_top1 is not None and 0 <= result.knn_top1 <= 100
    with pytest.raises(TaglessError, match="already holds a run"):
        Trainer(tiny(tmp_path, "r", "train.epochs=1"))
    with pytest.raises(TaglessError, match="nothing to resume"):
        Trainer(tiny(tmp_path, "other", "train.epochs=1"), resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """The loss is checked only on log/checkpoint steps (no sync per step), yet the error names
    the first bad step and the checkpoint written before it is kept."""
    cfg = tiny(tmp_path, "nan", "train.epochs=2", "train.knn_every_epochs=0", "train.log_every_steps=1000",
               "train.checkpoint_every_steps=4")
    trainer = Trainer(cfg, progress=False)
    original = trainer.method.step
    calls = {"n": 0}

    def poisoned(batch):
        calls["n"] += 1
        loss, logs = original(batch)
        return (loss * float("nan"), logs) if calls["n"] == 7 else (loss, logs)

    monkeypatch.setattr(trainer.method, "step", poisoned)
    with pytest.raises(TaglessError, match=r"loss is not finite \(nan or inf\) at step 6"):
        trainer.run()
    assert calls["n"] == 8  # found at the next checkpoint step (8), before writing it
    ckpt = load_checkpoint(cfg.run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] == 5  # the epoch-end checkpoint, untouched by the NaN step
    assert all(torch.isfinite(v).all() for v in ckpt["backbone"].values() if v.is_floating_point())


def test_simsiam_trains_and_lowers_its_loss(tmp_path):
    cfg = load_config("demo_simsiam", [f"out_dir={tmp_path}", "name=s", *[t for t in TINY if not t.startswith("method.")],
                                       "train.epochs=8", "train.knn_every_epochs=0", "optim.lr_per_256=0.2"])
    result = train(cfg, progress=False)
    l = [v for _, v in sorted(losses(result.run_dir).items())]
    assert all(-1.0 <= v <= 1.0 for v in l)  # a negative cosine
    assert np.mean(l[-5:]) < np.mean(l[:5]) - 0.02  # slow at this tiny size, but steady
