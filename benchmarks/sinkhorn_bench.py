"""Sinkhorn-Knopp: tagless.ot.sinkhorn against POT's ot.sinkhorn on the same problem.

The problem is SeLa's (paper 002): N images x K clusters, P = softmax(logits), lambda = 25,
uniform marginals; POT gets M = -log P and reg = 1 / lambda (the same Gibbs kernel P^lambda).
Time per iteration is the slope between a short and a long fixed-iteration run (setup and
kernel building excluded), best of ``--repeats``. Agreement: both solved to convergence, then
the largest plan difference (fp64 logits) (relative to the largest plan entry) and the share of equal
argmax labels. Run:
    python benchmarks/sinkhorn_bench.py [--n 200000] [--k 1000] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from tagless.device import device_name
from tagless.ot import sinkhorn


def best_time(fn, prepare, repeats: int) -> float:
    """Best wall time of ``fn(prepare())`` (``prepare`` untimed: copies, allocations)."""
    best = float("inf")
    for _ in range(repeats):
        arg = prepare()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(arg)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
        del arg
    return best


def per_iteration(run, prepare, iters: int, repeats: int) -> float:
    """Slope of the run time between 2 and 2 + iters iterations (s per iteration)."""
    long = best_time(lambda a: run(a, 2 + iters), prepare, repeats)
    short = best_time(lambda a: run(a, 2), prepare, repeats)
    return (long - short) / iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--lam", type=float, default=25.0)
    p.add_argument("--scale", type=float, default=0.2, help="std of the random logits")
    p.add_argument("--iters", type=int, default=20, help="iterations between the two timed runs")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-pot", action="store_true")
    p.add_argument("--tol", type=float, default=1e-8, help="convergence tolerance of the agreement check")
    args = p.parse_args()
    device = torch.device(args.device)
    logits = torch.randn(args.n, args.k, generator=torch.Generator().manual_seed(0)).mul_(args.scale).to(device)
    print(f"device: {device_name(device)}; torch {torch.__version__}; N={args.n}, K={args.k}, lambda={args.lam}")
    # The kernel overwrites a fresh copy of the logits (inplace), made outside the timing.
    variants = {
        "tagless fp32 kernel, fp64 sums": (torch.float32, torch.float64),
        "tagless fp32 kernel, fp32 sums": (torch.float32, torch.float32),
        "tagless bf16 kernel, fp32 sums": (torch.bfloat16, torch.float32),
    }
    rows = {}
    for name, (storage, sums) in variants.items():
        rows[name] = per_iteration(
            lambda x, n, sums=sums: sinkhorn(x, lam=args.lam, max_iters=n, tol=0.0, dtype=sums, inplace=True),
            lambda storage=storage: logits.to(storage, copy=True), args.iters, args.repeats)
    pot_rate = None
    if not args.skip_pot and device.type == "cpu":
        import ot

        warnings.simplefilter("ignore")  # POT warns that a fixed-iteration run did not converge
        m = torch.log_softmax(logits.double(), 1).neg_().numpy()
        a, b = np.full(args.n, 1 / args.n), np.full(args.k, 1 / args.k)
        pot_rate = per_iteration(lambda _, n: ot.sinkhorn(a, b, m, reg=1 / args.lam, numItermax=n, stopThr=0),
                                 lambda: None, args.iters, args.repeats)
        ref = ot.sinkhorn(a, b, m, reg=1 / args.lam, numItermax=100000, stopThr=args.tol / 10)
        del m
        ours = sinkhorn(logits.double(), lam=args.lam, max_iters=100000, tol=args.tol, output="plan")
        plan_diff = float(np.abs(ours.probs.numpy() - ref).max() / ref.max())
        same = float((ours.labels.numpy() == ref.argmax(1)).mean())
        print(f"agreement at convergence (tol {args.tol}): max |plan - POT| / max(plan) = {plan_diff:.2e}, "
              f"same argmax labels: {100 * same:.3f}% ({ours.iterations} iterations)")
    print(f"{'solver':<36}{'ms / iteration':>16}{'vs POT':>10}")
    if pot_rate:
        print(f"{'POT ot.sinkhorn (fp64 numpy)':<36}{1000 * pot_rate:>16.1f}{1.0:>10.2f}")
    for name, rate in rows.items():
        ratio = f"{pot_rate / rate:>10.2f}" if pot_rate else f"{'-':>10}"
        print(f"{name:<36}{1000 * rate:>16.1f}{ratio}")


if __name__ == "__main__":
    main()
