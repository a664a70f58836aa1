"""LoGo (paper 004) against independent computations: the critic's JSD objective, the encoder's
local-local term, MoCo-LoGo's and SimSiam-LoGo's L_gg / L_lg, the derangement, the isolation of
the critic from the encoder (both ways), one encoder pass per crop, the clipped second update of
the official MoCo-LoGo, the critic's constant lr, the bundled recipes, and the L_ll gradient
averaged over 2 gloo processes.

References are written out here (loops over rows, softplus as log(1 + e^t), InfoNCE as
log-sum-exp minus the positive) or taken from copies of the encoders made before the step.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ddp_helpers import run_in_processes
from run_helpers import make_images, records
from tagless.augment import build_views, logo
from tagless.checkpoint import load_checkpoint
from tagless.engine import Trainer
from tagless.engine.run_config import load_config
from tagless.losses.logo import (
    critic_objective,
    derangement,
    local_local,
    moco_all_pairs_loss,
    moco_logo_loss,
    simsiam_all_pairs_loss,
    simsiam_logo_loss,
)
from tagless.methods import METHODS, Batch
from tagless.methods.logo import Logo, LogoConfig
from tagless.models import build_backbone

N = 8  # images per batch
T = 0.2


@pytest.fixture(autouse=True)
def logo_registered():
    before = METHODS.get("logo")
    METHODS["logo"] = Logo
    yield
    if before is None:
        METHODS.pop("logo", None)
    else:
        METHODS["logo"] = before


def fixed_views(images, generator=None):
    """Deterministic crops known to the test: 2 globals at 16 px, 2 locals at 8 px."""
    x = images.float() / 255.0
    small = lambda c: F.interpolate(c, size=8, mode="bilinear", align_corners=False)
    crops = [x, x.flip(3) * 0.9 + 0.05, small(x[:, :, :12, :12]), small(x[:, :, 4:, 2:14])]
    return SimpleNamespace(crops=crops, kinds=["global", "global", "local", "local"])


def make(base: str = "moco", views=fixed_views, **kw) -> Logo:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    cfg = LogoConfig(base=base, queue_size=24, proj_dim=16, proj_hidden_dim=32, pred_hidden_dim=8,
                     critic_hidden=32, momentum=0.9, temperature=T, bn_mode="local", **kw)
    cfg.validate()
    method = Logo(backbone, views, cfg, seed=0)
    if base == "moco":  # f_k starts as a copy of f_q; move it so "which encoder" shows
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in method.encoder_k.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return method


def batch(images: torch.Tensor, seed: int = 5) -> Batch:
    n = images.shape[0]
    return Batch(images, torch.arange(n), torch.full((n,), -1), 0, 0, torch.Generator().manual_seed(seed))


def close(a, b, atol=1e-6) -> bool:
    return torch.allclose(torch.as_tensor(a).float(), torch.as_tensor(b).float(), atol=atol, rtol=1e-5)


def sp(t: float) -> float:
    return math.log1p(math.exp(t))


# --- the pure losses on hand-computed tiny cases ------------------------------------------


def linear_critic(w: torch.Tensor, c: float):
    return lambda x: x @ w[:, None] + c


def test_critic_objective_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    b = torch.tensor([[0.0, -1.0], [0.8, 0.6], [1.0, 0.0]])
    na = torch.tensor([[0.1, 0.0], [0.0, -0.2], [0.05, 0.05]])
    nb = torch.tensor([[0.0, 0.3], [-0.1, 0.0], [0.2, -0.1]])
    perm = torch.tensor([2, 0, 1])
    w, c = torch.tensor([0.5, -1.0, 2.0, 0.25]), 0.1
    T_ = lambda x: sum(wi * xi for wi, xi in zip(w.tolist(), x)) + c
    add = lambda u, v: [ui + vi for ui, vi in zip(u, v)]
    A, B, NA, NB = a.tolist(), b.tolist(), na.tolist(), nb.tolist()
    expected = 0.0
    for i in range(3):  # noise on the positives only (same draws in both orders); negatives b[perm[i]]
        expected += (0.5 * sp(-T_(add(A[i], NA[i]) + add(B[i], NB[i])))
                     + 0.5 * sp(-T_(add(B[i], NA[i]) + add(A[i], NB[i]))))
        expected += 0.5 * sp(T_(A[i] + B[perm[i]])) + 0.5 * sp(T_(B[i] + A[perm[i]]))
    expected /= 3
    a_leaf = a.clone().requires_grad_(True)
    got = critic_objective(linear_critic(w, c), a_leaf, b, na, nb, perm)
    assert close(got, expected)
    assert not got.requires_grad  # detached inputs and a parameter-free critic: nothing to differentiate
    # sensitivity: the reversed permutation or the noise on the negatives too would differ
    assert not close(critic_objective(linear_critic(w, c), a, b, na, nb, torch.tensor([1, 2, 0])), expected, 1e-4)
    assert not close(critic_objective(linear_critic(w, c), a, b, na * 0, nb * 0, perm), expected, 1e-4)


def test_local_local_term_and_its_gradient_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    b = torch.tensor([[0.0, 1.0], [-0.8, 0.6]], requires_grad=True)
    w, c = torch.tensor([1.0, -2.0, 0.5, 3.0]), -0.2
    t = [1.0 * 1 - 2.0 * 0 + 0.5 * 0 + 3.0 * 1 - 0.2, 1.0 * 0.6 - 2.0 * 0.8 + 0.5 * -0.8 + 3.0 * 0.6 - 0.2]
    got = local_local(linear_critic(w, c), a, b)
    assert close(got, (sp(t[0]) + sp(t[1])) / 2)  # the critic's "negative" head on the positive pair
    got.backward()
    sig = [1 / (1 + math.exp(-ti)) for ti in t]  # d sp(t) / dt
    assert close(a.grad, torch.tensor([[s * 1.0, s * -2.0] for s in sig]) / 2)
    assert close(b.grad, torch.tensor([[s * 0.5, s * 3.0] for s in sig]) / 2)


def test_derangement_has_no_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in range(2, 10):
        seen = set()
        for _ in range(30):
            d = derangement(n, g)
            assert sorted(d.tolist()) == list(range(n)) and not (d == torch.arange(n)).any(), d
            seen.add(tuple(d.tolist()))
        assert len(seen) > 1 or n == 2  # random, not a fixed pattern such as flip(0)
    assert derangement(2, g).tolist() == [1, 0]


def nce(q, k, queue, t=T):
    """InfoNCE written out: log-sum-exp over [q.k, q.queue] / t minus the positive."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    pos = (q * k).sum(1) / t
    return (torch.logsumexp(torch.cat([pos[:, None], q @ queue.t() / t], 1), 1) - pos).mean()


