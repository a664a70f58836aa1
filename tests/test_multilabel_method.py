"""Method ``multilabel``: the CAM classifier, the state its losses read (EMA scores, expected
negatives, heatmaps, ROLE estimates), label splits in the run directory, the test numbers of
``tagless train`` and ``tagless eval map --checkpoint`` with the model's own classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagless.engine import Trainer, train
from tagless.engine.run_config import load_config
from tagless.losses import LOSSES
from tagless.methods import Batch, DataInfo, build_method
from tagless.models import build_backbone

TINY = ["data.image_size=24", "views.global_size=16", "data.scene_count=100", "model.width=0.125",
        "train.batch_size=16", "train.epochs=2", "train.knn_every_epochs=1", "optim.warmup_epochs=0"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def config(tmp_path, name, *extra):
    return load_config("multilabel_scenes", [f"out_dir={tmp_path}", f"name={name}", *TINY, *extra])


def tiny_method(loss_overrides=(), n=12, c=5, size=16, seed=0, clean=None):
    """A method on in-memory multi-label data (single positives) without the engine;
    ``clean``: the clean labels (N x C) the single positives were drawn from, if any."""
    cfg = load_config("multilabel_scenes", [*TINY, f"data.image_size={size}", *loss_overrides])
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    targets = -np.ones((n, c), np.int8)
    targets[np.arange(n), rng.integers(0, c, n)] = 1
    data = DataInfo.from_arrays(images, targets, [str(i) for i in range(c)], "single_positive")
    data.expected_positives = 2.0
    if clean is not None:
        data.clean_targets = torch.as_tensor(np.where(targets == 1, 1, clean), dtype=torch.int8)
    from tagless.augment import build_views

    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    method = build_method(cfg.method, backbone, build_views(cfg.views), data, seed=seed, loss=cfg.loss)
    return method, data


def batch_of(data, index, step=0, epoch=0):
    idx = torch.as_tensor(index)
    return Batch(data.read(idx), idx, data.targets[idx], step, epoch, torch.Generator().manual_seed(step))


def test_cam_logits_equal_pool_then_linear():
    """The 1x1-conv classifier before pooling equals a Linear layer on the pooled backbone
    output (paper 003, supp. J), and its maps are per-position logits."""
    method, _ = tiny_method()
    method.eval()
    x = torch.randn(3, 3, 16, 16)
    logits, cams = method.logits_and_cams(x)
    w = method.head.classifier.weight.flatten(1)
    expected = F.linear(method.backbone(x), w, method.head.classifier.bias)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    fmap = method.backbone.forward_features(x, method.layer)[method.layer]
    torch.testing.assert_close(cams[:, :, 1, 0], fmap[:, :, 1, 0] @ w.T + method.head.classifier.bias)
    torch.testing.assert_close(method.class_scores(x), logits)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_trains_through_the_method(name):
    """Every registry entry runs through the method with its state from the first step (no
    warm-up): finite loss and gradients, and the state buffers move."""
    extra = ["loss.warmup_epochs=0"] if name in ("en", "en_cl", "en_scl") else []
    method, data = tiny_method([f"loss.name={name}", *extra])
    method.train()
    for step in range(2):
        loss, logs = method.step(batch_of(data, [0, 1, 2, 3, 4, 5], step=step, epoch=1))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logs["pos_logit"])
        grads = [p.grad for p in method.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    if hasattr(method, "ema_scores"):
        assert method.seen[:6].all() and not method.seen[6:].any()


def test_ema_scores_and_expected_negatives_follow_paper_003():
    """EMA (Eq. 4): first visit writes sigma(z), later visits m * s + (1 - m) * sigma(z); after the
    warm-up, EN's negatives leave out the round(K - 1) = 1 highest unknown EMA scores per image."""
    method, data = tiny_method(["loss.name=en", "loss.warmup_epochs=1", "loss.selection=image",
                                "loss.ema_momentum=0.8", "loss.ema_start=first_visit"])
    method.eval()  # BN in eval mode: the two steps see the same logits for the same views
    b = lambda: batch_of(data, [0, 1, 2])  # a fresh generator each time: the same views
    with torch.no_grad():
        logits = method.logits_and_cams(method.views(b().images, torch.Generator().manual_seed(0)).crops[0])[0]
        method.step(b())
        torch.testing.assert_close(method.ema_scores[:3], torch.sigmoid(logits))
        method.step(b())
        torch.testing.assert_close(method.ema_scores[:3], torch.sigmoid(logits))  # same view: a fixed point
        method.ema_scores[:3] = 0.5
        method.step(b())
        torch.testing.assert_close(method.ema_scores[:3], 0.8 * 0.5 + 0.2 * torch.sigmoid(logits))
    scores = torch.rand(len(method.ema_scores), 5, generator=torch.Generator().manual_seed(3))
    method.ema_scores.copy_(scores)
    method.on_epoch_start(0, None)  # warm-up: nothing selected
    assert not method.negatives.any()
    method.on_epoch_start(1, None)
    targets = data.targets.numpy()
    for i in range(len(targets)):
        unknown = np.flatnonzero(targets[i] < 0)
        top = unknown[np.argmax(scores[i].numpy()[unknown])]
        assert set(np.flatnonzero(method.negatives[i].numpy())) == set(unknown) - {top}


