"""Sinkhorn-Knopp: tagless.ot.sinkhorn against the plain two-matvec loop and POT's ot.sinkhorn.

The problem is SeLa's (paper 002): N images x K clusters, P = softmax(logits), lambda = 25,
uniform marginals. References, timed in the same run:
  * the plain loop on the same stored kernel A (fp32, no blocks): ``u = r / (A v); v = c / (A^T u)``,
    two reads of A per iteration;
  * POT's ``ot.sinkhorn`` given M = -log P and reg = 1 / lambda (the same Gibbs kernel, fp64).
Time per iteration is the slope between a short and a long fixed-iteration run (set-up and
kernel building excluded), the best of ``--repeats`` rounds that take every solver in turn
(so a busy neighbour slows them alike). Agreement: both solved to convergence, then the largest
plan difference (fp64 logits) relative to the largest plan entry and the share of equal argmax
labels.

``--count`` counts the aten ops that one iteration dispatches (torch.profiler on the CPU) at
SeLa's ImageNet size (N = 1,281,167, K = 3,000) for a block rule: they are counted at a small N
with the same rows per block, at two block counts, and extrapolated linearly (ops = a + b x
blocks), for the CPU rule, the rule a CUDA device gets (`block_rows` with its device type), and
the old fixed rule (2^18 entries per block whatever the device). Run:
    python benchmarks/sinkhorn_bench.py [--n 200000] [--k 1000] [--device cuda] [--count]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import warnings

import numpy as np
import torch

from tagless.device import device_name
from tagless.ot import sinkhorn
from tagless.ot.sinkhorn import block_rows

IMAGENET = (1_281_167, 3000)
OLD_BLOCK_ENTRIES = 1 << 18
# ops that only make views or read metadata: no kernel on a GPU
VIEW_OPS = {"aten::slice", "aten::t", "aten::transpose", "aten::numpy_T", "aten::permute", "aten::select",
            "aten::view", "aten::as_strided", "aten::alias", "aten::detach", "aten::reshape", "aten::expand",
            "aten::unsqueeze", "aten::squeeze", "aten::lift_fresh", "aten::empty", "aten::resize_", "aten::to",
            "aten::result_type", "aten::item", "aten::_local_scalar_dense"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel(logits: torch.Tensor, lam: float) -> torch.Tensor:
    """A = exp(lam * l - rowmax - colmax), fp32: the kernel tagless stores, for the plain loop."""
    s = logits * lam
    s -= s.amax(1, keepdim=True)
    s -= s.amax(0)
    return s.exp_()


def plain_loop(a: torch.Tensor, iters: int) -> torch.Tensor:
    """The two-matvec Sinkhorn loop on a stored kernel (no blocks, no checks)."""
    n, k = a.shape
    r = torch.full((n,), 1.0 / n, device=a.device, dtype=a.dtype)
    c = torch.full((k,), 1.0 / k, device=a.device, dtype=a.dtype)
    v = torch.ones(k, device=a.device, dtype=a.dtype)
    for _ in range(iters):
        u = r / (a @ v)
        v = c / (a.T @ u)
    return v


def per_iteration(solvers: dict, iters: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Seconds per iteration of each ``solvers[name] = (run(arg, n_iters), prepare() -> arg)``:
    the slope between 2 and 2 + iters iterations, each the best over ``repeats`` rounds."""
    best = {name: [math.inf, math.inf] for name in solvers}
    for _ in range(repeats):
        for name, (run, prepare) in solvers.items():
            for slot, n in enumerate((2, 2 + iters)):
                arg = prepare()
                sync(device)
                start = time.perf_counter()
                run(arg, n)
                sync(device)
                best[name][slot] = min(best[name][slot], time.perf_counter() - start)
                del arg
    return {name: (long - short) / iters for name, (short, long) in best.items()}


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side prints a start/stop line per profile on fd 2: hidden here."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def ops_per_iteration(n: int, k: int, rows: int, lam: float, storage, sums) -> tuple[float, float]:
    """(aten ops, ops that launch a kernel) that one iteration dispatches, from the profiles of
    a 2- and a 4-iteration solve with ``rows`` rows per block."""
    from torch.profiler import ProfilerActivity, profile

    logits = torch.randn(n, k, generator=torch.Generator().manual_seed(1)).mul_(0.2)
    counts = []
    for iters in (2, 4):
        x = logits.to(storage, copy=True)
        with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
            sinkhorn(x, lam=lam, max_iters=iters, tol=0.0, dtype=sums, inplace=True, check_inputs=False,
                     rows_per_block=rows)
        top = [e for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
        launches = [e for e in top if e.name not in VIEW_OPS or any(c.name not in VIEW_OPS for c in e.cpu_children)]
        counts.append((len(top), len(launches)))
    return (counts[1][0] - counts[0][0]) / 2, (counts[1][1] - counts[0][1]) / 2


def count(args) -> None:
    """Ops per iteration at SeLa's ImageNet size, per block rule, extrapolated from small N."""
    n_big, k = IMAGENET
    print(f"aten ops per iteration at N={n_big:,}, K={k:,} (counted with torch.profiler on the CPU at small N, "
          f"same rows per block, extrapolated linearly in the number of blocks)")
    print(f"{'kernel / sums':<22}{'rule':<34}{'rows/block':>12}{'blocks':>9}{'aten ops':>12}{'launches':>12}")
    for storage, sums in ((torch.float32, torch.float32), (torch.float32, torch.float64)):
        size = torch.finfo(sums).bits // 8
        entry = 0 if storage == sums else size
        rules = {"old: 2^18 entries, any device": OLD_BLOCK_ENTRIES // k,
                 "cpu: block_rows('cpu')": block_rows(n_big, k, "cpu", entry),
                 "cuda: block_rows('cuda')": block_rows(n_big, k, "cuda", entry)}
        for rule, rows in rules.items():
            blocks = math.ceil(n_big / rows)
            small = [min(rows, 64) * b for b in (2, 4)] if blocks > 1 else [200]
            per_block = min(rows, 64)  # the op count of a block does not depend on its rows
            measured = [ops_per_iteration(m, k if blocks > 1 else 50, per_block if blocks > 1 else m, args.lam,
                                          storage, sums) for m in small]
            if blocks > 1:
                slope = [(b - a) / 2 for a, b in zip(*measured)]  # per block
                total = [a + s * (blocks - 2) for a, s in zip(measured[0], slope)]
            else:
                total = list(measured[0])
            name = f"{str(storage)[6:]} / {str(sums)[6:]}"
            print(f"{name:<22}{rule:<34}{rows:>12,}{blocks:>9,}{total[0]:>12,.0f}{total[1]:>12,.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--lam", type=float, default=25.0)
    p.add_argument("--scale", type=float, default=0.2, help="std of the random logits")
    p.add_argument("--iters", type=int, default=20, help="iterations between the two timed runs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-pot", action="store_true")
    p.add_argument("--rows", type=int, nargs="*", default=[], help="also time tagless with these rows per block")
    p.add_argument("--tol", type=float, default=1e-8, help="convergence tolerance of the agreement check")
    p.add_argument("--count", action="store_true", help="count aten ops per iteration at ImageNet size and exit")
    args = p.parse_args()
    if args.count:
        count(args)
        return
    device = torch.device(args.device)
    logits = torch.randn(args.n, args.k, generator=torch.Generator().manual_seed(0)).mul_(args.scale).to(device)
    rows = block_rows(args.n, args.k, device.type, 0)
    print(f"device: {device_name(device)}; torch {torch.__version__}; N={args.n:,}, K={args.k:,}, lambda={args.lam}; "
          f"fp32 kernel: {args.n * args.k * 4 / 2**20:.0f} MiB; tagless blocks: {rows:,} rows "
          f"({math.ceil(args.n / rows)} blocks); best of {args.repeats} rounds, slope over {args.iters} iterations")
    # tagless overwrites a fresh copy of the logits (inplace), made outside the timing
    variants = {"tagless fp32 kernel, fp32 sums": (torch.float32, torch.float32, None),
                "tagless fp32 kernel, fp64 sums": (torch.float32, torch.float64, None),
                "tagless bf16 kernel, fp32 sums": (torch.bfloat16, torch.float32, None)}
    variants.update({f"tagless fp32/fp32, {r:,} rows/block": (torch.float32, torch.float32, r) for r in args.rows})
    stored = kernel(logits, args.lam)
    solvers = {"plain two-matvec loop (fp32)": (plain_loop, lambda: stored)}
    for name, (storage, sums, r) in variants.items():
        solvers[name] = (lambda x, n, sums=sums, r=r: sinkhorn(x, lam=args.lam, max_iters=n, tol=0.0, dtype=sums,
                                                               inplace=True, rows_per_block=r),
                         lambda storage=storage: logits.to(storage, copy=True))
    pot = not args.skip_pot and device.type == "cpu"
    if pot:
        import ot

        warnings.simplefilter("ignore")  # POT warns that a fixed-iteration run did not converge
        m = torch.log_softmax(logits.double(), 1).neg_().numpy()
        a, b = np.full(args.n, 1 / args.n), np.full(args.k, 1 / args.k)
        solvers["POT ot.sinkhorn (fp64 numpy)"] = (
            lambda _, n: ot.sinkhorn(a, b, m, reg=1 / args.lam, numItermax=n, stopThr=0), lambda: None)
    rates = per_iteration(solvers, args.iters, args.repeats, device)
    if pot:
        ref = ot.sinkhorn(a, b, m, reg=1 / args.lam, numItermax=100000, stopThr=args.tol / 10)
        del m
        ours = sinkhorn(logits.double(), lam=args.lam, max_iters=100000, tol=args.tol, output="plan")
        plan_diff = float(np.abs(ours.probs.numpy() - ref).max() / ref.max())
        same = float((ours.labels.numpy() == ref.argmax(1)).mean())
        print(f"agreement at convergence (tol {args.tol}): max |plan - POT| / max(plan) = {plan_diff:.2e}, "
              f"same argmax labels: {100 * same:.3f}% ({ours.iterations} iterations)")
    plain = rates["plain two-matvec loop (fp32)"]
    pot_rate = rates.get("POT ot.sinkhorn (fp64 numpy)")
    print(f"{'solver':<40}{'ms / iteration':>16}{'vs plain loop':>15}{'vs POT':>9}")
    for name, rate in rates.items():
        vs_pot = f"{pot_rate / rate:>9.2f}" if pot_rate else f"{'-':>9}"
        print(f"{name:<40}{1000 * rate:>16.1f}{plain / rate:>15.2f}{vs_pot}")


if __name__ == "__main__":
    main()
