"""MLS (paper 000; methods/mls.py, losses/mls.py, report/neighbours.py) against independent
computations: the three losses against loops written out here on tiny cases, the top-k mining
against a brute-force search, the queues' alignment through the wrap-around, the MLS term
skipped until k entries exist, 2 gloo processes against 1 process on the concatenated batch,
a short Trainer run of the mls_scenes recipe and the neighbour report of its checkpoint."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ddp_helpers import run_in_processes
from run_helpers import fixed_views, make_images, records
from tagless import distributed as dist
from tagless.config_io import to_dict
from tagless.engine.run_config import load_config
from tagless.errors import TaglessError
from tagless.losses import info_nce
from tagless.losses.mls import knn_softmax, mls_bce, mls_bce_pos, topk_positives
from tagless.methods import METHODS, Batch
from tagless.methods.mls import MLS, MlsConfig
from tagless.models import build_backbone

N = 8


@contextlib.contextmanager
def registered():
    """METHODS["mls"] = MLS for the block, then the table as it was (the lead registers MLS later)."""
    before = METHODS.get("mls")
    METHODS["mls"] = MLS
    try:
        yield
    finally:
        if before is None:
            METHODS.pop("mls", None)
        else:
            METHODS["mls"] = before


@pytest.fixture(autouse=True)
def mls_registered():
    with registered():
        yield


def make_mls(bn_mode: str = "local", **kw) -> MLS:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    args = dict(queue_size=20, proj_dim=16, proj_hidden_dim=32, momentum=0.9, topk=4, bn_mode=bn_mode)
    return MLS(backbone, fixed_views, MlsConfig(**{**args, **kw}), seed=0)


def batch(images, index, step=0):
    return Batch(images, index, torch.full((len(index),), -1), step, 0, torch.Generator().manual_seed(step))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def unit(v):
    n = math.sqrt(dot(v, v))
    return [x / n for x in v]


# --- the losses on a tiny case, written out with loops ------------------------------------

# Q_g: 6 unit vectors at known angles (degrees); entry 5 is not filled yet.
ANGLES = [0, 40, 100, 170, 250, 10]
VALID = [True, True, True, True, True, False]
BANK_G = [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in ANGLES]
# key backbone features at 20 and 200 degrees: nearest filled entries by angle distance
# 20 -> 0 (20), 40 (20), 100 (80): top-2 = {0, 1}; entry 5 (10 deg, 10 away) is unfilled.
# 200 -> 170 (30), 250 (50), 100 (100): top-2 = {3, 4}.
KEYS_G = [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in (20, 200)]
TOP2 = [{0, 1}, {3, 4}]
Q = [[0.3, -0.2, 0.9], [-0.5, 0.4, 0.1]]  # queries z1 (not normalised: the losses normalise)
BANK_Z = [unit(v) for v in ([1, 0, 0], [0.2, 0.9, -0.1], [0.3, 0.3, 0.3], [-0.4, 0.1, 0.8], [0, -1, 0.5],
                             [0.7, 0.7, 0])]
TAU = 0.5


def tiny_case():
    labels, _, _ = topk_positives(torch.tensor(KEYS_G), torch.tensor(BANK_G), 2, torch.tensor(VALID))
    return torch.tensor(Q), torch.tensor(BANK_Z), labels, torch.tensor(VALID)


def p_over_tau(b):
    q = unit(Q[b])
    return [dot(q, z) / TAU for z in BANK_Z]


def test_known_topk_set():
    labels, index, sim = topk_positives(torch.tensor(KEYS_G), torch.tensor(BANK_G), 2, torch.tensor(VALID))
    assert [set(row.tolist()) for row in index] == TOP2
    assert [set(torch.nonzero(row).flatten().tolist()) for row in labels] == TOP2
    assert torch.allclose(sim, torch.cos(torch.deg2rad(torch.tensor([[20.0, 20.0], [30.0, 50.0]]))), atol=1e-6)
    # without the mask the unfilled entry 5 (10 degrees from the first key) is the nearest
    _, index_all, _ = topk_positives(torch.tensor(KEYS_G), torch.tensor(BANK_G), 2)
    assert int(index_all[0, 0]) == 5


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_bce_eq9_hand_computed():
    total = 0.0
    for b in range(2):
        p, d, s = p_over_tau(b), sum(VALID), 0.0
        for i in range(6):
            if VALID[i]:
                y = 1.0 if i in TOP2[b] else 0.0
                s += y * math.log(sigmoid(p[i])) + (1 - y) * math.log(1 - sigmoid(p[i]))
        total += -s / d
    assert float(mls_bce(*tiny_case()[:3], TAU, tiny_case()[3])) == pytest.approx(total / 2, rel=1e-5)


def test_bce_pos_eq15_hand_computed():
    total = 0.0
    for b in range(2):
        p, d = p_over_tau(b), sum(VALID)
        total += -sum(math.log(sigmoid(p[i])) for i in TOP2[b]) / d
    assert float(mls_bce_pos(*tiny_case()[:3], TAU, tiny_case()[3])) == pytest.approx(total / 2, rel=1e-5)


def test_knn_softmax_eq10_hand_computed():
    total = 0.0
    for b in range(2):
        p = p_over_tau(b)
        denom = sum(math.exp(p[i]) for i in range(6) if VALID[i])
        total += -sum(math.log(math.exp(p[i]) / denom) for i in TOP2[b]) / len(TOP2[b])
    assert float(knn_softmax(*tiny_case()[:3], TAU, tiny_case()[3])) == pytest.approx(total / 2, rel=1e-5)


def test_losses_at_zero_logits_and_without_mask():
    """q orthogonal to every entry: p_i = 0, so BCE = log 2, BCE-pos = (k / D) log 2, kNN-softmax
    = log D (D = 4 entries, k = 1 positive); valid=None means all entries."""
    q = torch.tensor([[0.0, 0.0, 1.0]])
    bank = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0]])
    y = torch.tensor([[False, True, False, False]])
    assert float(mls_bce(q, bank, y)) == pytest.approx(math.log(2))
    assert float(mls_bce_pos(q, bank, y)) == pytest.approx(math.log(2) / 4)
    assert float(knn_softmax(q, bank, y)) == pytest.approx(math.log(4))


# --- top-k mining against brute force -----------------------------------------------------


@pytest.mark.parametrize("filled", [30, 17])
def test_topk_against_brute_force(filled):
    g = torch.Generator().manual_seed(3)
    feats, bank = torch.randn(6, 5, generator=g), torch.randn(30, 5, generator=g) * 3
    valid = torch.arange(30) < filled
    labels, index, sim = topk_positives(feats, bank, 7, valid if filled < 30 else None)
    for b in range(6):
        f = unit(feats[b].tolist())
        scored = sorted(((dot(f, unit(bank[j].tolist())), j) for j in range(filled)), reverse=True)[:7]
        assert index[b].tolist() == [j for _, j in scored]
        assert sim[b].tolist() == pytest.approx([s for s, _ in scored], abs=1e-5)
        assert set(torch.nonzero(labels[b]).flatten().tolist()) == {j for _, j in scored}
        assert int(labels[b].sum()) == 7 and not labels[b, filled:].any()


# --- the method: queues and the skipped term ----------------------------------------------


def references(method: MLS, images):
    """q1 and g1 (the query encoder's projection and backbone feature of view 1), k2 and g2 (the
    key encoder's of view 2), from copies of the encoders taken before the step (same train
    mode and full batch), computed by hand from the views known to the test."""
    views = fixed_views(images, None).crops
    enc_q, enc_k = copy.deepcopy(method.encoder_q), copy.deepcopy(method.encoder_k.net)
    with torch.no_grad():
        g1 = enc_q[0](views[0])
        g2 = enc_k[0](views[1])
        k2 = enc_k[1](g2)
        return {"q1": enc_q[1](g1), "g1": F.normalize(g1, dim=1), "k2": F.normalize(k2, dim=1),
                "g2": F.normalize(g2, dim=1), "bank_z": method.queue.items.clone(),
                "bank_g": method.queue_g.items.clone()}


def test_queues_stay_aligned_through_wraparound():
    method = make_mls(queue_size=20)
    z = torch.zeros(20, 16)
    g = torch.zeros(20, method.backbone.out_dim)
    idx = torch.full((20,), -1)
    ptr = 0
    for step in range(3):  # 3 x 8 rows into 20 entries: the third batch wraps around
        images = make_images(N + step)[step:]
        index = torch.arange(N) * 7 + 100 * step
        ref = references(method, images)
        loss, _ = method.step(batch(images, index, step))
        loss.backward()
        method.after_step()
        pos = [(ptr + j) % 20 for j in range(N)]
        z[pos], g[pos], idx[pos] = ref["k2"], ref["g2"], index
        ptr = (ptr + N) % 20
        filled = min(20, N * (step + 1))
        assert torch.equal(method.queue_index.items, idx)
        assert torch.allclose(method.queue.items[:filled], z[:filled], atol=1e-5)
        assert torch.allclose(method.queue_g.items[:filled], g[:filled], atol=1e-5)
        for q in (method.queue, method.queue_g, method.queue_index):
            assert int(q.ptr) == ptr and int(q.filled) == filled
    assert idx[:5].tolist() == [228, 235, 242, 249, 28]  # the third batch wrapped to the front


@pytest.mark.parametrize("loss_name,fn", [("bce", mls_bce), ("knn_softmax", knn_softmax), ("bce_pos", mls_bce_pos)])
def test_mls_term_skipped_until_k_filled_then_equals_formula(loss_name, fn):
    w, tau, T = 0.5, 0.1, 0.2
    method = make_mls(queue_size=24, topk=10, loss=loss_name, mls_weight=w, mls_temperature=tau, temperature=T)
    for step in range(3):
        images = make_images(N + step)[step:]
        ref = references(method, images)
        loss, logs = method.step(batch(images, torch.arange(N) + N * step, step))
        infonce = info_nce(ref["q1"], ref["k2"], ref["bank_z"], T)
        assert torch.allclose(logs["infonce"], infonce, atol=1e-5)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in method.encoder_q.parameters() if p.grad is not None)
        method.encoder_q.zero_grad()
        if step < 2:  # 0 and 8 entries filled, fewer than k = 10: InfoNCE alone
            assert float(logs["mls"]) == 0.0 and torch.allclose(loss, infonce, atol=1e-5)
        else:  # 16 filled: brute-force top-10 over the filled entries, then the loss over them
            def mined(features, bank=ref["bank_g"][:16]):  # paper 000, Fig. 2: the query's own g1 picks
                sims = features @ F.normalize(bank, dim=1).t()
                labels = torch.zeros(N, 24, dtype=torch.bool)
                for b in range(N):
                    labels[b, torch.argsort(sims[b], descending=True)[:10]] = True
                return labels

            labels = mined(ref["g1"])
            valid = torch.arange(24) < 16
            expected = fn(ref["q1"], ref["bank_z"], labels, tau, valid)
            assert not torch.equal(labels, mined(ref["g2"]))  # mining with the key's g2 picks others
            assert float(logs["mls"]) > 0 and torch.allclose(logs["mls"], expected, rtol=1e-6, atol=1e-8)
            assert torch.allclose(loss, infonce + w * expected, atol=1e-5)
            # the unmasked term (random unfilled entries included) differs: the mask matters
            unmasked = fn(ref["q1"], ref["bank_z"], labels, tau)
            assert not torch.allclose(unmasked, expected, rtol=1e-5, atol=0)
        method.after_step()


def test_config_validation():
    with pytest.raises(TaglessError, match="method.loss"):
        MlsConfig(loss="softmax").validate()
    with pytest.raises(TaglessError, match="topk"):
        MlsConfig(queue_size=8, topk=9).validate()
    MlsConfig().validate()
    assert MlsConfig().topk == 20 and MlsConfig().loss == "bce"


# --- 2 processes against 1 ------------------------------------------------------------------

STEPS = 3  # 3 x 8 rows into a 16-entry queue: the MLS term is on from step 1 (k = 4), wraps at step 2


def run_steps(model, method: MLS, rank: int = 0, world: int = 1) -> list[dict]:
    # plain SGD: with heavy-ball momentum, fp32 rounding (1e-7) grew to 2% of some step-3
    # gradients (checked: equal to 1e-5 with lr 0 or without momentum), hiding real errors
    opt = torch.optim.SGD(method.param_groups(), lr=0.1)
    out = []
    for step in range(STEPS):
        images = make_images(N + step)[step:].chunk(world)[rank]
        index = (torch.arange(N) + 10 * step).chunk(world)[rank]
        loss, logs = model(batch(images, index, step))
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in method.encoder_q.named_parameters() if p.grad is not None}
        opt.step()
        method.after_step()
        out.append({"loss": dist.all_reduce_mean(loss.detach()), "mls": dist.all_reduce_mean(logs["mls"]),
                    "grads": grads, "z": method.queue.items.clone(), "g": method.queue_g.items.clone(),
                    "index": method.queue_index.items.clone(), "ptr": method.queue.ptr.clone()})
    return out


def _ddp_worker(rank, world_size, out_dir):
    for bn_mode in ("sync", "shuffle"):  # shuffle: asymmetric (near-tied top-k picks of the symmetric
        # second term flip under fp32 rounding on these random images)
        method = make_mls(bn_mode, queue_size=16, topk=4, symmetric=bn_mode == "sync")
        model = DistributedDataParallel(method, forward_sync_buffers=False)
        torch.save(run_steps(model, method, rank, world_size), Path(out_dir) / f"{bn_mode}{rank}.pt")


def test_two_processes_equal_one_for_loss_gradients_and_queues(tmp_path):
    run_in_processes(_ddp_worker, 2, str(tmp_path))
    method = make_mls("sync", queue_size=16, topk=4, symmetric=True)
    single = run_steps(method, method)
    assert float(single[0]["mls"]) == 0.0 and all(float(s["mls"]) > 0 for s in single[1:])
    for rank in range(2):
        multi = torch.load(tmp_path / f"sync{rank}.pt", weights_only=True)
        for step, (m, s) in enumerate(zip(multi, single)):
            assert torch.allclose(m["loss"], s["loss"], atol=1e-5), step
            assert torch.allclose(m["mls"], s["mls"], atol=1e-5), step
            assert m["grads"].keys() == s["grads"].keys() and len(s["grads"]) > 10
            for name, grad in s["grads"].items():
                assert torch.allclose(m["grads"][name], grad, atol=1e-5, rtol=1e-4), (step, name)
            assert torch.equal(m["index"], s["index"]) and int(m["ptr"]) == int(s["ptr"])
            assert torch.allclose(m["z"], s["z"], atol=1e-5) and torch.allclose(m["g"], s["g"], atol=1e-5), step
    assert single[-1]["index"][:8].tolist() == list(range(20, 28))  # the last batch wrapped to the front
    # shuffle-BN: every rank keeps the same queues, and one process with 2 BN groups (the ranks
    # emulated) gives the same losses, gradients and queues
    a, b = (torch.load(tmp_path / f"shuffle{r}.pt", weights_only=True) for r in range(2))
    grouped = make_mls("shuffle", queue_size=16, topk=4, bn_groups=2)
    one = run_steps(grouped, grouped)
    for step, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x["z"], y["z"]) and torch.equal(x["g"], y["g"]), step
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["index"], single[step]["index"]), step
        assert torch.allclose(x["loss"], one[step]["loss"], atol=1e-5) and torch.allclose(x["mls"], one[step]["mls"],
                                                                                           atol=1e-5), step
        for name, grad in one[step]["grads"].items():
            assert torch.allclose(x["grads"][name], grad, atol=1e-5, rtol=1e-4), (step, name)
        assert torch.allclose(x["z"], one[step]["z"], atol=1e-5) and torch.allclose(x["g"], one[step]["g"], atol=1e-5)
    # step 0 against shuffle-BN by hand: permute the global batch with rank 0's draw, run the key
    # encoder on each half (per-shard BN), take g and k from the same pass, undo the permutation
    x2 = fixed_views(make_images(N), None).crops[1]
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    encoder = make_mls("shuffle", queue_size=16, topk=4).encoder_k.net
    with torch.no_grad():
        feats = [encoder[0](shard) for shard in x2[perm].chunk(2)]
        g = torch.cat([F.normalize(f, dim=1) for f in feats])[torch.argsort(perm)]
        z = torch.cat([F.normalize(encoder[1](f), dim=1) for f in feats])[torch.argsort(perm)]
    assert not torch.equal(perm, torch.arange(N))
    assert torch.allclose(a[0]["g"][:N], g, atol=1e-5) and torch.allclose(a[0]["z"][:N], z, atol=1e-5)


# --- recipes, a Trainer run and the neighbour report -----------------------------------------


def test_scene_recipes_differ_only_in_the_method():
    moco, mls = to_dict(load_config("moco_scenes")), to_dict(load_config("mls_scenes"))
    assert mls["method"]["name"] == "mls" and mls["method"]["topk"] == 20 and mls["method"]["loss"] == "bce"
    assert mls["method"]["queue_size"] == 1024 and moco["method"]["name"] == "moco"
    assert {k: v for k, v in mls["method"].items() if k in moco["method"] and k != "name"} == \
        {k: v for k, v in moco["method"].items() if k != "name"}
    for d in (moco, mls):
        d.pop("method"), d.pop("name")
    assert moco == mls and moco["data"]["source"] == "digit_scenes" and moco["train"]["epochs"] == 50


@pytest.fixture(scope="module")
def mls_run(tmp_path_factory):
    from tagless.engine import Trainer

    out = tmp_path_factory.mktemp("mls_run")
    with registered():  # module scope: set up before the autouse fixture
        cfg = load_config("mls_scenes", [
            f"out_dir={out}", "name=tiny", f"data.cache_dir={out / 'cache'}", "data.image_size=16", "data.limit=48",
            "model.width=0.125", "views.global_size=16", "method.queue_size=40", "method.topk=5", "method.proj_dim=16",
            "method.proj_hidden_dim=32", "train.batch_size=16", "train.epochs=2", "train.knn_every_epochs=0",
            "train.log_every_steps=1"])
        trainer = Trainer(cfg, progress=False)
        return trainer, trainer.run()


def test_trainer_runs_mls_scenes(mls_run):
    trainer, result = mls_run
    rows = records(result.run_dir, "train")
    assert result.steps == 6 and len(rows) == 6
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert [r["mls"] > 0 for r in rows] == [False, True, True, True, True, True]  # k = 5 after 16 rows
    assert int(trainer.method.queue.filled) == 40 and int(trainer.method.queue_index.items.min()) >= 0


def test_neighbour_report_matches_brute_force(mls_run, tmp_path, monkeypatch):
    from tagless.checkpoint import load_checkpoint
    from tagless.data import build_dataset
    from tagless.engine.checkpoint_features import compute_features, load_backbone
    from tagless.engine.loaded_run import load_run
    from tagless.report import neighbours
    from tagless.report.neighbours import neighbour_sections

    trainer, result = mls_run
    calls = []
    real = neighbours.plot_image_grid
    def spy(images, path, **kw):
        calls.append((images, kw))
        return real(images, path, **kw)

    monkeypatch.setattr(neighbours, "plot_image_grid", spy)
    run = load_run(result.run_dir)
    before = {k: v.clone() for k, v in run.backbone.backbone.state_dict().items()}
    sections = neighbour_sections(run, tmp_path / "report", queries=3, k=4)
    after = run.backbone.backbone.state_dict()  # the key encoder's weights went into a copy
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(sections) == 1 and sections[0]["title"] == "MLS neighbours"
    png = Path(sections[0]["images"][0])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # brute force over the checkpoint's queue, features of the key encoder's backbone
    ckpt = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    state = ckpt["method"]
    loaded = load_backbone(result.run_dir / "checkpoints" / "last.pt")
    loaded.backbone.load_state_dict({k[16:]: v for k, v in state.items() if k.startswith("encoder_k.net.0.")})
    data = build_dataset(trainer.cfg.data, "train")
    queries = [row["query"] for row in sections[0]["table"]]
    feats = compute_features(loaded, data.images[queries])
    queue_g, queue_index = state["queue_g.items"].numpy(), state["queue_index.items"].numpy()
    images, kw = calls[0]
    assert kw["nrow"] == 5 and images.shape == (15, 16, 16, 3)
    for r, q in enumerate(queries):
        f = feats[r] / np.linalg.norm(feats[r])
        scored = sorted(((float(f @ (e / np.linalg.norm(e))), j) for j, e in enumerate(queue_g[:40])), reverse=True)
        nearest = [int(queue_index[j]) for _, j in scored[:4]]
        assert sections[0]["table"][r]["neighbours (dataset index)"] == " ".join(map(str, nearest))
        assert np.array_equal(images[5 * r : 5 * r + 5], data.images[[q, *nearest]])  # the row: query, neighbours


def test_neighbour_report_skips_other_runs(tmp_path):
    from types import SimpleNamespace

    from tagless.report.neighbours import neighbour_sections

    other = SimpleNamespace(method_state={"queue.items": torch.zeros(4, 2)})  # a MoCo run: no Q_g
    assert neighbour_sections(other, tmp_path / "out") == []


def test_queue_neighbours_brute_force_over_filled_entries():
    from tagless.report.neighbours import queue_neighbours

    g = torch.Generator().manual_seed(4)
    feats, queue = torch.randn(3, 6, generator=g), torch.randn(12, 6, generator=g)
    pos, sim = queue_neighbours(feats, queue, filled=7, k=3)
    for b in range(3):
        f = unit(feats[b].tolist())
        scored = sorted(((dot(f, unit(queue[j].tolist())), j) for j in range(7)), reverse=True)[:3]
        assert pos[b].tolist() == [j for _, j in scored]
        assert sim[b].tolist() == pytest.approx([s for s, _ in scored], abs=1e-5)
    assert queue_neighbours(feats, queue, filled=2, k=3)[0].shape == (3, 2)  # k is capped by the filled entries


def test_mls_term_waits_for_its_start_epoch():
    """``mls_start_epochs``: plain MoCo-v2 (InfoNCE alone) before that epoch, the term after."""
    method = make_mls(queue_size=24, topk=4, mls_start_epochs=2)
    images = make_images(N)
    for step in range(2):  # fill the queue: 16 entries, k = 4
        method.step(batch(images, torch.arange(N), step))
        method.after_step()
    for epoch, on in ((0, False), (1, False), (2, True), (3, True)):
        b = batch(images, torch.arange(N), 2)
        b = type(b)(b.images, b.index, b.target, b.step, epoch, b.generator)
        loss, logs = method.step(b)
        assert (float(logs["mls"]) > 0) == on
        assert torch.allclose(loss, logs["infonce"] + (logs["mls"] if on else 0), atol=1e-6)


def test_symmetric_mls_enqueues_one_entry_per_image():
    method = make_mls(queue_size=20, symmetric=True)
    images = make_images()
    ref = references(method, images)
    method.step(batch(images, torch.arange(N) + 100))
    method.after_step()
    assert int(method.queue.filled) == N and int(method.queue.ptr) == N  # not 2N: no image twice
    assert torch.allclose(method.queue.items[:N], ref["k2"], atol=1e-5)
    assert torch.allclose(method.queue_g.items[:N], ref["g2"], atol=1e-5)
    assert method.queue_index.items[:N].tolist() == list(range(100, 100 + N))


def test_diagnostics_positive_precision_and_queue_mean_norm():
    """positive_precision is the share of mined neighbours whose image has the query's class,
    counted here from the queue's dataset indices; queue_mean_norm is |mean of Q_z|."""
    from tagless.methods import DataInfo

    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1] * 4)
    data = DataInfo(32, ["a", "b", "c"], "single", 16, lambda idx: None, labels)
    torch.manual_seed(0)
    method = MLS(build_backbone("resnet18", stem="cifar", width=0.125), fixed_views,
                 MlsConfig(queue_size=16, proj_dim=16, proj_hidden_dim=32, momentum=0.9, topk=4, bn_mode="local"),
                 data, seed=0)
    expected = []
    for step in range(3):
        images, index = make_images(N + step)[step:], torch.arange(N) + N * step
        queue_index, bank_g, filled = (method.queue_index.items.clone(), method.queue_g.items.clone(),
                                       int(method.queue.filled))
        ref = references(method, images)
        method.step(batch(images, index, step))
        if filled >= 4:  # brute force: the top-4 filled entries nearest to g1, then their classes
            sims = ref["g1"] @ F.normalize(bank_g[:filled], dim=1).t()
            for b in range(N):
                picks = torch.argsort(sims[b], descending=True)[:4]
                expected.append(float((labels[queue_index[picks]] == labels[index[b]]).float().mean()))
        method.after_step()
    logs = method.epoch_logs()
    assert len(expected) == 2 * N and logs["positive_precision"] == pytest.approx(100 * np.mean(expected), abs=1e-4)
    assert logs["queue_mean_norm"] == pytest.approx(float(method.queue.items.mean(0).norm()), abs=1e-6)
    assert "positive_precision" not in method.epoch_logs()  # reset for the next epoch
