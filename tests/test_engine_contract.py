"""The method contract of the engine, with a dummy method that uses every hook (dummy_method.py):
per-image state, the epoch pass, gather, two optimisers, epoch logs, the monitor of
pseudo-labels, and resume mid-epoch restoring per-image state; 1 process against 2 gloo
processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dummy_method
from ddp_helpers import run_in_processes
from run_helpers import records
from tagless.checkpoint import load_checkpoint
from tagless.engine import Trainer
from tagless.engine.run_config import load_config

STEPS_PER_EPOCH = 6  # 96 training images, global batch 16

CFG = [
    "method.name=dummy", "data.source=digits", "data.image_size=8", "data.limit=96", "model.width=0.125",
    "views.global_size=8", "train.batch_size=16", "train.log_every_steps=1", "train.knn_every_epochs=1",
    "optim.warmup_epochs=0", "optim.lr_per_256=0.8",
]


@pytest.fixture(autouse=True)
def dummy_registered():
    dummy_method.register()
    yield
    dummy_method.unregister()


def config(out_dir, name, *extra):
    return load_config("demo_moco", [f"out_dir={out_dir}", f"name={name}", *CFG, *extra])


def snapshot(trainer: Trainer) -> dict:
    m = trainer.method
    return {"state": {k: v.detach().clone() for k, v in m.state_dict().items()},
            "optimizers": trainer.optimizers.state_dict(), "hook_calls": list(m.hook_calls)}


def test_every_hook_in_one_process(tmp_path):
    trainer = Trainer(config(tmp_path, "one", "train.epochs=3"), progress=False)
    result = trainer.run()
    m, n, total = trainer.method, len(trainer.train_set), 3 * STEPS_PER_EPOCH
    # per-image state from the batch indices and targets: every image seen once per epoch...
    assert result.steps == total and n == 96
    assert torch.equal(m.seen, torch.full((n,), 3))
    # ...and the stored targets equal the dataset's labels at those indices
    assert torch.equal(m.stored_target.cpu(), torch.as_tensor(trainer.train_set.targets))
    # the epoch pass ran before each epoch, once
    assert m.epochs_started[:4].tolist() == [1, 1, 1, 0]
    # after_step after every step; before_optimizer_step per optimiser, main first
    assert int(m.after_steps) == total and m.hook_calls == ["main", "critic"] * total
    # epoch logs and the pseudo-label NMI monitor reach metrics.jsonl and the history
    evals = records(result.run_dir, "eval")
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert all("labels_changed" in r and 0 <= r["pseudo_nmi"] <= 100 and "knn_top1" in r for r in evals)
    # two optimisers: their own schedules (cosine main, constant critic) and checkpoint slots
    train_rows = records(result.run_dir, "train")
    lrs = [r["lr"] for r in train_rows]
    assert lrs[0] == pytest.approx(0.8 * 16 / 256) and lrs[-1] < lrs[0] / 10
    assert [r["lr_critic"] for r in train_rows] == pytest.approx([0.5 * 16 / 256] * len(train_rows))
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert set(ckpt["optimizers"]) == {"main", "critic"}
    assert torch.equal(ckpt["method"]["labels"], m.labels)
    main_groups = trainer.optimizers.optimizers["main"].param_groups
    assert [g["lr_scale"] for g in main_groups] == [1.0, 2.0]  # the head's group runs at twice the lr
    assert main_groups[1]["lr"] == pytest.approx(2 * main_groups[0]["lr"])
    critic = {id(p) for p in m.critic.parameters()}
    assert not critic & {id(p) for g in main_groups for p in g["params"]}


def test_critic_optimiser_alone_moves_the_critic(tmp_path):
    """The critic learns from its own objective through its own optimiser; the encoder's critic
    term sends no gradient into the critic (parameters detached)."""
    trainer = Trainer(config(tmp_path, "c", "train.epochs=1", "train.knn_every_epochs=0"), progress=False)
    m = trainer.method
    trainer.start_epoch(0)
    images, index, target = trainer.fetch(0)
    from tagless.methods import Batch

    batch = Batch(images, index, target, 0, 0, torch.Generator())
    feats = m.backbone(m._view(images)).detach()
    critic_only = torch.nn.functional.mse_loss(m.critic(feats).squeeze(1), m.labels[index].float())
    expected = torch.autograd.grad(critic_only, list(m.critic.parameters()))
    before = [p.detach().clone() for p in m.critic.parameters()]
    trainer.train_step(batch)
    lr = 0.5 * 16 / 256
    for p, p0, g in zip(m.critic.parameters(), before, expected):  # plain SGD momentum step: p - lr (g + wd p)
        assert torch.allclose(p.detach(), p0 - lr * (g + 1e-4 * p0), atol=1e-6)


def _ddp_worker(rank, world_size, out_dir, extra):
    dummy_method.register()
    trainer = Trainer(config(out_dir, "ddp", *extra), progress=False)
    trainer.run()
    torch.save(snapshot(trainer), Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.parametrize("extra", [["train.epochs=2", "train.knn_every_epochs=0"]])
def test_two_processes_equal_one(tmp_path, extra):
    """Per-image state, the sharded epoch pass with gather, both optimisers and the losses:
    2 gloo processes give what 1 process gives on the same global batches."""
    one = Trainer(config(tmp_path / "one", "ddp", *extra), progress=False)
    one.run()
    single = snapshot(one)
    run_in_processes(_ddp_worker, 2, str(tmp_path / "two"), extra)
    for rank in range(2):
        multi = torch.load(tmp_path / "two" / f"rank{rank}.pt", weights_only=True)
        assert single["state"].keys() == multi["state"].keys()
        for key, value in single["state"].items():
            assert torch.allclose(value.float(), multi["state"][key].float(), atol=2e-5), key
        for name in ("main", "critic"):
            for pid, s in single["optimizers"][name]["state"].items():
                buf = multi["optimizers"][name]["state"][pid]["momentum_buffer"]
                assert torch.allclose(s["momentum_buffer"], buf, atol=2e-5), (name, pid)
        assert multi["hook_calls"] == single["hook_calls"]
    a = [r["loss"] for r in records(tmp_path / "one" / "ddp", "train")]
    b = [r["loss"] for r in records(tmp_path / "two" / "ddp", "train")]
    np.testing.assert_allclose(a, b, atol=2e-5)
    assert int(single["state"]["seen"].min()) == 2  # every image, once per epoch, counted on both ranks


def test_resume_mid_epoch_restores_per_image_state(tmp_path):
    """checkpoint_every_steps=4 does not divide the 6-step epoch; the run stops at step 8 (mid
    epoch 2) and resumes: the pseudo-labels, counts, optimiser states and losses equal those of
    the uninterrupted run, and the epoch hook is not re-run mid-epoch."""
    full = Trainer(config(tmp_path, "full", "train.epochs=3", "train.knn_every_epochs=0"), progress=False)
    full.run()
    part = config(tmp_path, "part", "train.epochs=3", "train.knn_every_epochs=0", "train.checkpoint_every_steps=4",
                  "train.max_steps=8")
    Trainer(part, progress=False).run()
    assert load_checkpoint(part.run_dir / "checkpoints" / "last.pt")["step"] == 8
    resumed = Trainer(config(tmp_path, "part", "train.epochs=3", "train.knn_every_epochs=0",
                             "train.checkpoint_every_steps=4"), resume=True, progress=False)
    assert resumed.method.epochs_started.sum() == 0  # nothing restored before run()
    resumed.run()
    a, b = snapshot(full), snapshot(resumed)
    for key, value in a["state"].items():
        assert torch.allclose(value.float(), b["state"][key].float(), atol=1e-6), key
    assert b["state"]["epochs_started"][:3].tolist() == [1, 1, 1]  # epoch 1's hook came from the checkpoint
    for name in ("main", "critic"):
        for pid, s in a["optimizers"][name]["state"].items():
            assert torch.allclose(s["momentum_buffer"], b["optimizers"][name]["state"][pid]["momentum_buffer"],
                                  atol=1e-6)
    la = {r["step"]: r["loss"] for r in records(full.run_dir, "train")}
    lb = {r["step"]: r["loss"] for r in records(resumed.run_dir, "train")}
    assert la.keys() == lb.keys()
    for step in la:
        assert la[step] == pytest.approx(lb[step], abs=1e-6), step


def test_epoch_pass_with_chosen_random_views_is_seeded():
    """``dataset_pass(fn, views=...)`` hands fn the Views of a seeded generator: the same epoch
    gives the same views, another epoch other views."""
    from tagless.augment import build_views, two_views
    from tagless.engine.epoch import EpochPass
    from tagless.methods import DataInfo

    images = np.random.default_rng(1).integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    data = DataInfo.from_arrays(images, np.zeros(10), ["x"], "single")
    views = build_views(two_views(global_size=8))
    settings = dict(size=8, crop_fraction=1.0, mean=(0.5,) * 3, std=(0.25,) * 3)
    run = lambda epoch: EpochPass(epoch, data, torch.device("cpu"), settings, seed=3).dataset_pass(
        lambda v: torch.cat([v.crops[0].flatten(1), v.boxes[0]], 1), views=views, batch_size=4)[1]
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_monitor_uses_the_methods_own_classifier_on_multilabel_data():
    """For multi-label data the monitor's mAP@class comes from ``class_scores`` when the method
    has it (in eval mode, on the eval view), else from kNN scores of the backbone."""
    from sklearn.metrics import average_precision_score

    from tagless.augment import eval_view
    from tagless.data import build_dataset
    from tagless.engine.monitor import monitor

    cfg = load_config("demo_moco", ["data.source=digit_scenes", "data.scene_count=120", "data.image_size=16",
                                    "views.global_size=16", "model.width=0.125"])
    train_set, test_set = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")

    class WithClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 8))
            self.classifier = torch.nn.Linear(3 * 16 * 16, 10)
            self.dropout = torch.nn.Dropout(0.9)  # eval mode must switch it off

        def class_scores(self, x):
            return self.classifier(self.dropout(x.flatten(1)))

    method = WithClassifier()
    got = monitor(method, train_set, test_set, cfg, torch.device("cpu"))
    with torch.no_grad():
        x = eval_view(torch.as_tensor(test_set.images).permute(0, 3, 1, 2), 16)
        scores = method.classifier(x.flatten(1)).numpy()
    y = np.asarray(test_set.targets)
    aps = [average_precision_score(y[:, c] == 1, scores[:, c]) for c in range(10) if (y[:, c] == 1).any()]
    assert got["map_class"] == pytest.approx(100 * np.mean(aps), abs=1e-6)
    assert "knn_top1" not in got and method.training  # the mode is restored
    del WithClassifier.class_scores  # without a classifier: kNN scores of the backbone
    assert monitor(method, train_set, test_set, cfg, torch.device("cpu"))["map_class"] != got["map_class"]


# What each method needs beyond the shared tiny config (its views, a queue the batch can fill).
METHOD_EXTRA = {
    "swav": ["views.recipe=multi_crop", "views.local_size=8", "method.num_prototypes=10", "method.proj_hidden_dim=32",
             "method.freeze_prototypes_iters=0"],
    "logo": ["views.recipe=logo", "views.local_size=8", "method.queue_size=32"],
    "mls": ["method.queue_size=32", "method.topk=4"],
    "sela": ["method.num_clusters=10", "method.num_heads=2"],
    "multilabel": ["data.source=digit_scenes", "data.scene_count=120", "views.recipe=multilabel"],
}


def registered_methods() -> list[str]:
    from tagless.methods import METHODS

    return sorted(set(METHODS) | {"dummy"})


@pytest.mark.parametrize("name", registered_methods())
def test_every_registered_method_follows_the_contract(name, tmp_path):
    """Each METHODS entry builds from its config section, satisfies the Method protocol, and
    runs one step forward and backward with finite loss and gradients."""
    from tagless.methods import METHODS, Batch, Method

    trainer = Trainer(config(tmp_path, name, f"method.name={name}", "train.knn_every_epochs=0",
                             *METHOD_EXTRA.get(name, [])),
                      progress=False)
    assert isinstance(trainer.method, Method) and isinstance(trainer.method, METHODS[name])
    assert type(trainer.cfg.method) is METHODS[name].Config
    trainer.start_epoch(0)
    images, index, target = trainer.fetch(0)
    logs = trainer.train_step(Batch(images, index, target, 0, 0, torch.Generator().manual_seed(0)))
    assert torch.isfinite(logs["loss"])
    grads = [p.grad for g in trainer.optimizers.optimizers["main"].param_groups for p in g["params"]]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", registered_methods())
def test_every_method_under_cpu_bf16_autocast(name, tmp_path):
    """The GPU's precision path (train.amp: bf16 autocast) run on the CPU: the epoch pass and two
    steps of every method give finite fp32 losses and finite gradients, close to the fp32 run."""
    from tagless.methods import Batch

    losses = {}
    for amp in ("off", "bf16"):
        trainer = Trainer(config(tmp_path, f"{name}_{amp}", f"method.name={name}", "train.knn_every_epochs=0",
                                 f"train.amp={amp}", *METHOD_EXTRA.get(name, [])), progress=False)
        assert trainer.amp == (amp == "bf16")
        trainer.start_epoch(0)
        for step in range(2):
            images, index, target = trainer.fetch(step)
            logs = trainer.train_step(Batch(images, index, target, step, 0, torch.Generator().manual_seed(step)))
            assert logs["loss"].dtype == torch.float32 and torch.isfinite(logs["loss"]), (amp, step)
        grads = [p.grad for g in trainer.optimizers.optimizers["main"].param_groups for p in g["params"]]
        assert all(g is None or torch.isfinite(g).all() for g in grads)
        losses[amp] = float(logs["loss"])
    assert losses["bf16"] == pytest.approx(losses["off"], rel=0.1, abs=0.05)  # bf16 rounding, not another loss
