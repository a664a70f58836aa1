"""Sinkhorn-Knopp against POT's ``ot.sinkhorn`` (M = -log P, reg = 1 / lambda), SwAV's
per-batch formula written out, and the equipartition it promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ddp_helpers import run_in_processes
from swav_reference import swav_codes
from tagless.errors import TaglessError
from tagless.ot import sinkhorn

ot = pytest.importorskip("ot")


def problem(n, k, scale=2.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64).mul(scale).to(dtype)


def pot_plan(logits, lam, a=None, b=None):
    n, k = logits.shape
    p = torch.softmax(logits.double(), 1).numpy()
    a = np.full(n, 1 / n) if a is None else a / a.sum()
    b = np.full(k, 1 / k) if b is None else b / b.sum()
    return ot.sinkhorn(a, b, -np.log(p), reg=1 / lam, numItermax=200000, stopThr=1e-15)


@pytest.mark.parametrize("n, k, lam", [(60, 6, 5.0), (53, 7, 10.0), (40, 40, 2.0)])
def test_plan_equals_pot(n, k, lam):
    """Uniform marginals, N divisible by K or not: the plan within 1e-6 relative of POT's."""
    logits = problem(n, k)
    res = sinkhorn(logits, lam=lam, output="plan", tol=1e-13, max_iters=100000)
    ref = pot_plan(logits, lam)
    assert res.converged
    np.testing.assert_allclose(res.probs.numpy(), ref, rtol=1e-6, atol=1e-6 * ref.max())
    assert torch.equal(res.labels, torch.as_tensor(ref.argmax(1)))


def test_plan_equals_pot_with_non_uniform_marginals():
    logits = problem(45, 5, seed=1)
    a = np.random.default_rng(0).uniform(0.5, 2.0, 45)
    b = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    res = sinkhorn(logits, lam=8.0, row_marginals=torch.as_tensor(a), col_marginals=torch.as_tensor(b),
                   output="plan", tol=1e-13, max_iters=100000)
    ref = pot_plan(logits, 8.0, a, b)
    np.testing.assert_allclose(res.probs.numpy(), ref, rtol=1e-6, atol=1e-6 * ref.max())
    np.testing.assert_allclose(res.probs.sum(1).numpy(), a / a.sum(), rtol=1e-10)
    np.testing.assert_allclose(res.probs.sum(0).numpy(), b, rtol=1e-6)


def test_equipartition_after_convergence_n_not_divisible_by_k():
    """1003 rows, 10 clusters, lambda 25: the plan's column sums are 1/K within tol and the
    hard labels split the rows into near-equal groups (the transport problem's rounding)."""
    logits = problem(1003, 10, scale=3.0, seed=2)
    res = sinkhorn(logits, lam=25.0, output="plan", tol=1e-8, max_iters=20000)
    assert res.converged and res.error <= 1e-8
    np.testing.assert_allclose(res.probs.sum(0).numpy(), np.full(10, 0.1), atol=1e-8)
    np.testing.assert_allclose(res.probs.sum(1).numpy(), np.full(1003, 1 / 1003), rtol=1e-10)
    counts = torch.bincount(res.labels, minlength=10)
    assert counts.min() >= 0.9 * 100.3 and counts.max() <= 1.1 * 100.3
    # without the constraint, argmax of the logits is far from balanced on a skewed problem
    skew = logits.clone()
    skew[:, 0] += 3
    assert torch.bincount(skew.argmax(1), minlength=10).max() > 300
    assert torch.bincount(sinkhorn(skew, lam=25.0, tol=1e-8, max_iters=20000).labels, minlength=10).max() < 130


def test_bf16_storage_gives_the_fp64_argmax_up_to_ties():
    """The kernel stored in bf16 (sums in fp64) against fp64 throughout. NOTE: bf16 *logits*
    are another problem: lambda = 25 turns their rounding (2^-8 relative) into factors of
    exp(25 * 2^-8 * |l|) on P^lambda, so compute logits in fp32 and store the kernel in bf16."""
    logits = problem(2000, 16, scale=2.0, seed=3)
    exact = sinkhorn(logits, lam=25.0, tol=1e-9, max_iters=5000, output="probs")
    low = sinkhorn(logits.float(), lam=25.0, tol=1e-6, max_iters=5000, storage_dtype=torch.bfloat16)
    differ = (exact.labels != low.labels).nonzero().flatten()
    # rows that differ must be near ties in the exact plan (bf16 stores 8 bits of mantissa)
    top2 = exact.probs.topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1]) / top2[:, 0]
    assert len(differ) <= 0.01 * len(logits)
    assert (gap[differ] < 0.02).all()


