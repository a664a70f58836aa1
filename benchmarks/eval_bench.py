"""tagless.eval against scikit-learn on the same synthetic features, in one run.

    python benchmarks/eval_bench.py            # full size (several minutes on 2 cores)
    python benchmarks/eval_bench.py --quick    # smoke run
    python benchmarks/eval_bench.py --device cuda

Features: Gaussian class clusters, 10 classes, d = 512, 10% of the labels flipped at random
(so neither method reaches 100% and a regularisation optimum exists), in two kinds:

* ``iso``: identity covariance, the easiest case for plain L-BFGS;
* ``aniso``: a shared covariance with a decaying spectrum (std of the i-th principal
  direction ~ i^-1/2) and a positive mean, like pooled CNN features.

Tasks:

* kNN: 20 neighbours, cosine. scikit-learn ``KNeighborsClassifier(metric='cosine',
  algorithm='brute', n_jobs=-1)`` against ``knn_predict(weighted=False)`` (the same rule)
  and the weighted vote (T = 0.07).
* Linear probe: the 45-value L2 sweep of paper 001 (logspace(-6, 5)) on the training set,
  each value scored on a validation set; scikit-learn ``LogisticRegression(solver='lbfgs',
  warm_start=True)`` refitted along the sweep in the same order as tagless (strongest
  regularisation first) with ``C = 1 / (l2 N)``, against ``linear_sweep``; the same
  ``max_iter`` and gradient tolerance for both. Both report the best validation accuracy
  and the test accuracy of the chosen model.

Threads: each library runs with whichever of its own settings is faster on this machine,
found by a short calibration run and printed (torch: 1 or all threads; scikit-learn:
OpenBLAS 1 thread or its default). On a shared 2-core VM two OpenBLAS threads made
scikit-learn's thin products 10-20x slower, which would not be a fair baseline.
"""

from __future__ import annotations

import os

# OpenMP threads that busy-wait at barriers are pathological on a shared or virtualised
# machine (a spinning thread waits for a descheduled one); passive waiting costs little on
# an idle machine. Set before any OpenMP runtime loads (torch's and scikit-learn's);
# override in the shell.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import platform
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from tagless.eval import fit_linear, knn_predict, l2_to_C, linear_sweep

CLASSES, DIM = 10, 512


class Features:
    """Gaussian class clusters with 10% label noise (see the module docstring)."""

    def __init__(self, kind: str, rng: np.random.Generator):
        self.rng = rng
        if kind == "iso":
            self.mix = np.eye(DIM)
            self.centres = rng.standard_normal((CLASSES, DIM)) * 0.2
        else:
            spectrum = np.arange(1, DIM + 1) ** -0.5
            spectrum /= np.sqrt((spectrum**2).mean())
            rotation, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
            self.mix = spectrum[:, None] * rotation.T
            self.centres = rng.standard_normal((CLASSES, DIM)) * 0.4 @ self.mix + 1.0

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = self.rng.integers(0, CLASSES, n)
        x = (self.centres[y] + self.rng.standard_normal((n, DIM)) @ self.mix).astype(np.float32)
        flip = self.rng.random(n) < 0.1
        return x, np.where(flip, self.rng.integers(0, CLASSES, n), y)


REPEAT = 1  # set by --repeat: each timing is the best of this many runs


