"""Optimisers, schedules, samplers and checkpoint files."""

import numpy as np
import pytest
import torch

from tagless.checkpoint import FORMAT, load_checkpoint, save_atomic
from tagless.engine.batches import EpochSampler
from tagless.engine.config import OptimConfig
from tagless.engine.optim import LARS, build_optimizer, lr_schedule, set_lr
from tagless.errors import TaglessError


def test_cosine_schedule_with_warmup_by_hand():
    cfg = OptimConfig(schedule="cosine", warmup_epochs=1, final_lr_fraction=0.1)
    mult = lr_schedule(cfg, steps_per_epoch=4, epochs=3)
    assert len(mult) == 12
    np.testing.assert_allclose(mult[:4], [0.25, 0.5, 0.75, 1.0])
    # after warm-up: 0.1 + 0.9 * 0.5 * (1 + cos(pi * (s - 4) / 8))
    for s in range(4, 12):
        assert mult[s] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (s - 4) / 8)))


def test_step_schedule():
    cfg = OptimConfig(schedule="step", step_milestones_epochs=(1, 2), step_gamma=0.1)
    np.testing.assert_allclose(lr_schedule(cfg, 2, 3), [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_fixed_lr_group_keeps_base_lr():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = build_optimizer(OptimConfig(lr_per_256=0.1),
                          [{"params": a.parameters()}, {"params": b.parameters(), "fixed_lr": True}], 512)
    set_lr(opt, 0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # 0.2 * 0.5
    assert opt.param_groups[1]["lr"] == pytest.approx(0.2)


def test_lars_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.grad = torch.tensor([0.0, 1.0])
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.02)
    opt.step()
    d = np.array([0.0, 1.0]) + 0.5 * np.array([3.0, 4.0])
    trust = 0.02 * 5.0 / np.linalg.norm(d)
    np.testing.assert_allclose(w.detach().numpy(), np.array([3.0, 4.0]) - 0.1 * trust * d, rtol=1e-6)


def test_sampler_is_seeded_and_sharded():
    full = EpochSampler(20, 8, seed=3)
    r0, r1 = EpochSampler(20, 8, seed=3, rank=0, world_size=2), EpochSampler(20, 8, seed=3, rank=1, world_size=2)
    assert full.steps_per_epoch == 2
    for epoch in range(2):
        for i in range(2):
            np.testing.assert_array_equal(np.concatenate([r0.indices(epoch, i), r1.indices(epoch, i)]),
                                          full.indices(epoch, i))
    assert not np.array_equal(full.indices(0, 0), full.indices(1, 0))
    assert len(set(np.concatenate([full.indices(0, 0), full.indices(0, 1)]))) == 16
    with pytest.raises(ValueError, match="larger than the dataset"):
        EpochSampler(4, 8, seed=0)


def test_checkpoint_atomic_and_validated(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_atomic({"format": FORMAT, "backbone": {"w": torch.ones(2)}, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left
    # truncated file
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TaglessError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    # a foreign torch file
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(TaglessError, match="not a tagless checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(TaglessError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_checkpoint_with_code_is_refused(tmp_path):
    """weights_only loading never executes pickled code."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "x": Evil()}, path)
    with pytest.raises(TaglessError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"format": FORMAT, "step": 1}, path)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TaglessError, match="No space left"):
        save_atomic({"format": FORMAT, "step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_checkpoint_and_cache_get_the_umask_mode(tmp_path):
    """mkstemp/mkdtemp make 0600/0700 files; a checkpoint and a cache entry get the mode a
    plain write gives under the user's umask."""
    import os
    import stat

    from tagless.data import ImageDataset

    old = os.umask(0o022)
    try:
        save_atomic({"format": FORMAT, "step": 1}, tmp_path / "ck" / "last.pt")
        plain = tmp_path / "plain"
        plain.write_bytes(b"x")
        assert stat.S_IMODE((tmp_path / "ck" / "last.pt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
        from tagless.data.cache import cached

        ds = ImageDataset(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), ["a"], "single")
        cached(tmp_path / "cache" / "entry", "k", lambda tmp: (ds, [], 2))
        assert stat.S_IMODE((tmp_path / "cache" / "entry").stat().st_mode) == 0o755
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in (tmp_path / "cache" / "entry").iterdir())
    finally:
        os.umask(old)


def test_adam_with_an_absolute_lr_and_extra_optimisers_keep_their_own():
    """optim.name=adam is torch's Adam (L2 in the gradient, Cole et al.'s optimiser); optim.lr
    is the lr whatever the batch; an extra optimiser with its own lr_per_256 ignores optim.lr."""
    from types import SimpleNamespace

    from tagless.engine.optim import ScheduledOptimizers
    from tagless.methods.contract import OptimizerSpec

    main, side = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    method = SimpleNamespace(param_groups=lambda: [{"params": list(main.parameters())}],
                             optimizers=lambda: [OptimizerSpec("side", [{"params": list(side.parameters())}],
                                                               {"name": "sgd", "lr_per_256": 0.5})])
    cfg = OptimConfig(name="adam", lr=1e-3, weight_decay=0.0, schedule="constant")
    for batch in (8, 16):
        opts = ScheduledOptimizers(cfg, method, batch, steps_per_epoch=4, epochs=2)
        adam, other = opts.optimizers["main"], opts.optimizers["side"]
        assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 0.0
        assert opts.set_lr(0)["main"] == pytest.approx(1e-3)  # not scaled by the batch
        assert type(other) is torch.optim.SGD and other.param_groups[0]["lr"] == pytest.approx(0.5 * batch / 256)
    with pytest.raises(TaglessError, match="optim.lr"):
        OptimConfig(lr=-1.0).validate()