def _feed(method, data, index, logits, epoch):
    """One step of ``method`` on images ``index`` whose logits are ``logits`` (zero CAMs)."""
    method.logits_and_cams = lambda x, detach_features=False: (logits.clone().requires_grad_(),
                                                              torch.zeros(*logits.shape, 2, 2))
    return method.step(batch_of(data, index, epoch=epoch))


def _three_visits(c=5, seed=4):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, c, generator=g) * 2 for _ in range(4)]


def test_ema_restart_forgets_the_warm_up():
    """ema_start=restart: the warm-up's EMA selects the first negatives, then the first visit
    after the warm-up writes the current prediction (the epoch-0 one has no weight left)."""
    method, data = tiny_method(["loss.name=en", "loss.warmup_epochs=2", "loss.ema_momentum=0.8",
                                "loss.ema_start=restart", "loss.selection=image"])
    l0, l1, l2, l3 = _three_visits()
    s = torch.sigmoid
    _feed(method, data, [0, 1, 2], l0, epoch=0)
    torch.testing.assert_close(method.ema_scores[:3], s(l0))
    _feed(method, data, [0, 1, 2], l1, epoch=1)
    warm = 0.8 * s(l0) + 0.2 * s(l1)
    torch.testing.assert_close(method.ema_scores[:3], warm)
    method.on_epoch_start(2, None)  # the end of the warm-up: select from the warm-up's EMA, then restart
    targets = data.targets.numpy()
    for i in range(3):
        unknown = np.flatnonzero(targets[i] < 0)
        top = unknown[np.argmax(warm[i].numpy()[unknown])]
        assert set(np.flatnonzero(method.negatives[i].numpy())) == set(unknown) - {top}
    assert not method.seen.any() and bool(method.ema_restarted)
    _feed(method, data, [0, 1, 2], l2, epoch=2)
    torch.testing.assert_close(method.ema_scores[:3], s(l2))  # no weight on l0 (nor l1)
    _feed(method, data, [0, 1, 2], l3, epoch=2)
    torch.testing.assert_close(method.ema_scores[:3], 0.8 * s(l2) + 0.2 * s(l3))
    method.on_epoch_start(3, None)  # once only
    assert method.seen[:3].all()


def test_ema_bias_correction_is_eq_4_from_zero_over_one_minus_m_to_the_v():
    """The default start: s_v = sum_i (1 - m) m^(v - i) p_i / (1 - m^v), so after 3 visits the
    first prediction weighs 0.2 x 0.64 / 0.488 = 0.26 (first_visit: 0.64); checkpoints carry
    the visit counts, and an older checkpoint's ``seen`` reads as one visit."""
    method, data = tiny_method(["loss.name=en_cl", "loss.warmup_epochs=0", "loss.ema_momentum=0.8"])
    assert method.loss_cfg.ema_start == "bias_correction"
    m, s = 0.8, torch.sigmoid
    visits = _three_visits()[:3]
    for v, logits in enumerate(visits, start=1):
        _feed(method, data, [0, 1, 2], logits, epoch=v)
        want = sum((1 - m) * m ** (v - i) * s(visits[i - 1]) for i in range(1, v + 1)) / (1 - m ** v)
        torch.testing.assert_close(method.ema_scores[:3], want)
    assert method.ema_visits.tolist() == [3, 3, 3] + [0] * 9
    other, _ = tiny_method(["loss.name=en_cl", "loss.warmup_epochs=0", "loss.ema_momentum=0.8"])
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.ema_visits, method.ema_visits) and torch.equal(other.ema_scores, method.ema_scores)
    old = {k: v for k, v in method.state_dict().items() if k != "ema_visits"}
    other.load_state_dict(old)
    assert other.ema_visits.tolist() == [1, 1, 1] + [0] * 9


