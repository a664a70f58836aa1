"""SwAV (methods/swav.py, losses/swav.py) against independent computations: the swapped loss
by hand on a tiny case, the codes as SwAV's Sinkhorn written out here, prototype
normalisation and freezing, the feature queue, one backbone pass per crop, 1 process against 2
gloo processes, a few SGD steps, and a short run of the bundled recipe."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import swav_reference
from ddp_helpers import run_in_processes
from run_helpers import records
from tagless import distributed as dist
from tagless.augment import build_views
from tagless.augment.recipes import multi_crop
from tagless.errors import TaglessError
from tagless.losses.swav import swav_loss
from tagless.methods import Batch
from tagless.methods import swav as swav_module
from tagless.methods.swav import SwAV, SwavConfig
from tagless.models import build_backbone

B = 8
SMALL = dict(proj_hidden_dim=32, proj_dim=16, num_prototypes=12, freeze_prototypes_iters=0)


def fixed_views(images, generator):
    """Deterministic per-sample views: 2 globals at full size, 2 locals at half size."""
    x = images.float() / 255.0
    crops = [x, x.flip(3) * 0.9 + 0.05, x[:, :, ::2, ::2], x[:, :, 1::2, 1::2] * 0.8 + 0.1]
    return SimpleNamespace(crops=crops, kinds=["global", "global", "local", "local"])


def make_swav(views=fixed_views, **fields) -> SwAV:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    return SwAV(backbone, views, SwavConfig(**{**SMALL, **fields}), seed=0)


def images(n: int = B, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def batch(x: torch.Tensor, step: int = 0, epoch: int = 0) -> Batch:
    n = x.shape[0]
    return Batch(x, torch.arange(n), torch.full((n,), -1), step, epoch, torch.Generator().manual_seed(5))


def swav_codes(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """SwAV's codes by its own formula (tests/swav_reference.py), in float32."""
    return swav_reference.swav_codes(scores, eps, iters).float()


def spy_loss(monkeypatch) -> dict:
    """Record the scores and codes the method hands to swav_loss."""
    seen, real = {}, swav_module.swav_loss

    def spy(scores, codes, assign, temperature):
        seen.update(scores=[s.detach().clone() for s in scores], codes=[q.clone() for q in codes],
                    assign=list(assign), scores_grad=[s.requires_grad for s in scores],
                    codes_grad=[q.requires_grad for q in codes])
        return real(scores, codes, assign, temperature)

    monkeypatch.setattr(swav_module, "swav_loss", spy)
    return seen


# --- the loss ------------------------------------------------------------------------------

def hand_loss(scores, codes, assign, t):
    """[0] Eq. 1-2 with multi-crop in plain Python: for each assigned crop i, mean over the
    other crops v of mean_b -sum_k q_ibk (s_vbk / t - log sum_k' exp(s_vbk' / t)); mean over i."""
    total = 0.0
    for q, i in zip(codes, assign):
        others = [v for v in range(len(scores)) if v != i]
        sub = 0.0
        for v in others:
            ce = 0.0
            for b in range(len(q)):
                row = [s / t for s in scores[v][b]]
                lse = math.log(sum(math.exp(r) for r in row))
                ce -= sum(qk * (r - lse) for qk, r in zip(q[b], row))
            sub += ce / len(q)
        total += sub / len(others)
    return total / len(assign)


def test_swapped_loss_tiny_case_by_hand():
    """2 global + 1 local crops, 3 samples, 4 prototypes; codes from SwAV's formula."""
    s = torch.tensor([[[0.9, 0.1, -0.3, 0.2], [-0.5, 0.8, 0.0, 0.1], [0.2, -0.1, 0.7, -0.6]],
                      [[0.6, 0.3, -0.2, 0.0], [-0.1, 0.9, -0.4, 0.2], [0.1, 0.0, 0.5, -0.8]],
                      [[0.3, -0.2, 0.1, 0.4], [0.0, 0.5, 0.5, -0.5], [-0.3, 0.2, 0.8, 0.1]]])
    scores = list(s)
    codes = [swav_codes(scores[0]), swav_codes(scores[1])]
    assert torch.allclose(codes[0].sum(1), torch.ones(3), atol=1e-6)
    expected = hand_loss(s.tolist(), [c.tolist() for c in codes], [0, 1], 0.1)
    assert swav_loss(scores, codes, [0, 1]) == pytest.approx(expected, rel=1e-5)
    # the same pieces put together wrongly give other numbers: no swap (crop i predicts its
    # own codes too), unswapped codes, a different temperature
    assert hand_loss(s.tolist(), [c.tolist() for c in codes[::-1]], [0, 1], 0.1) != pytest.approx(expected, rel=1e-3)
    assert float(swav_loss(scores, codes, [0, 1], temperature=0.2)) != pytest.approx(expected, rel=1e-3)
    with_self = sum(float(-(q * F.log_softmax(s[v] / 0.1, 1)).sum(1).mean()) for q in codes for v in range(3)) / 6
    assert with_self != pytest.approx(expected, rel=1e-3)
    # equal scores: every softmax is uniform, so the loss is log K whatever the codes
    assert float(swav_loss([torch.zeros(3, 4)] * 3, codes, [0, 1])) == pytest.approx(math.log(4), rel=1e-6)
    # a gradient reaches the scores and none the codes
    leaf = [x.clone().requires_grad_(True) for x in scores]
    swav_loss(leaf, [c.clone().requires_grad_(True) for c in codes], [0, 1]).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in leaf)