def test_column_nobody_predicts_still_gets_its_share():
    """With lambda 25 and a column 40 logits below the others, P^lambda underflows even in
    fp64 (exp(-1000)); the per-column shift keeps it, so the equipartition still holds."""
    logits = problem(200, 5, scale=0.5, seed=4)
    logits[:, 2] -= 40
    res = sinkhorn(logits, lam=25.0, output="plan", tol=1e-9, max_iters=20000)
    assert res.converged
    np.testing.assert_allclose(res.probs.sum(0).numpy(), np.full(5, 0.2), atol=1e-9)
    assert (res.labels == 2).sum() >= 35
    # a column of -inf everywhere can hold nothing: its mass goes to the others
    logits[:, 4] = -torch.inf
    res = sinkhorn(logits, lam=25.0, output="plan", tol=1e-9, max_iters=20000)
    assert float(res.probs[:, 4].sum()) == 0 and not (res.labels == 4).any()
    np.testing.assert_allclose(res.probs.sum(0).numpy()[:4], np.full(4, 0.25), atol=1e-9)


def test_warm_start_and_inplace():
    logits = problem(500, 12, seed=5)
    cold = sinkhorn(logits, lam=25.0, tol=1e-10, max_iters=20000, output="probs")
    warm = sinkhorn(logits + 0.01, lam=25.0, tol=1e-10, max_iters=20000, beta=cold.beta, output="probs")
    fresh = sinkhorn(logits + 0.01, lam=25.0, tol=1e-10, max_iters=20000, output="probs")
    assert warm.iterations < fresh.iterations / 2
    assert torch.allclose(warm.probs, fresh.probs, atol=1e-7)
    mine = logits.clone()
    res = sinkhorn(mine, lam=25.0, tol=1e-10, max_iters=20000, output="probs", inplace=True)
    assert res.probs is mine and torch.allclose(mine, cold.probs, atol=1e-12)