def test_ema_restart_resets_the_heatmaps_too():
    method, data = tiny_method(["loss.name=en_scl", "loss.warmup_epochs=1", "loss.ema_start=restart",
                                "loss.heatmap_dtype=float16"])
    method.step(batch_of(data, [0, 1, 2], epoch=0))
    assert method.heatmaps.visited[:3].any() and not hasattr(method.heatmaps, "visits")
    before = method.heatmaps.maps.clone()
    method.on_epoch_start(1, None)
    assert not method.heatmaps.visited.any() and torch.equal(method.heatmaps.maps, before)
    default, _ = tiny_method(["loss.name=en_scl"])
    assert default.heatmaps.bias_correction and default.heatmaps.visits.dtype == torch.int16


def test_en_diagnostics_against_counts():
    """en_negative_precision, en_hidden_positive_recall (percent) from the clean labels, and
    ema_gap = mean |sigmoid(z) - s| over the visits that had an EMA target."""
    n, c = 12, 5
    rng = np.random.default_rng(3)
    clean = (rng.random((n, c)) < 0.4).astype(np.int8)
    clean[0, :] = -1  # an image whose clean labels are unknown too: judged nowhere
    method, data = tiny_method(["loss.name=en", "loss.warmup_epochs=1", "loss.selection=image"], n=n, c=c,
                               clean=clean)
    l0, l1 = _three_visits(c)[:2]
    _feed(method, data, [0, 1, 2], l0, epoch=0)  # first visits: no target yet
    _feed(method, data, [0, 1, 2], l1, epoch=0)
    logs = method.epoch_logs()
    gap = sum(abs(float(torch.sigmoid(l1[i, j])) - float(torch.sigmoid(l0[i, j]))) for i in range(3)
              for j in range(c)) / (3 * c)
    assert float(logs["ema_gap"]) == pytest.approx(gap, rel=1e-5)
    assert "en_negative_precision" not in logs  # no selection during the warm-up
    assert "ema_gap" not in method.epoch_logs()  # the epoch's sums start afresh
    target = method.ema_scores[:3].clone()
    _feed(method, data, [0, 1, 2], l0, epoch=0)
    gap = (torch.sigmoid(l0) - target).abs().mean().item()  # this visit only
    assert float(method.epoch_logs()["ema_gap"]) == pytest.approx(gap, rel=1e-5)
    method.ema_scores.copy_(torch.rand(n, c, generator=torch.Generator().manual_seed(5)))
    method.on_epoch_start(1, None)
    logs = method.epoch_logs()
    obs, neg, truth = data.targets.numpy(), method.negatives.numpy(), data.clean_targets.numpy()
    judged = right = hidden = left_out = 0
    for i in range(n):
        for j in range(c):
            if obs[i, j] >= 0:
                continue
            if neg[i, j] and truth[i, j] >= 0:
                judged += 1
                right += truth[i, j] == 0
            if truth[i, j] == 1:
                hidden += 1
                left_out += not neg[i, j]
    assert judged and hidden and 0 < right < judged and 0 < left_out < hidden
    assert float(logs["en_negative_precision"]) == pytest.approx(100 * right / judged, rel=1e-5)
    assert float(logs["en_hidden_positive_recall"]) == pytest.approx(100 * left_out / hidden, rel=1e-5)
    unknown = (obs < 0).sum()
    assert float(logs["expected_negative_share"]) == pytest.approx(100 * (neg & (obs < 0)).sum() / unknown)
    plain, _ = tiny_method(["loss.name=en", "loss.warmup_epochs=0"])  # no clean labels: no diagnostics
    plain.on_epoch_start(0, None)
    assert set(plain.epoch_logs()) == {"expected_negative_share"}