# --- codes, scores and prototypes ---------------------------------------------------------

def independent_scores(method: SwAV, x: torch.Tensor) -> list[torch.Tensor]:
    """normalize(head(backbone(.))) @ normalize(C)^T from copies taken before the step (train
    mode, the globals in one backbone call and the locals in another, the head on all)."""
    backbone, head = copy.deepcopy(method.backbone), copy.deepcopy(method.projector)
    w = F.normalize(method.prototypes.weight.detach().clone(), dim=1)
    crops = fixed_views(x, None).crops
    with torch.no_grad():
        feats = torch.cat([backbone(torch.cat(crops[:2])), backbone(torch.cat(crops[2:]))])
        return list((F.normalize(head(feats), dim=1) @ w.T).split(x.shape[0]))


def test_codes_are_sinkhorn_of_the_detached_scores(monkeypatch):
    method = make_swav()
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)  # rows far from unit norm
    x = images()
    ref_scores = independent_scores(method, x)
    seen = spy_loss(monkeypatch)
    loss, logs = method.step(batch(x))
    assert seen["assign"] == [0, 1] and len(seen["scores"]) == 4
    for s, r in zip(seen["scores"], ref_scores):
        assert torch.allclose(s, r, atol=1e-5)
    assert all(seen["scores_grad"]) and not any(seen["codes_grad"])
    for q, i in zip(seen["codes"], [0, 1]):
        ref = swav_codes(ref_scores[i])
        assert torch.allclose(q, ref, atol=1e-5)
        assert not torch.allclose(q, swav_codes(ref_scores[i], iters=1), atol=1e-3)  # 3 iterations, not 1
        assert not torch.allclose(q, F.softmax(ref_scores[i] / 0.05, 1), atol=1e-3)  # not a plain softmax
    assert torch.allclose(loss, swav_loss(ref_scores, [swav_codes(ref_scores[i]) for i in (0, 1)], [0, 1]), atol=1e-5)
    assert logs["code_max"] == pytest.approx(float(torch.stack([swav_codes(ref_scores[i]).max(1).values.mean()
                                                                  for i in (0, 1)]).mean()), abs=1e-5)


def test_prototype_usage_counts_the_argmax_of_codes_and_predictions():
    """The epoch's usage log: prototypes taken at least once and the largest share, from the
    first assigned crop's codes and scores, counted here by hand over two steps."""
    method = make_swav()
    codes_hits, pred_hits = [], []
    for seed in (0, 1):
        x = images(seed=seed + 1)
        ref = independent_scores(method, x)[0]
        codes_hits += swav_codes(ref).argmax(1).tolist()
        pred_hits += ref.argmax(1).tolist()
        method.step(batch(x, seed))
    logs = method.epoch_logs()
    for prefix, hits in (("codes", codes_hits), ("pred", pred_hits)):
        counts = torch.bincount(torch.tensor(hits), minlength=12)
        assert logs[f"{prefix}_prototypes_used"] == int((counts > 0).sum())
        assert logs[f"{prefix}_largest_share"] == pytest.approx(float(counts.max()) / len(hits))
    assert method.epoch_logs() == {}  # reset for the next epoch


def test_prototype_rows_have_unit_norm_after_a_step():
    method = make_swav()
    with torch.no_grad():
        method.prototypes.weight.copy_(torch.randn(12, 16, generator=torch.Generator().manual_seed(2)) * 3)
    before = method.prototypes.weight.detach().clone()
    assert not torch.allclose(before.norm(dim=1), torch.ones(12), atol=0.1)
    method.step(batch(images()))
    w = method.prototypes.weight.detach()
    assert torch.allclose(w.norm(dim=1), torch.ones(12), atol=1e-6)
    assert torch.allclose(w, F.normalize(before, dim=1), atol=1e-7)  # rescaled, not moved


