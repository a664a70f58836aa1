"""The training loop end to end on digits: a run killed with SIGKILL between checkpoints
resumes to the uninterrupted run, NaN stops with the last good checkpoint kept, checkpoints
load without tagless."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from run_helpers import TINY, losses, tiny
from tagless.checkpoint import load_checkpoint
from tagless.engine import Trainer, train
from tagless.engine.run_config import load_config
from tagless.errors import TaglessError


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
    cfg = load_config("demo_simsiam", [f"out_dir={tmp_path}", "name=s",
                                       *[t for t in TINY if not t.startswith("method.")],
                                       "train.epochs=8", "train.knn_every_epochs=0", "optim.lr_per_256=0.5"])
    result = train(cfg, progress=False)
    loss_values = [v for _, v in sorted(losses(result.run_dir).items())]
    assert all(-1.0 <= v <= 1.0 for v in loss_values)  # a negative cosine
    # slow at this tiny size, but steady (drops ~0.05 on 1 or 2 threads)
    assert np.mean(loss_values[-5:]) < np.mean(loss_values[:5]) - 0.02


KILLER = r"""
import os, signal, sys
from tagless.engine.run_config import load_config
from tagless.engine import Trainer

cfg = load_config("demo_moco", sys.argv[2:])
trainer = Trainer(cfg, progress=False)
inner = trainer.train_step

def step_or_die(batch):
    if batch.step == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final checkpoint
    return inner(batch)

trainer.train_step = step_or_die
trainer.run()
"""


def test_kill_9_between_checkpoints_then_resume_matches_uninterrupted(tmp_path):
    """checkpoint_every_steps=3 does not divide the 5-step epoch. The run is killed with SIGKILL
    at step 8 (checkpoints at 3, 5, 6; the next would be 9); --resume continues from step 6 and
    ends with the losses, weights, queue and optimiser state of the uninterrupted run."""
    import subprocess
    import sys

    extra = ["train.epochs=3", "train.checkpoint_every_steps=3", "train.knn_every_epochs=0"]
    full = Trainer(tiny(tmp_path, "full", *extra), progress=False)
    full.run()
    args = [f"out_dir={tmp_path}", "name=part", *TINY, *extra]
    proc = subprocess.run([sys.executable, "-c", KILLER, "7", *args], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    part_dir = tmp_path / "part"
    assert load_checkpoint(part_dir / "checkpoints" / "last.pt")["step"] == 6
    resumed = Trainer(tiny(tmp_path, "part", *extra), resume=True, progress=False)
    resumed.run()
    a, b = losses(full.run_dir), losses(part_dir)  # the last value logged for each step
    assert sorted(a) == sorted(b) == list(range(1, 16))
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=1e-6), step
    sa, sb = full.method.state_dict(), resumed.method.state_dict()
    for key in sa:
        assert torch.allclose(sa[key].float(), sb[key].float(), atol=1e-6), key
    oa, ob = full.optimizers.state_dict()["main"], resumed.optimizers.state_dict()["main"]
    assert oa["state"].keys() == ob["state"].keys() and len(oa["state"]) > 10
    for pid in oa["state"]:
        assert torch.allclose(oa["state"][pid]["momentum_buffer"], ob["state"][pid]["momentum_buffer"], atol=1e-6)


def test_init_checkpoint_starts_from_a_trained_backbone(tmp_path):
    """model.init_checkpoint copies a run's backbone into a new run; another
    architecture is a one-line error."""
    first = train(tiny(tmp_path, "first", "train.epochs=1", "train.knn_every_epochs=0"), progress=False)
    ckpt = first.run_dir / "checkpoints" / "last.pt"
    second = Trainer(tiny(tmp_path, "second", f"model.init_checkpoint={ckpt}"), progress=False)
    saved = load_checkpoint(ckpt)["backbone"]
    for name, value in second.backbone.state_dict().items():
        assert torch.equal(value, saved[name]), name
    with pytest.raises(TaglessError, match="holds resnet18 .* but this run builds resnet18"):
        Trainer(tiny(tmp_path, "third", f"model.init_checkpoint={ckpt}", "model.width=0.25"), progress=False)
    with pytest.raises(TaglessError, match="checkpoint not found"):
        Trainer(tiny(tmp_path, "fourth", f"model.init_checkpoint={tmp_path / 'none.pt'}"), progress=False)