def test_ll_cp_corrections_persist_and_travel_with_the_checkpoint(monkeypatch):
    """LL-Cp at delta_rel 0.2: epoch 0 corrects nothing; at epoch 1 the ceil(0.2 x 12) = 3
    unobserved entries of the batch with the largest logits become positive labels, seen as 1
    by every later step and carried by state_dict."""
    n, c = 12, 5
    clean = (np.random.default_rng(1).random((n, c)) < 0.4).astype(np.int8)
    method, data = tiny_method(["loss.name=ll_cp", "loss.delta_rel=0.2"], n=n, c=c, clean=clean)
    l0, l1, l2 = _three_visits(c)[:3]
    _feed(method, data, [3, 4, 5], l0, epoch=0)
    assert not method.corrected.any()
    _feed(method, data, [3, 4, 5], l1, epoch=1)
    obs = data.targets.numpy()[[3, 4, 5]]
    ranked = sorted(((float(l1[i, j]), i, j) for i in range(3) for j in range(c) if obs[i, j] < 0), reverse=True)
    want = np.zeros((n, c), bool)
    for _, i, j in ranked[:3]:
        want[3 + i, j] = True
    assert np.array_equal(method.corrected.numpy(), want)
    seen = {}
    real = method.loss_fn

    def spy(logits, targets, **kw):
        seen["targets"] = targets.clone()
        return real(logits, targets, **kw)

    monkeypatch.setattr(method, "loss_fn", spy)
    _feed(method, data, [3, 4, 5], l2, epoch=1)
    expected = np.where(want[[3, 4, 5]], 1, obs)
    assert np.array_equal(seen["targets"].numpy(), expected)  # the stored corrections are positives now
    # the 9 entries still unobserved: ceil(0.2 x 9) = 2 more, by l2's logits; the first 3 stay
    ranked = sorted(((float(l2[i, j]), i, j) for i in range(3) for j in range(c) if expected[i, j] < 0), reverse=True)
    for _, i, j in ranked[:2]:
        want[3 + i, j] = True
    assert np.array_equal(method.corrected.numpy(), want) and want.sum() == 5
    fresh, _ = tiny_method(["loss.name=ll_cp", "loss.delta_rel=0.2"], n=n, c=c, clean=clean)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.corrected, method.corrected)
    monkeypatch.setattr(fresh, "loss_fn", spy)
    _feed(fresh, data, [3, 4, 5], l0, epoch=0)  # epoch 0 adds nothing: the targets are the stored ones
    assert np.array_equal(seen["targets"].numpy(), np.where(method.corrected.numpy()[[3, 4, 5]], 1, obs))
    fixed = method.corrected.numpy()
    truth = data.clean_targets.numpy()
    logs = method.epoch_logs()
    assert float(logs["ll_corrected_share"]) == pytest.approx(100 * fixed.sum() / (data.targets.numpy() < 0).sum())
    assert float(logs["ll_correction_precision"]) == pytest.approx(100 * (truth[fixed] == 1).mean())


def test_scl_target_is_the_store_sampled_through_the_crop(monkeypatch):
    """en_scl gets the store sampled through this view's box and flip, before the step's update."""
    method, data = tiny_method(["loss.name=en_scl", "loss.warmup_epochs=0", "loss.heatmap_dtype=float16",
                                "views.flip_p=0.5"])
    method.heatmaps.maps.uniform_(0, 1)
    before = method.heatmaps.maps.clone()
    seen = {}
    real = method.loss_fn

    def spy(logits, targets, **kw):
        seen.update(kw)
        return real(logits, targets, **kw)

    monkeypatch.setattr(method, "loss_fn", spy)
    b = batch_of(data, [2, 5, 7], step=4)
    views = method.views(b.images, torch.Generator().manual_seed(4))
    method.step(b)
    store = method.heatmaps
    saved = store.maps.clone()
    store.maps.copy_(before)
    grid = seen["cam_logits"].shape[-1]
    expected = store.sample(b.index, views.boxes[0], views.flipped[0], grid)
    torch.testing.assert_close(seen["heatmap_target"], expected)
    assert store.size == 2 * grid  # the store is at twice the feature-map resolution
    assert not torch.equal(saved[[2, 5, 7]], before[[2, 5, 7]]) and torch.equal(saved[0], before[0])


def test_role_estimates_train_at_their_own_lr(tmp_path):
    cfg = config(tmp_path, "role", "labels.mode=single_positive", "loss.name=role", "train.max_steps=1")
    trainer = Trainer(cfg, progress=False)
    groups = trainer.optimizers.optimizers["main"].param_groups
    role = [g for g in groups if any(p is trainer.method.label_logits for p in g["params"])]
    assert len(role) == 1 and role[0]["lr_scale"] == 10.0 and role[0]["weight_decay"] == 0.0
    before = trainer.method.label_logits.detach().clone()
    trainer.run()
    moved = (trainer.method.label_logits.detach() != before).any(1)
    first = trainer.sampler.indices(0, 0)
    assert moved[first].all() and moved.sum() == len(first)


