"""Everything gathered across processes: 2 gloo processes give what 1 process gives on the
concatenated batch (values and gradients)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ddp_helpers import run_in_processes
from run_helpers import fixed_views, make_images
from tagless import distributed as dist
from tagless.methods import Batch, MoCo, MocoConfig
from tagless.models import build_backbone

BATCH = 8


def make_moco(bn_mode: str) -> MoCo:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    cfg = MocoConfig(queue_size=24, proj_dim=16, proj_hidden_dim=32, momentum=0.9, bn_mode=bn_mode)
    return MoCo(backbone, fixed_views, cfg, seed=0)


def one_step(model: nn.Module, method: MoCo, images: torch.Tensor) -> dict:
    opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(5)
    n = images.shape[0]
    loss, _ = model(Batch(images, torch.arange(n), torch.full((n,), -1), 0, 0, gen))
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.encoder_q.named_parameters() if p.grad is not None}
    opt.step()
    method.after_step()
    return {"loss": dist.all_reduce_mean(loss.detach()), "grads": grads, "queue": method.queue.items.clone(),
            "ptr": method.queue.ptr.clone(),
            "key_encoder": {n: p.clone() for n, p in method.encoder_k.named_parameters()}}


def _moco_worker(rank, world_size, out_dir, bn_mode):
    method = make_moco(bn_mode)
    model = DistributedDataParallel(method, forward_sync_buffers=False)
    images = make_images().chunk(world_size)[rank]
    torch.save(one_step(model, method, images), Path(out_dir) / f"rank{rank}.pt")


def test_moco_step_two_processes_equal_one(tmp_path):
    run_in_processes(_moco_worker, 2, str(tmp_path), "sync")
    method = make_moco("sync")
    single = one_step(method, method, make_images())
    for rank in range(2):
        multi = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.allclose(multi["loss"], single["loss"], atol=1e-5)
        assert multi["grads"].keys() == single["grads"].keys() and len(single["grads"]) > 10
        for name, g in single["grads"].items():
            assert torch.allclose(multi["grads"][name], g, atol=1e-5, rtol=1e-4), name
        assert torch.allclose(multi["queue"], single["queue"], atol=1e-5)
        assert int(multi["ptr"]) == int(single["ptr"]) == BATCH
        for name, p in single["key_encoder"].items():
            assert torch.allclose(multi["key_encoder"][name], p, atol=1e-5), name


def _gather_worker(rank, world_size, out_dir):
    x = torch.arange(6.0).view(3, 2).add(10 * rank).requires_grad_(True)
    y = dist.gather(x)
    weights = torch.arange(12.0).view(6, 2)
    (y * weights).sum().backward()
    torch.save({"y": y.detach(), "grad": x.grad}, Path(out_dir) / f"g{rank}.pt")


def test_gather_forward_and_gradient(tmp_path):
    run_in_processes(_gather_worker, 2, str(tmp_path))
    weights = torch.arange(12.0).view(6, 2)
    for rank in range(2):
        out = torch.load(tmp_path / f"g{rank}.pt", weights_only=True)
        assert torch.equal(out["y"], torch.cat([torch.arange(6.0).view(3, 2), torch.arange(6.0).view(3, 2) + 10]))
        # each rank's loss uses the full y, so the summed gradient is 2x its own slice of weights
        assert torch.allclose(out["grad"], 2 * weights[3 * rank : 3 * rank + 3])


def _shuffle_worker(rank, world_size, out_dir):
    method = make_moco("shuffle")
    model = DistributedDataParallel(method, forward_sync_buffers=False)
    images = make_images().chunk(world_size)[rank]
    torch.save(one_step(model, method, images), Path(out_dir) / f"s{rank}.pt")


def test_shuffle_bn_queue_is_identical_on_every_rank(tmp_path):
    run_in_processes(_shuffle_worker, 2, str(tmp_path))
    a, b = (torch.load(tmp_path / f"s{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(a["queue"], b["queue"]) and int(a["ptr"]) == BATCH
    for name in a["grads"]:
        assert torch.allclose(a["grads"][name], b["grads"][name], atol=1e-6)


SHUFFLE_MODES = ("real", "noop", "wrong_inverse")
SHUFFLE_SEED = 11


def _shuffle_input() -> torch.Tensor:
    """The global batch of the shuffle-BN test (rank r holds rows r * B/2 .. (r + 1) * B/2)."""
    return fixed_views(make_images(), None).crops[0]


def _shuffle_keys_worker(rank, world_size, out_dir, modes):
    """method.keys on this rank's shard with shuffle-BN as implemented ("real") or broken on
    purpose: "noop" keeps every rank's own shard (inverse = identity), "wrong_inverse" draws the
    same permutation but undoes it with perm instead of argsort(perm)."""
    from tagless.methods import common as moco_module

    real = moco_module.shuffle_across_ranks

    def noop(x, generator):
        return x, torch.arange(x.shape[0] * world_size)

    def wrong_inverse(x, generator):
        shard, inverse = real(x, generator)
        return shard, torch.argsort(inverse)  # = perm itself

    shuffles = {"real": real, "noop": noop, "wrong_inverse": wrong_inverse}
    x = _shuffle_input().chunk(world_size)[rank]
    out = {}
    for mode in modes:
        method = make_moco("shuffle")  # same initial weights in every process and in the parent
        assert method.encoder_k.training
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(moco_module, "shuffle_across_ranks", shuffles[mode])
            out[mode] = method.keys(x, torch.Generator().manual_seed(SHUFFLE_SEED))
    torch.save(out, Path(out_dir) / f"k{rank}.pt")


@pytest.fixture(scope="module")
def shuffle_keys(tmp_path_factory):
    """{mode: [keys of rank 0, keys of rank 1]}, from one spawn of 2 processes."""
    out_dir = tmp_path_factory.mktemp("shuffle_keys")
    run_in_processes(_shuffle_keys_worker, 2, str(out_dir), SHUFFLE_MODES)
    ranks = [torch.load(out_dir / f"k{r}.pt", weights_only=True) for r in range(2)]
    return {mode: [ranks[r][mode] for r in range(2)] for mode in SHUFFLE_MODES}


def shuffle_bn_reference(x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor, shards: int = 2) -> torch.Tensor:
    """Shuffle-BN computed in one process: permute the global batch, run the key encoder on
    each rank's shard separately (train mode: per-shard BN statistics), L2-normalise,
    concatenate and index with ``inverse``."""
    encoder = make_moco("shuffle").encoder_k.net
    assert encoder.training
    with torch.no_grad():
        y = torch.cat([F.normalize(encoder(s), dim=1) for s in x[perm].chunk(shards)])
    return y[inverse]


def shuffle_references() -> dict:
    x = _shuffle_input()
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SHUFFLE_SEED))  # the draw of rank 0
    identity = torch.arange(n)
    assert set(perm[: n // 2].tolist()) != set(range(n // 2))  # the permutation mixes the shards
    assert not torch.equal(perm, torch.argsort(perm))  # and is not its own inverse
    with torch.no_grad():
        global_bn = F.normalize(make_moco("shuffle").encoder_k(x), dim=1)
    return {"real": shuffle_bn_reference(x, perm, torch.argsort(perm)),
            "noop": shuffle_bn_reference(x, identity, identity),
            "wrong_inverse": shuffle_bn_reference(x, perm, perm),
            "global_bn": global_bn}


def test_shuffle_bn_reference_distinguishes_broken_shuffles():
    """The per-shard reference differs from no shuffle, a wrong inverse and global-batch BN,
    so the comparison below can fail."""
    refs = shuffle_references()
    for other in ("noop", "wrong_inverse", "global_bn"):
        assert not torch.allclose(refs["real"], refs[other], atol=1e-3), other


@pytest.mark.parametrize("mode", SHUFFLE_MODES)
def test_shuffle_bn_keys_match_per_shard_reference(shuffle_keys, mode):
    """Each rank's keys are its slice of the independent shuffle-BN computation; the broken
    shuffles (run for real in the 2 processes) do not match it, but do match their own
    reference, so the mismatch comes from the shuffle and not from elsewhere."""
    refs = shuffle_references()
    half = BATCH // 2
    for rank, keys in enumerate(shuffle_keys[mode]):
        assert keys.shape == (half, 16)
        own = refs[mode][rank * half : (rank + 1) * half]
        real = refs["real"][rank * half : (rank + 1) * half]
        assert torch.allclose(keys, own, atol=1e-5), (mode, rank)
        if mode == "real":
            assert torch.allclose(keys, real, atol=1e-5), rank
        else:
            assert not torch.allclose(keys, real, atol=1e-3), (mode, rank)


def _trainer_worker(rank, world_size, out_dir):
    from tagless.engine import Trainer
    from tagless.engine.run_config import load_config

    cfg = load_config("demo_moco", [f"out_dir={out_dir}", "name=ddp", "data.image_size=16", "data.limit=64",
                                    "model.width=0.125", "views.global_size=16", "method.queue_size=48",
                                    "method.bn_mode=sync", "train.batch_size=16", "train.epochs=1",
                                    "train.max_steps=3", "train.knn_every_epochs=0"])
    trainer = Trainer(cfg, progress=False)
    result = trainer.run()
    torch.save({"queue": trainer.method.queue.items.clone(), "steps": torch.tensor(result.steps),
                "loss": torch.tensor(result.final_loss),
                "weights": {n: p.detach().clone() for n, p in trainer.backbone.named_parameters()}},
               Path(out_dir) / f"t{rank}.pt")


def test_trainer_runs_under_two_processes(tmp_path):
    """The engine's torchrun path: DDP keeps replicas identical, queues are filled from
    every rank, rank 0 writes the checkpoint."""
    run_in_processes(_trainer_worker, 2, str(tmp_path))
    a, b = (torch.load(tmp_path / f"t{r}.pt", weights_only=True) for r in range(2))
    assert int(a["steps"]) == int(b["steps"]) == 3
    assert float(a["loss"]) == pytest.approx(float(b["loss"])) and torch.isfinite(a["loss"])
    assert torch.equal(a["queue"], b["queue"])
    for name, w in a["weights"].items():
        assert torch.allclose(w, b["weights"][name], atol=1e-6), name
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").is_file()


def _epoch_pass_worker(rank, world_size, out_dir):
    from tagless.engine.epoch import EpochPass
    from tagless.methods import DataInfo

    images = np.random.default_rng(0).integers(0, 256, (7, 6, 6, 3), dtype=np.uint8)  # 7 rows: shards of 4 and 3
    data = DataInfo.from_arrays(images, np.arange(7) % 3, ["a", "b", "c"], "single")
    ctx = EpochPass(2, data, torch.device("cpu"), dict(size=4, crop_fraction=1.0, mean=(0.5,) * 3, std=(0.25,) * 3), 0)
    index, out = ctx.dataset_pass(lambda x: x.flatten(1)[:, :5], batch_size=2)
    local_index, _ = ctx.dataset_pass(lambda x: x.mean((1, 2, 3)), gather=False)
    uneven = dist.gather_uneven(torch.arange(rank * 10, rank * 10 + 3 + 2 * rank, dtype=torch.float32).view(-1, 1))
    torch.save({"index": index, "out": out, "local": local_index, "uneven": uneven,
                "sum": ctx.all_reduce_sum(torch.tensor([rank + 1.0]))}, Path(out_dir) / f"e{rank}.pt")


def test_epoch_pass_and_uneven_gather_two_processes_equal_one(tmp_path):
    """The sharded epoch pass over 7 images (4 + 3 rows), gathered in index order, equals the
    one-process pass; gather_uneven joins shards of different sizes; all_reduce_sum sums."""
    from tagless.engine.epoch import EpochPass, shard
    from tagless.methods import DataInfo

    run_in_processes(_epoch_pass_worker, 2, str(tmp_path))
    images = np.random.default_rng(0).integers(0, 256, (7, 6, 6, 3), dtype=np.uint8)
    data = DataInfo.from_arrays(images, np.arange(7) % 3, ["a", "b", "c"], "single")
    ctx = EpochPass(2, data, torch.device("cpu"), dict(size=4, crop_fraction=1.0, mean=(0.5,) * 3, std=(0.25,) * 3), 0)
    index, out = ctx.dataset_pass(lambda x: x.flatten(1)[:, :5], batch_size=3)
    assert torch.equal(index, torch.arange(7)) and out.shape == (7, 5)
    for rank in range(2):
        got = torch.load(tmp_path / f"e{rank}.pt", weights_only=True)
        assert torch.equal(got["index"], index) and torch.allclose(got["out"], out, atol=1e-6)
        assert torch.equal(got["local"], torch.as_tensor(shard(7, rank, 2)))
        assert got["uneven"].flatten().tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 13.0, 14.0]
        assert float(got["sum"]) == 3.0


# ---- shuffle-BN on one process: BN groups emulate the ranks ------------------------------
def make_grouped_moco(groups: int, symmetric: bool = False) -> MoCo:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    cfg = MocoConfig(queue_size=24, proj_dim=16, proj_hidden_dim=32, momentum=0.9, bn_mode="shuffle",
                     bn_groups=groups, symmetric=symmetric)
    return MoCo(backbone, fixed_views, cfg, seed=0)


def _grouped_worker(rank, world_size, out_dir, symmetric):
    method = make_grouped_moco(0, symmetric)
    model = DistributedDataParallel(method, forward_sync_buffers=False)
    images = make_images().chunk(world_size)[rank]
    gen = torch.Generator().manual_seed(SHUFFLE_SEED)
    torch.save({"keys": method.keys(_shuffle_input().chunk(world_size)[rank], gen),
                **one_step(model, method, images)}, Path(out_dir) / f"g{rank}.pt")


@pytest.mark.parametrize("symmetric", [False, True])
def test_one_process_with_two_bn_groups_equals_two_processes(tmp_path, symmetric):
    """Shuffle-BN on one process (bn_groups=2: per-group BN statistics for the query, the key
    batch shuffled across the groups) gives the keys, loss, gradients, queue and key encoder of
    2 gloo processes with the same permutation."""
    run_in_processes(_grouped_worker, 2, str(tmp_path), symmetric)
    method = make_grouped_moco(2, symmetric)
    keys = method.keys(_shuffle_input(), torch.Generator().manual_seed(SHUFFLE_SEED))
    single = one_step(method, method, make_images())
    half = BATCH // 2
    for rank in range(2):
        multi = torch.load(tmp_path / f"g{rank}.pt", weights_only=True)
        assert torch.allclose(multi["keys"], keys[rank * half : (rank + 1) * half], atol=1e-5), rank
        assert torch.allclose(multi["loss"], single["loss"], atol=1e-5)
        assert multi["grads"].keys() == single["grads"].keys() and len(single["grads"]) > 10
        for name, g in single["grads"].items():
            assert torch.allclose(multi["grads"][name], g, atol=1e-5, rtol=1e-4), name
        assert torch.allclose(multi["queue"], single["queue"], atol=1e-5)
        for name, p in single["key_encoder"].items():
            assert torch.allclose(multi["key_encoder"][name], p, atol=1e-5), name


def test_one_process_shuffle_bn_is_not_plain_bn():
    """The grouped keys match the per-shard reference, and differ from full-batch BN and from
    groups without the shuffle: the test above can fail."""
    x, gen = _shuffle_input(), lambda: torch.Generator().manual_seed(SHUFFLE_SEED)
    keys = make_grouped_moco(2).keys(x, gen())
    refs = shuffle_references()
    assert torch.allclose(keys, refs["real"], atol=1e-5)
    assert not torch.allclose(keys, refs["global_bn"], atol=1e-3)
    assert not torch.allclose(keys, refs["noop"], atol=1e-3)
    plain = make_grouped_moco(1).keys(x, gen())  # one group: the leak MoCo's Sec. 3.3 warns about
    assert torch.allclose(plain, refs["global_bn"], atol=1e-5)