def test_moco_logo_loss_is_the_mean_of_its_nce_terms():
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)
    qg, ql, kg, queue = [r(4, 5) for _ in range(2)], [r(4, 5) for _ in range(3)], [r(4, 5) for _ in range(2)], r(7, 5)
    kg = [F.normalize(k, dim=1) for k in kg]
    queue = F.normalize(queue, dim=1)
    loss, l_gg, l_lg = moco_logo_loss(qg, ql, kg, queue, T)
    gg = [nce(qg[0], kg[1], queue), nce(qg[1], kg[0], queue)]
    lg = [nce(q, k, queue) for q in ql for k in kg]
    assert close(loss, (sum(gg) + sum(lg)) / 8)  # (2 + 2 x 3 locals) terms
    assert close(l_gg, sum(gg) / 2) and close(l_lg, sum(lg) / 6)
    assert not close(loss, (nce(qg[0], kg[0], queue) + nce(qg[1], kg[1], queue) + sum(lg)) / 8, 1e-4)


def test_simsiam_logo_loss_hand_computed():
    p_l = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    z_g = [torch.tensor([[2.0, 0.0]], requires_grad=True), torch.tensor([[0.0, 3.0]], requires_grad=True)]
    p_g = [torch.tensor([[0.0, 1.0]], requires_grad=True), torch.tensor([[3.0, 4.0]], requires_grad=True)]
    loss, l_gg, l_lg = simsiam_logo_loss(p_g, z_g, p_l)
    # D(p, z) = -cos: cos(l1, g1) = 1, cos(l1, g2) = 0, cos(l2, g1) = cos(l2, g2) = 1 / sqrt 2
    assert close(l_lg, -(1 + 0 + 2 / math.sqrt(2)) / 4)
    # L_gg = (D(p_g1, z_g2) + D(p_g2, z_g1)) / 2 = (-1 - 0.6) / 2
    assert close(l_gg, -0.8) and close(loss, -0.8 - (1 + math.sqrt(2)) / 4)
    loss.backward()
    assert all(z.grad is None for z in z_g) and all(p.grad is not None for p in p_g)  # stop-gradient on z