def engine_step(method: SwAV, opt: torch.optim.Optimizer, b: Batch) -> tuple[torch.Tensor, bool]:
    """The engine's order: step, backward, before_optimizer_step('main'), opt.step, after_step."""
    loss, _ = method(b)
    opt.zero_grad()
    loss.backward()
    had_grad = method.prototypes.weight.grad is not None and bool(method.prototypes.weight.grad.abs().sum() > 0)
    method.before_optimizer_step("main", opt)
    opt.step()
    return loss.detach(), had_grad


def test_prototypes_frozen_for_the_first_steps():
    n_frozen = 2
    method = make_swav(freeze_prototypes_iters=n_frozen)
    opt = torch.optim.SGD(method.param_groups(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    start = F.normalize(method.prototypes.weight.detach().clone(), dim=1)
    head = method.projector[0].weight
    for step in range(4):
        head_before = head.detach().clone()
        _, had_grad = engine_step(method, opt, batch(images(seed=step), step=step))
        assert had_grad  # the loss does reach the prototypes: the freeze is the hook's
        w = method.prototypes.weight.detach()
        assert not torch.allclose(head, head_before)  # the rest trains from the first step
        if step < n_frozen:
            assert torch.allclose(w, start, atol=1e-7), step
        else:
            assert (w - start).abs().max() > 1e-4, step
    # and only the main optimiser's call freezes them
    method._step = 0
    method.prototypes.weight.grad = torch.ones_like(method.prototypes.weight)
    method.before_optimizer_step("critic", opt)
    assert method.prototypes.weight.grad is not None


# --- the queue -----------------------------------------------------------------------------

def test_queue_fills_from_its_epoch_and_joins_the_codes_once_full(monkeypatch):
    method = make_swav(queue_length=2 * B, queue_start_epochs=1)
    real_embed, zs = method.embed, []
    monkeypatch.setattr(method, "embed", lambda crops: zs.append(real_embed(crops).detach().clone()) or zs[-1])
    seen = spy_loss(monkeypatch)

    def run(step, epoch):
        queue_before = method.queue.clone()
        method.step(batch(images(seed=10 + step), step=step, epoch=epoch))
        z = zs[-1].split(B)
        return queue_before, [z[0], z[1]]

    run(0, 0)  # before queue_start_epochs: untouched
    assert not method.queue.any() and int(method.queue_count) == 0
    for q, i in zip(seen["codes"], (0, 1)):
        assert torch.allclose(q, swav_codes(seen["scores"][i]), atol=1e-5)
    _, z1 = run(1, 1)  # fills, not yet full: batch-only codes
    assert int(method.queue_count) == B
    for j in range(2):
        assert torch.equal(method.queue[j, :B], z1[j]) and not method.queue[j, B:].any()
        assert torch.allclose(seen["codes"][j], swav_codes(seen["scores"][j]), atol=1e-5)
    _, z2 = run(2, 1)
    assert int(method.queue_count) == 2 * B
    for j in range(2):
        assert torch.equal(method.queue[j], torch.cat([z2[j], z1[j]]))  # newest first
    queue, z3 = run(3, 1)  # full: codes from [queue scores; batch scores], last B rows
    w = method.prototypes.weight.detach()
    for j in range(2):
        full = swav_codes(torch.cat([queue[j] @ w.T, seen["scores"][j]]))[-B:]
        assert torch.allclose(seen["codes"][j], full, atol=1e-5)
        assert not torch.allclose(seen["codes"][j], swav_codes(seen["scores"][j]), atol=1e-3)
        assert torch.equal(method.queue[j], torch.cat([z3[j], z2[j]]))  # holds the last 2B z
    # the host copy of the fill level comes back with the state dict (resume)
    fresh = make_swav(queue_length=2 * B, queue_start_epochs=1)
    assert fresh._queue_count == 0
    fresh.load_state_dict(method.state_dict())
    assert fresh._queue_count == 2 * B and torch.equal(fresh.queue, method.queue)


# --- one backbone pass per crop ------------------------------------------------------------

def test_backbone_sees_every_crop_once():
    views = build_views(multi_crop(global_size=16, local_size=8, flip_p=0.0))
    method = make_swav(views=views)
    calls = []
    handle = method.backbone.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    try:
        method.step(batch(images()))
    finally:
        handle.remove()
    n_crops = 2 + 6
    assert sum(c[0] for c in calls) == n_crops * B
    assert calls == [(2 * B, 3, 16, 16), (6 * B, 3, 8, 8)]  # one call per resolution, as SwAV


# --- 1 process against 2 ------------------------------------------------------------------

def one_step(model, method: SwAV, x: torch.Tensor) -> dict:
    seen = {}
    with pytest.MonkeyPatch.context() as mp:
        real = swav_module.swav_loss
        mp.setattr(swav_module, "swav_loss", lambda s, q, a, t: seen.update(codes=q, scores=s) or real(s, q, a, t))
        loss, _ = model(batch(x))
    loss.backward()
    return {"loss": dist.all_reduce_mean(loss.detach()), "codes": torch.stack(seen["codes"]),
            "scores": torch.stack([s.detach() for s in seen["scores"]]),
            "grad_prototypes": method.prototypes.weight.grad.clone(),
            "grad_head": method.projector[0].weight.grad.clone()}


def _ddp_worker(rank, world_size, out_dir):
    method = make_swav()
    model = DistributedDataParallel(method, forward_sync_buffers=False)
    x = images(2 * B).chunk(world_size)[rank]
    torch.save(one_step(model, method, x), Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_equal_one_on_the_concatenated_batch(tmp_path):
    run_in_processes(_ddp_worker, 2, str(tmp_path))
    method = make_swav()
    single = one_step(method, method, images(2 * B))
    for rank in range(2):
        multi = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        rows = slice(rank * B, (rank + 1) * B)
        assert torch.allclose(multi["scores"], single["scores"][:, rows], atol=1e-5)
        assert torch.allclose(multi["codes"], single["codes"][:, rows], atol=1e-5)
        assert torch.allclose(multi["loss"], single["loss"], atol=1e-5)
        assert torch.allclose(multi["grad_prototypes"], single["grad_prototypes"], atol=1e-5, rtol=1e-4)
        assert torch.allclose(multi["grad_head"], single["grad_head"], atol=1e-5, rtol=1e-4)
        # the codes need the other rank's rows: Sinkhorn on this rank's rows alone differs
        own = torch.stack([swav_codes(single["scores"][i, rows]) for i in (0, 1)])
        assert not torch.allclose(own, single["codes"][:, rows], atol=1e-3)


# --- training ------------------------------------------------------------------------------

def test_sgd_steps_lower_the_loss(monkeypatch):
    """On one fixed batch, the swapped loss (recomputed from what the method hands swav_loss)
    falls over a few SGD steps."""
    method = make_swav()
    opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)
    seen, x, losses = spy_loss(monkeypatch), images(), []
    for s in range(10):
        engine_step(method, opt, batch(x, step=s))
        losses.append(float(swav_loss(seen["scores"], seen["codes"], seen["assign"])))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses


def test_recipe_trains_and_logs_finite_losses(tmp_path):
    from tagless.engine import Trainer
    from tagless.engine.run_config import load_config

    cfg = load_config("swav_scenes")
    assert isinstance(cfg.method, SwavConfig) and cfg.data.source == "digit_scenes" and cfg.views.recipe == "multi_crop"
    assert (cfg.views.global_size, cfg.views.local_size, cfg.views.flip_p, cfg.train.epochs) == (32, 16, 0.0, 50)
    cfg = load_config("swav_scenes", [
        f"out_dir={tmp_path}", "name=tiny", "data.scene_count=64", "data.image_size=16", "model.width=0.125",
        "views.global_size=16", "views.local_size=8", "views.num_local=2", "train.epochs=1", "train.batch_size=16",
        "train.log_every_steps=1", "train.knn_every_epochs=1", "method.num_prototypes=8", "method.proj_hidden_dim=32",
        "method.proj_dim=16", "method.freeze_prototypes_iters=1", "method.queue_length=16",
        "method.queue_start_epochs=0"])
    result = Trainer(cfg, progress=False).run()
    rows = records(result.run_dir, "train")
    assert len(rows) == result.steps >= 2
    assert all(math.isfinite(r["loss"]) and 0 < r["code_max"] <= 1 for r in rows)


def test_config_errors_are_one_line():
    bad = (({"crops_for_assign": []}, "crops_for_assign"), ({"crops_for_assign": [0, 0]}, "crops_for_assign"),
           ({"epsilon": 0.0}, "epsilon"), ({"queue_length": -1}, "queue_length"))
    for fields, key in bad:
        with pytest.raises(TaglessError, match=key) as e:
            SwavConfig(**fields).validate()
        assert "\n" not in str(e.value)
    method = make_swav(crops_for_assign=[0, 4])
    with pytest.raises(TaglessError, match="crops_for_assign"):
        method.step(batch(images()))