def timed(fn, device: torch.device | None = None, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return out, best


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fastest(settings: dict, probe) -> str:
    """Name of the setting (name -> context manager factory) under which ``probe`` runs fastest."""
    times = {}
    for name, make in settings.items():
        with make():
            probe()  # warm-up
            times[name] = timed(probe)[1]
    return min(times, key=times.get)


def sklearn_settings() -> dict:
    return {"blas 1 thread": lambda: threadpool_limits(limits={"blas": 1}),
            "default threads": contextlib.nullcontext}


def torch_settings(device: torch.device) -> dict:
    if device.type != "cpu":
        return {"default": contextlib.nullcontext}
    cores = torch.get_num_threads()
    out = {f"{cores} threads": contextlib.nullcontext}
    if cores > 1:
        out["1 thread"] = lambda: torch_threads(1)
    return out


def bench_knn(feats: Features, n_bank: int, n_query: int, device: torch.device) -> list[tuple]:
    from sklearn.neighbors import KNeighborsClassifier

    xb, yb = feats.sample(n_bank)
    xq, yq = feats.sample(n_query)

    def sk(q=xq):
        clf = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute", n_jobs=-1)
        return clf.fit(xb, yb).predict(q)

    def ours(weighted: bool, q=xq):
        bank = torch.from_numpy(xb).to(device)
        labels = torch.from_numpy(yb).to(device)
        queries = torch.from_numpy(q).to(device)
        return knn_predict(bank, labels, queries, k=20, temperature=0.07, weighted=weighted).cpu().numpy()

    probe_q = xq[: max(1, n_query // 10)]
    sk_set = fastest(sklearn_settings(), lambda: sk(probe_q))
    our_set = fastest(torch_settings(device), lambda: ours(False, probe_q))
    with sklearn_settings()[sk_set]():
        p_sk, t_sk = timed(sk, repeat=REPEAT)
    with torch_settings(device)[our_set]():
        p_u, t_u = timed(lambda: ours(False), device, REPEAT)
        p_w, t_w = timed(lambda: ours(True), device, REPEAT)
    size = f"{n_query} x {n_bank} x {DIM}"
    return [
        ("kNN k=20 majority", "scikit-learn", size, t_sk, 1.0, (p_sk == yq).mean(), sk_set),
        ("kNN k=20 majority", "tagless", size, t_u, t_sk / t_u, (p_u == yq).mean(),
         f"{our_set}; same predictions {(p_u == p_sk).mean():.2%}"),
        ("kNN k=20 weighted T=0.07", "tagless", size, t_w, t_sk / t_w, (p_w == yq).mean(), our_set),
    ]


def bench_sweep(feats: Features, n_train: int, n_eval: int, max_iter: int, tol: float,
                device: torch.device) -> list[tuple]:
    from sklearn.linear_model import LogisticRegression

    xt, yt = feats.sample(n_train)
    xv, yv = feats.sample(n_eval)
    xs, ys = feats.sample(n_eval)
    values = np.logspace(-6, 5, 45)
    order = np.argsort(-values)  # strongest regularisation first, as tagless

    def sk():
        clf = LogisticRegression(solver="lbfgs", warm_start=True, max_iter=max_iter, tol=tol)
        best = (-1.0, None, None)
        iters = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at the weakest values
            for i in order:
                clf.set_params(C=l2_to_C(values[i], n_train))
                clf.fit(xt, yt)
                iters += int(clf.n_iter_[0])
                acc = clf.score(xv, yv)
                if acc > best[0]:
                    best = (acc, values[i], clf.score(xs, ys))
        return best, iters

    def ours():
        sweep = linear_sweep(torch.from_numpy(xt).to(device), torch.from_numpy(yt).to(device),
                             torch.from_numpy(xv).to(device), torch.from_numpy(yv).to(device),
                             values, max_iter=max_iter, tol=tol)
        test = (sweep.best_model.predict(torch.from_numpy(xs).to(device)).cpu().numpy() == ys).mean()
        return (sweep.best_score, sweep.best_l2, test), int(sweep.n_iters.sum())

    def sk_probe():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            LogisticRegression(C=l2_to_C(1e-2, n_train), max_iter=5).fit(xt, yt)

    sk_set = fastest(sklearn_settings(), sk_probe)
    xt_dev = torch.from_numpy(xt).to(device)
    our_set = fastest(torch_settings(device),
                      lambda: fit_linear(xt_dev, torch.from_numpy(yt).to(device), 1e-2, max_iter=5))
    with sklearn_settings()[sk_set]():
        (sk_best, sk_iters), t_sk = timed(sk, repeat=REPEAT)
    with torch_settings(device)[our_set]():
        (our_best, our_iters), t_ours = timed(ours, device, REPEAT)
    size = f"45 x ({n_train} x {DIM})"
    return [
        ("L2 sweep (L-BFGS)", "scikit-learn", size, t_sk, 1.0, sk_best[2],
         f"{sk_set}; val {sk_best[0]:.4f} at l2 {sk_best[1]:.2g}; {sk_iters} iterations"),
        ("L2 sweep (L-BFGS)", "tagless", size, t_ours, t_sk / t_ours, our_best[2],
         f"{our_set}; val {our_best[0]:.4f} at l2 {our_best[1]:.2g}; {our_iters} iterations"),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--device", default="cpu", help="torch device for tagless (cpu, cuda, cuda:1)")
    parser.add_argument("--features", choices=["iso", "aniso", "both"], default="both")
    parser.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per L2 value (both)")
    parser.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance (both)")
    parser.add_argument("--skip", choices=["knn", "linear"], default=None)
    parser.add_argument("--repeat", type=int, default=1, help="report the best of this many timings")
    args = parser.parse_args(argv)
    global REPEAT  # noqa: PLW0603 - module-level setting read by every timing in this script
    REPEAT = max(1, args.repeat)
    device = torch.device(args.device)
    if args.quick:
        n_bank, n_query, n_train, n_eval = 5000, 1000, 5000, 1000
    else:
        n_bank, n_query, n_train, n_eval = 50_000, 10_000, 50_000, 10_000
    kinds = ["iso", "aniso"] if args.features == "both" else [args.features]

    print(f"device {device} | torch {torch.__version__}, {torch.get_num_threads()} threads | "
          f"{os.cpu_count()} CPUs {platform.machine()} | numpy {np.__version__} | "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} | best of {REPEAT}")
    rows = []
    for kind in kinds:
        feats = Features(kind, np.random.default_rng(0))
        if args.skip != "knn":
            rows += [(kind, *r) for r in bench_knn(feats, n_bank, n_query, device)]
        if args.skip != "linear":
            rows += [(kind, *r) for r in bench_sweep(feats, n_train, n_eval, args.max_iter, args.tol, device)]
    header = (f"{'features':8s} {'task':25s} {'impl':12s} {'size':20s} {'time (s)':>8s} {'speed-up':>8s} "
              f"{'test acc':>8s}  notes")
    print(header)
    print("-" * len(header))
    for kind, task, impl, size, t, ratio, acc, note in rows:
        print(f"{kind:8s} {task:25s} {impl:12s} {size:20s} {t:8.2f} {ratio:7.2f}x {acc:8.4f}  {note}")


if __name__ == "__main__":
    main()