def test_all_pairs_losses_are_means_over_ordered_pairs_of_crops():
    """The supplement's "4-crop" baseline: every crop a positive of every other, both ways."""
    g = torch.Generator().manual_seed(2)
    q = [torch.randn(4, 5, generator=g) for _ in range(3)]
    k = [F.normalize(torch.randn(4, 5, generator=g), dim=1) for _ in range(3)]
    queue = F.normalize(torch.randn(6, 5, generator=g), dim=1)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    assert close(moco_all_pairs_loss(q, k, queue, T), sum(nce(q[i], k[j], queue) for i, j in pairs) / 6)
    p = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])]
    z = [torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 0.0]])]
    # -cos over the 6 ordered pairs: (0,1) 0, (0,2) -1, (1,0) 0, (1,2) 0, (2,0) 1/sqrt2, (2,1) 1/sqrt2
    assert close(simsiam_all_pairs_loss(p, z), -(0 - 1 + 0 + 0 + 2 / math.sqrt(2)) / 6)


@pytest.mark.parametrize("base", ["moco", "simsiam"])
def test_all_pairs_objective_has_no_critic_and_keys_every_crop(base):
    method = make(base, objective="all_pairs")
    assert method.critic is None and method.optimizers() == []
    images = make_images(N)
    loss, logs = method.step(batch(images))
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"loss"}
    assert all(p.grad is not None for p in method.encoder.parameters() if p.requires_grad)
    if base == "moco":
        method.after_step()
        assert int(method.queue.ptr) == N  # one key per image


# --- the method against copies of its networks -------------------------------------------


def test_moco_logo_step_against_copies_of_the_encoders():
    method = make("moco", ll_weight=0.5)
    images = make_images(N)
    enc_q, enc_k, queue = copy.deepcopy(method.encoder), copy.deepcopy(method.encoder_k.net), method.queue.items.clone()
    crops = fixed_views(images).crops
    with torch.no_grad():
        q = enc_q(torch.cat(crops[:2])).chunk(2)
        ql = enc_q(torch.cat(crops[2:])).chunk(2)
        k = F.normalize(enc_k(torch.cat(crops[:2])), dim=1).chunk(2)
    loss, logs = method.step(batch(images))
    gg = [nce(q[0], k[1], queue), nce(q[1], k[0], queue)]
    lg = [nce(x, y, queue) for x in ql for y in k]
    assert close(logs["L_gg"], sum(gg) / 2, 1e-5) and close(logs["L_lg"], sum(lg) / 4, 1e-5)
    main = (sum(gg) + sum(lg)) / 6
    assert close(loss, main + logs["critic_loss"] + 0.5 * logs["L_ll"], 1e-5)
    # the keys from the query encoder would differ (the key encoder sees the globals)
    qk = [F.normalize(x, dim=1) for x in q]
    assert not close(logs["L_gg"], (nce(q[0], qk[1], queue) + nce(q[1], qk[0], queue)) / 2, 1e-3)
    method.after_step()  # one key per image, global crop 2's, as method moco
    assert close(method.queue.items[:N], k[1], 1e-5) and int(method.queue.ptr) == N


def test_simsiam_logo_local_global_term_against_copies():
    method = make("simsiam")
    images = make_images(N)
    enc, pred = copy.deepcopy(method.encoder), copy.deepcopy(method.predictor)
    crops = fixed_views(images).crops
    with torch.no_grad():
        zg, zl = enc(torch.cat(crops[:2])), enc(torch.cat(crops[2:]))
        pg, pl = pred(zg).chunk(2), pred(zl).chunk(2)
    zg = zg.chunk(2)
    loss, logs = method.step(batch(images))
    D = lambda p, z: -F.cosine_similarity(p, z, dim=1).mean()
    l_lg = sum(D(p, z) for p in pl for z in zg) / 4
    assert close(logs["L_lg"], l_lg, 1e-5)
    assert close(logs["L_gg"], (D(pg[0], zg[1]) + D(pg[1], zg[0])) / 2, 1e-5)
    assert close(loss, logs["L_gg"] + l_lg + logs["critic_loss"] + 1e-4 * logs["L_ll"], 1e-5)


def grads(params) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


def step_grads(method: Logo, images, patch=None, monkeypatch=None):
    if patch is not None:
        monkeypatch.setattr("tagless.methods.logo.critic_objective", patch)
    loss, logs = method.step(batch(images))
    loss.backward()
    return grads(method.encoder.parameters()), grads(method.critic.parameters()), logs