def test_role_estimates_on_their_own_adam(tmp_path):
    cfg = config(tmp_path, "role_adam", "labels.mode=single_positive", "loss.name=role", "loss.label_adam_lr=0.01",
                 "train.max_steps=1")
    trainer = Trainer(cfg, progress=False)
    main_params = {id(p) for g in trainer.optimizers.optimizers["main"].param_groups for p in g["params"]}
    role = trainer.optimizers.optimizers["role"]
    assert id(trainer.method.label_logits) not in main_params and isinstance(role, torch.optim.AdamW)
    assert role.param_groups[0]["params"][0] is trainer.method.label_logits
    before = trainer.method.label_logits.detach().clone()
    trainer.run()
    assert role.param_groups[0]["lr"] == pytest.approx(0.01) and role.param_groups[0]["weight_decay"] == 0.0
    step = (trainer.method.label_logits.detach() - before).abs()
    first = trainer.sampler.indices(0, 0)
    # Adam's first step moves every entry with a gradient by ~lr, whatever the gradient's scale
    assert torch.allclose(step[first], torch.full_like(step[first], 0.01), rtol=0.05)


def test_train_writes_split_reports_test_maps_and_eval_map_uses_the_classifier(tmp_path, capsys):
    """A single-positive run: the split in labels.npz (one observed positive per image), the
    result's test mAPs (== test.json == eval map with the checkpoint's own classifier)."""
    from tagless.cli import main
    from tagless.data import build_dataset
    from tagless.data.label_modes import load_label_split

    cfg = config(tmp_path, "sp", "labels.mode=single_positive", "labels.val_fraction=0.25", "loss.name=an")
    result = train(cfg, progress=False)
    run = result.run_dir
    full = np.asarray(build_dataset(cfg.data, "train").targets)
    split = load_label_split(run / "labels.npz", full)
    assert (split.observed == 1).sum(1).tolist() == [1] * len(split.train_index)
    assert len(split.val_index) == round(0.25 * len(full))
    assert set(result.test) >= {"map_class", "map_sample", "map_small", "mean_pos_logit", "confident_per_image"}
    assert json.loads((run / "test.json").read_text())["map_class"] == pytest.approx(result.test["map_class"])
    capsys.readouterr()
    assert main(["eval", "map", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = out["results"][0]
    assert row["scores"] == "the checkpoint's classifier"
    assert row["mAP@class"] == pytest.approx(result.test["map_class"], abs=1e-4)


def test_resume_reuses_the_saved_split(tmp_path):
    cfg = config(tmp_path, "r", "labels.mode=partial", "labels.keep_fraction=0.4", "loss.name=en",
                 "loss.warmup_epochs=1", "train.max_steps=3")
    train(cfg, progress=False)
    first = (tmp_path / "r" / "labels.npz").read_bytes()
    cfg2 = config(tmp_path, "r", "labels.mode=partial", "labels.keep_fraction=0.4", "loss.name=en",
                  "loss.warmup_epochs=1")
    result = train(cfg2, resume=True, progress=False)
    assert (tmp_path / "r" / "labels.npz").read_bytes() == first
    assert result.epochs == 2 and np.isfinite(result.final_loss)


def test_loss_section_needs_the_multilabel_method():
    from tagless.errors import TaglessError

    with pytest.raises(TaglessError, match="loss"):
        load_config("demo_moco", ["loss.name=two_way"])


from test_ssl_scenes_recipes import coco_folder  # noqa: F401  (the COCO-format folder fixture)


def test_recipe_on_a_coco_folder_then_report(coco_folder, tmp_path, capsys, monkeypatch):  # noqa: F811
    """multilabel_scenes as a user runs it on their own COCO folder, single positives + EN+SCL,
    then the report's classifier sections (label statistics, histograms, CAMs)."""
    from tagless.cli import main

    monkeypatch.chdir(tmp_path)
    data = ["data.source=coco", f"data.root={coco_folder}/{{split}}",
            f"data.annotations={coco_folder}/instances_{{split}}.json"]
    args = [*data, *TINY, "out_dir=runs", "name=coco_sp", "labels.mode=single_positive", "loss.name=en_scl",
            "loss.warmup_epochs=1"]
    assert main(["train", "multilabel_scenes", *args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= result["test"]["map_class"] <= 100 and "map_small" in result["test"]
    assert main(["report", "runs/coco_sp", "--cams", "0", "3", "--json"]) == 0
    html = (tmp_path / "runs" / "coco_sp" / "report.html").read_text()
    for part in ("Training labels", "Classifier on the test split", "cams.png", "confident_classes.png"):
        assert part in html
    assert main(["report", "runs/coco_sp", "--cams", "999"]) == 2  # outside the test split: a one-line error
    assert "--cams: image index 999" in capsys.readouterr().err


def _fixed_views(images, generator):
    """Deterministic views for the process test: the whole source, resized, some flipped."""
    from types import SimpleNamespace

    x = F.interpolate(images.float() / 255.0, size=16, mode="bilinear", align_corners=False)
    b, s = images.shape[0], float(images.shape[-1])
    boxes = torch.tensor([[0.0, 0.0, s, s]]).repeat(b, 1)
    boxes[2::4] = torch.tensor([2.0, 3.0, s - 1, s - 2])  # periods divide the 4 rows per process
    flipped = torch.arange(b) % 2 == 1
    return SimpleNamespace(crops=[x], boxes=[boxes], flipped=[flipped], kinds=["global"])


def _state_after_step(method, data, index) -> dict:
    method.views = _fixed_views
    method.eval()  # BN on running statistics: the logits do not depend on how the batch is split
    idx = torch.as_tensor(index)
    method.step(Batch(data.read(idx), idx, data.targets[idx], 0, 0, torch.Generator().manual_seed(0)))
    return {"ema": method.ema_scores.clone(), "seen": method.seen.clone(), "maps": method.heatmaps.maps.clone()}


def _ddp_worker(rank, world, out):
    method, data = tiny_method(["loss.name=en_scl", "loss.warmup_epochs=0", "loss.heatmap_dtype=float16"], n=16)
    torch.save(_state_after_step(method, data, list(range(rank * 4, rank * 4 + 4))), f"{out}/rank{rank}.pt")


def test_state_updates_gather_every_process(tmp_path):
    """EMA scores and heatmaps are written from every process's rows: 2 gloo processes with 4
    images each leave the same state as 1 process with the 8 images."""
    from ddp_helpers import run_in_processes

    run_in_processes(_ddp_worker, 2, str(tmp_path))
    method, data = tiny_method(["loss.name=en_scl", "loss.warmup_epochs=0", "loss.heatmap_dtype=float16"], n=16)
    single = _state_after_step(method, data, list(range(8)))
    assert single["seen"][:8].all() and not single["seen"][8:].any()
    for rank in range(2):
        multi = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(multi["seen"], single["seen"])
        torch.testing.assert_close(multi["ema"], single["ema"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(multi["maps"].float(), single["maps"].float(), atol=2e-3, rtol=0)


def test_report_reads_the_checkpoint_once_and_builds_each_split_once(tmp_path, monkeypatch):
    """Every report section (features, labels, classifier, clusters, neighbours) shares one
    LoadedRun: last.pt is read once and the train and test splits are built once each."""
    from tagless.engine import loaded_run
    from tagless.report.from_run import report_run

    run = train(config(tmp_path, "rep", "labels.mode=single_positive", "loss.name=an"), progress=False).run_dir
    reads, builds = [], []
    real_load, real_build = loaded_run.load_checkpoint, loaded_run.build_dataset
    monkeypatch.setattr(loaded_run, "load_checkpoint", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(loaded_run, "build_dataset", lambda cfg, split: builds.append(split) or real_build(cfg, split))
    import tagless.data as data_pkg
    from tagless.engine import checkpoint_features

    for module in (data_pkg, checkpoint_features):
        monkeypatch.setattr(module, "build_dataset", lambda *a, **k: pytest.fail("a section built a split itself"))
    page = Path(report_run(run, device="cpu")["report"]).read_text()
    assert "Classifier on the test split" in page and "Training labels" in page
    assert len(reads) == 1 and sorted(builds) == ["test", "train"]



def test_the_trainer_hands_the_clean_labels_to_the_en_diagnostics(tmp_path):
    """A real run logs EN's precision and recall: the engine gives the method the clean labels."""
    result = train(config(tmp_path, "diag", "labels.mode=single_positive", "loss.name=en", "loss.warmup_epochs=1",
                          "train.epochs=2", "train.knn_every_epochs=0"), progress=False)
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r.get("split") == "eval"][-1]
    assert 0 <= last["en_negative_precision"] <= 100 and 0 <= last["en_hidden_positive_recall"] <= 100