def test_swav_per_batch_codes():
    scores = torch.nn.functional.normalize(problem(64, 30, seed=6).float(), dim=1) * 0.9
    ref = swav_codes(scores)
    res = sinkhorn(scores, lam=1 / 0.05, max_iters=3, tol=0.0, output="probs")
    assert res.iterations == 3 and not res.converged
    assert torch.allclose(res.probs.double(), ref, atol=1e-6)
    assert not torch.allclose(sinkhorn(scores, lam=20.0, max_iters=2, tol=0.0, output="probs").probs.double(), ref,
                              atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    (dict(output="nope"), "output"),
    (dict(lam=0.0), "lam"),
    (dict(col_marginals=torch.ones(3)), "col_marginals"),
    (dict(row_marginals=-torch.ones(20)), "row_marginals"),
    (dict(beta=torch.ones(2)), "beta"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(TaglessError, match=message):
        sinkhorn(problem(20, 4), **kwargs)
    with pytest.raises(TaglessError, match="NaN"):
        sinkhorn(torch.full((3, 2), float("nan")))


def _sharded_worker(rank, world_size, out_dir):
    logits = problem(101, 9, scale=2.5, seed=7)
    rows = [slice(0, 30), slice(30, 101)][rank]  # uneven shards
    marg = torch.linspace(1, 2, 101, dtype=torch.float64)
    res = sinkhorn(logits[rows], lam=25.0, tol=1e-10, max_iters=20000, output="plan",
                   row_marginals=marg[rows], col_marginals=torch.arange(1.0, 10.0))
    torch.save({"labels": res.labels, "plan": res.probs, "beta": res.beta, "iters": torch.tensor(res.iterations)},
               Path(out_dir) / f"s{rank}.pt")


def test_two_processes_with_uneven_rows_equal_one(tmp_path):
    run_in_processes(_sharded_worker, 2, str(tmp_path))
    logits = problem(101, 9, scale=2.5, seed=7)
    one = sinkhorn(logits, lam=25.0, tol=1e-10, max_iters=20000, output="plan",
                   row_marginals=torch.linspace(1, 2, 101, dtype=torch.float64), col_marginals=torch.arange(1.0, 10.0))
    parts = [torch.load(tmp_path / f"s{r}.pt", weights_only=True) for r in range(2)]
    assert torch.equal(torch.cat([p["labels"] for p in parts]), one.labels)
    assert torch.allclose(torch.cat([p["plan"] for p in parts]), one.probs, rtol=1e-9, atol=1e-15)
    assert all(torch.allclose(p["beta"], one.beta) and int(p["iters"]) == one.iterations for p in parts)


def test_warm_start_after_a_cluster_predicted_far_below_the_others():
    """Column 3 sits 60 logits below the rest: at lambda 25 its unshifted scaling is about
    exp(1500), past fp64. The returned beta stays finite (median 1, clipped), and warm-starting
    the next solve with it gives the cold solve's plan, not NaN and label 0 for every row."""
    logits = problem(300, 6, scale=0.5, seed=8)
    logits[:, 3] -= 60
    first = sinkhorn(logits, lam=25.0, tol=1e-9, max_iters=20000, output="probs")
    assert torch.isfinite(first.beta).all() and (first.beta > 0).all() and float(first.beta.median()) == 1.0
    nxt = logits + 0.05 * problem(300, 6, seed=9)
    warm = sinkhorn(nxt, lam=25.0, tol=1e-9, max_iters=20000, beta=first.beta, output="probs")
    cold = sinkhorn(nxt, lam=25.0, tol=1e-9, max_iters=20000, output="probs")
    assert warm.converged and torch.equal(warm.labels, cold.labels)
    assert torch.allclose(warm.probs, cold.probs, atol=1e-6)
    assert int((warm.labels == 3).sum()) >= 40  # the far cluster still gets its share
    assert torch.isfinite(warm.beta).all()


def test_a_result_that_is_not_finite_is_never_returned():
    """A warm start that goes non-finite is redone from a cold start (with a warning); a cold
    solve that does (unchecked logits with a row of -inf: no row scaling exists) raises,
    instead of argmax-ing NaN rows to label 0."""
    logits = problem(120, 5, seed=10)
    cold = sinkhorn(logits, lam=25.0, tol=1e-9, max_iters=20000)
    with pytest.raises(TaglessError, match="beta must be finite"):
        sinkhorn(logits, beta=torch.tensor([1.0, float("inf"), 1.0, 1.0, 1.0]))
    with pytest.warns(UserWarning, match="cold start"):
        res = sinkhorn(logits, lam=25.0, tol=1e-9, max_iters=20000, beta=torch.full((5,), float("nan")),
                       check_inputs=False)
    assert torch.equal(res.labels, cold.labels) and res.converged
    logits[7] = -torch.inf
    with pytest.raises(TaglessError, match="row of logits is -inf everywhere"):
        sinkhorn(logits)
    with pytest.raises(TaglessError, match="not finite"):
        sinkhorn(logits, lam=25.0, tol=1e-9, max_iters=100, check_inputs=False)


def test_autocast_does_not_reach_the_sums(monkeypatch):
    """Under a bf16 autocast (the trainer's train.amp) the solver sums in its own dtype: the
    result equals the one without autocast, and autocast is off inside."""
    from tagless import distributed as dist

    seen = []
    reduce = dist.all_reduce_sum
    monkeypatch.setattr(dist, "all_reduce_sum", lambda x: seen.append(torch.is_autocast_enabled("cpu")) or reduce(x))
    logits = problem(200, 12, seed=11).float()
    plain = sinkhorn(logits, lam=25.0, tol=1e-5, max_iters=2000, output="probs")
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = sinkhorn(logits, lam=25.0, tol=1e-5, max_iters=2000, output="probs")
    assert seen and not any(seen)
    assert torch.equal(auto.labels, plain.labels) and torch.equal(auto.probs, plain.probs)
    assert auto.iterations == plain.iterations and auto.probs.dtype == torch.float32


def test_default_sum_dtype_and_block_rule():
    """Sums (and beta) in fp32 unless the logits are fp64 (the module docstring says why);
    blocks: one when the kernel needs no conversion, else ~4M converted entries on a CPU and
    2 GiB of converted rows on an accelerator; any blocking gives the same result."""
    from tagless.ot.sinkhorn import ACCEL_BLOCK_BYTES, CPU_BLOCK_ENTRIES, block_rows

    logits = problem(90, 7, seed=12)
    assert sinkhorn(logits).beta.dtype == torch.float64
    assert sinkhorn(logits.float()).beta.dtype == torch.float32
    assert sinkhorn(logits.bfloat16()).beta.dtype == torch.float32
    n, k = 1_281_167, 3000
    assert block_rows(n, k, "cpu", 0) == block_rows(n, k, "cuda", 0) == n
    assert block_rows(n, k, "cpu", 8) == CPU_BLOCK_ENTRIES // k
    assert block_rows(n, k, "cuda", 8) == ACCEL_BLOCK_BYTES // (8 * k) < n
    whole = sinkhorn(logits, lam=25.0, tol=1e-10, max_iters=20000, output="plan")
    small = sinkhorn(logits, lam=25.0, tol=1e-10, max_iters=20000, output="plan", rows_per_block=8)
    assert torch.equal(whole.labels, small.labels) and torch.allclose(whole.probs, small.probs, rtol=1e-9)


def _empty_rank_worker(rank, world_size, out_dir):
    logits = problem(101, 9, scale=2.5, seed=7)
    rows = [slice(0, 101), slice(101, 101)][rank]  # rank 1 holds no rows
    res = sinkhorn(logits[rows], lam=25.0, tol=1e-10, max_iters=20000, output="plan",
                   col_marginals=torch.arange(1.0, 10.0))
    torch.save({"labels": res.labels, "plan": res.probs, "beta": res.beta, "iters": torch.tensor(res.iterations)},
               Path(out_dir) / f"e{rank}.pt")


def test_a_rank_without_rows_takes_part(tmp_path):
    run_in_processes(_empty_rank_worker, 2, str(tmp_path))
    one = sinkhorn(problem(101, 9, scale=2.5, seed=7), lam=25.0, tol=1e-10, max_iters=20000, output="plan",
                   col_marginals=torch.arange(1.0, 10.0))
    parts = [torch.load(tmp_path / f"e{r}.pt", weights_only=True) for r in range(2)]
    assert parts[1]["labels"].numel() == 0 and parts[1]["plan"].shape == (0, 9)
    assert torch.equal(parts[0]["labels"], one.labels)
    assert torch.allclose(parts[0]["plan"], one.probs, rtol=1e-9, atol=1e-15)
    assert all(torch.allclose(p["beta"], one.beta) and int(p["iters"]) == one.iterations for p in parts)