@pytest.mark.parametrize("base", ["moco", "simsiam"])
def test_critic_and_encoder_terms_do_not_leak(base, monkeypatch):
    """Encoder gradients with and without the critic objective are equal; critic gradients with
    and without L_ll (lambda = 1 against 0) are equal, while the encoder's differ."""
    images = make_images(N)
    ref = make(base, ll_weight=1.0)
    no_ll = copy.deepcopy(ref)
    no_ll.cfg = dataclasses.replace(ref.cfg, ll_weight=0.0)
    no_critic = copy.deepcopy(ref)
    enc, crit, _ = step_grads(ref, images)
    enc0, crit0, _ = step_grads(no_ll, images)
    real = critic_objective
    enc1, _, _ = step_grads(no_critic, images, lambda *args: 0.0 * real(*args), monkeypatch)
    assert all(close(x, y, 1e-7) for x, y in zip(enc, enc1))  # the critic objective: no gradient into f
    assert all(close(x, y, 1e-7) for x, y in zip(crit, crit0))  # L_ll: no gradient into T
    assert any(c.abs().sum() > 0 for c in crit)  # the critic does learn from its objective
    assert not all(close(x, y, 1e-9) for x, y in zip(enc, enc0))  # L_ll does reach the encoder


@pytest.mark.parametrize("base, n_local", [("moco", 2), ("moco", 3), ("simsiam", 2)])
def test_every_crop_passes_the_encoder_once(base, n_local):
    """Rows through the backbone per step = n_crops x B, on the real view maker; MoCo's key
    encoder sees the 2 global crops only."""
    views = build_views(logo(global_size=16, local_size=8, num_local=n_local, blur_p=0.0))
    method = make(base, views=views)
    rows, key_rows = [], []
    method.backbone.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    if base == "moco":
        method.encoder_k.net[0].register_forward_hook(lambda m, i, o: key_rows.append(i[0].shape[0]))
    loss, _ = method.step(batch(make_images(N)))
    loss.backward()
    assert sum(rows) == (2 + n_local) * N and len(rows) == 2  # globals in one call, locals in another
    assert key_rows == ([2 * N] if base == "moco" else [])


def test_logo_needs_two_globals_and_two_locals():
    from tagless.errors import TaglessError

    with pytest.raises(TaglessError, match="2 global and >= 2 local"):
        make("moco", views=build_views(logo(global_size=16, local_size=8, num_local=1)))
    with pytest.raises(TaglessError, match="bn_mode"):
        LogoConfig(base="simsiam", bn_mode="shuffle").validate()


# --- the clipped second update (official MoCo-LoGo) --------------------------------------


@pytest.mark.parametrize("clip_ratio", [1e-6, 1e6])
def test_clipped_update_norm_is_min_of_ll_and_ratio_times_main(clip_ratio):
    """In clipped mode the returned loss holds no L_ll; the 'logo' optimiser sees grad L_ll (the
    difference of lambda = 1 and lambda = 0 runs) scaled to min(|g_ll|, clip_ratio |g_main|)."""
    images = make_images(N)
    clipped = make("moco", ll_mode="clipped", clip_ratio=clip_ratio)
    w1, w0 = copy.deepcopy(clipped), copy.deepcopy(clipped)
    for m, lam in ((w1, 1.0), (w0, 0.0)):
        m.cfg = dataclasses.replace(clipped.cfg, ll_mode="weighted", ll_weight=lam)
    g1, _, _ = step_grads(w1, images)
    g_main, _, _ = step_grads(w0, images)
    g_ll = [x - y for x, y in zip(g1, g_main)]
    norm = lambda gs: float(torch.sqrt(sum((x.double() ** 2).sum() for x in gs)))
    got_main, _, _ = step_grads(clipped, images)
    assert all(close(x, y, 1e-7) for x, y in zip(got_main, g_main))  # main sees no L_ll
    params = list(clipped.encoder.parameters())
    clipped.before_optimizer_step("main", None)
    clipped.before_optimizer_step("critic", None)
    clipped.before_optimizer_step("logo", None)
    seen = grads(params)
    expected = min(norm(g_ll), clip_ratio * norm(g_main))
    assert norm(seen) == pytest.approx(expected, rel=1e-4)
    scale = expected / norm(g_ll)
    assert norm([s / scale - g for s, g in zip(seen, g_ll)]) < 1e-4 * norm(g_ll)  # along grad L_ll
    assert (clip_ratio * norm(g_main) < norm(g_ll)) == (clip_ratio < 1)  # both regimes are exercised


# --- short Trainer runs of the bundled recipes -------------------------------------------

TINY = ["data.scene_count=64", "data.image_size=16", "views.global_size=16", "views.local_size=8",
        "model.width=0.125", "train.epochs=1", "train.batch_size=16", "train.knn_every_epochs=0",
        "train.log_every_steps=1", "method.queue_size=64"]


@pytest.mark.parametrize("recipe, slots", [("logo_scenes", {"main", "critic", "logo"}),
                                           ("simsiam_logo_scenes", {"main", "critic"})])
def test_recipe_runs_with_a_constant_critic_lr(recipe, slots, tmp_path):
    cfg = load_config(recipe, [f"out_dir={tmp_path}", f"name={recipe}", *TINY])
    assert cfg.method.name == "logo" and cfg.views.recipe == "logo" and cfg.views.local_scale == (0.08, 0.6)
    trainer = Trainer(cfg, progress=False)
    result = trainer.run()
    rows = records(result.run_dir, "train")
    assert result.steps == len(rows) >= 3
    for key in ("loss", "L_gg", "L_lg", "L_ll", "critic_loss", "critic_min", "critic_max"):
        assert all(math.isfinite(r[key]) for r in rows), key
    lrs = [r["lr"] for r in rows]
    assert len(set(lrs)) == len(lrs)  # the main optimiser follows its schedule (warm-up here)...
    assert [r["lr_critic"] for r in rows] == pytest.approx([0.03 * 16 / 256] * len(rows))  # ...the critic's is constant
    if "logo" in slots:
        assert [r["lr_logo"] for r in rows] == pytest.approx(lrs)  # the main optimiser's schedule
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert set(ckpt["optimizers"]) == slots
    assert all(s["momentum_buffer"] is not None for s in ckpt["optimizers"]["critic"]["state"].values())


# --- the L_ll gradient under DDP ---------------------------------------------------------


def _ddp_gradient_worker(rank, world_size, out_dir):
    method = make("moco", ll_mode="clipped")
    x = make_images(4).float()[rank * 2 : rank * 2 + 2] / 255  # each rank its own rows
    method.eval()
    l_rank = method.encoder(x).pow(2).mean() * (rank + 1)
    torch.save([g.clone() for g in method._gradient(l_rank)], Path(out_dir) / f"rank{rank}.pt")


def test_ll_gradient_is_averaged_over_ranks(tmp_path):
    """The clipped mode's grad L_ll: 2 gloo processes give every rank the mean of the ranks' own
    gradients, computed here in one process."""
    run_in_processes(_ddp_gradient_worker, 2, str(tmp_path))
    method = make("moco", ll_mode="clipped")
    method.eval()
    x = make_images(4).float() / 255
    per_rank = [torch.autograd.grad(method.encoder(x[2 * r : 2 * r + 2]).pow(2).mean() * (r + 1),
                                    list(method.encoder.parameters())) for r in range(2)]
    expected = [(a + b) / 2 for a, b in zip(*per_rank)]
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert all(close(g, e, 1e-6) for g, e in zip(got, expected))
        assert not all(close(g, p, 1e-6) for g, p in zip(got, per_rank[rank]))  # not the rank's own


def test_critic_noise_and_negatives_come_from_the_batch_generator(monkeypatch):
    """The critic's positives get N(0, (noise_std / sqrt(d))^2) noise and its negatives a
    derangement, both drawn from ``batch.generator``: the same seed gives the same draws."""
    import tagless.methods.logo as module

    calls = []
    real = module.critic_objective
    monkeypatch.setattr(module, "critic_objective", lambda *args: calls.append(args[3:]) or real(*args))
    images = make_images(16)
    method = make("moco", noise_std=0.3)
    for seed in (5, 5, 6):
        method.step(batch(images, seed))
    (na, nb, perm), again, other = calls
    d = na.shape[1]
    assert torch.cat([na, nb]).std().item() == pytest.approx(0.3 / math.sqrt(d), rel=0.15)
    assert abs(torch.cat([na, nb]).mean().item()) < 0.3 / math.sqrt(d) / 5 and not torch.equal(na, nb)
    assert not (perm == torch.arange(16)).any() and sorted(perm.tolist()) == list(range(16))
    assert all(torch.equal(x, y) for x, y in zip((na, nb, perm), again))
    assert not torch.equal(na, other[0]) and not torch.equal(perm, other[2])
