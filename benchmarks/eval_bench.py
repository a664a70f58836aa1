"""tagless.eval against scikit-learn on the same synthetic features, in one run.

    python benchmarks/eval_bench.py            # full size (several minutes on 2 cores)
    python benchmarks/eval_bench.py --quick    # smoke run
    python benchmarks/eval_bench.py --device cuda

Features are Gaussian class clusters (10 classes, d = 512, 10% of the labels flipped at
random so that neither method reaches 100% and a regularisation optimum exists).

* kNN: 20 neighbours, cosine. scikit-learn ``KNeighborsClassifier(metric='cosine',
  algorithm='brute', n_jobs=-1)`` against ``knn_predict(weighted=False)`` (the same rule)
  and the weighted vote (T = 0.07).
* Linear probe: the 45-value L2 sweep of paper 001 (logspace(-6, 5)) on the training set,
  each value scored on a validation set; scikit-learn ``LogisticRegression(solver='lbfgs',
  warm_start=True)`` refitted along the sweep in the same order as tagless (strongest
  regularisation first) with ``C = 1 / (l2 N)``, against ``linear_sweep``. Both report the
  best validation accuracy and the test accuracy of the chosen model.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from tagless.eval import knn_predict, l2_to_C, linear_sweep

CLASSES, DIM = 10, 512


def make_features(n: int, rng: np.random.Generator, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, CLASSES, n)
    x = (centres[y] + rng.standard_normal((n, DIM))).astype(np.float32)
    flip = rng.random(n) < 0.1
    return x, np.where(flip, rng.integers(0, CLASSES, n), y)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device=None):
    if device is not None:
        sync(device)
    start = time.perf_counter()
    out = fn()
    if device is not None:
        sync(device)
    return out, time.perf_counter() - start


def bench_knn(n_bank: int, n_query: int, device: torch.device, rng, centres) -> list[tuple]:
    from sklearn.neighbors import KNeighborsClassifier

    xb, yb = make_features(n_bank, rng, centres)
    xq, yq = make_features(n_query, rng, centres)

    def sk():
        clf = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute", n_jobs=-1)
        return clf.fit(xb, yb).predict(xq)

    def ours(weighted: bool):
        bank = torch.from_numpy(xb).to(device)
        labels = torch.from_numpy(yb).to(device)
        queries = torch.from_numpy(xq).to(device)
        return knn_predict(bank, labels, queries, k=20, temperature=0.07, weighted=weighted).cpu().numpy()

    ours(False)  # warm-up (allocator, kernels)
    p_sk, t_sk = timed(sk)
    p_u, t_u = timed(lambda: ours(False), device)
    p_w, t_w = timed(lambda: ours(True), device)
    agree = (p_u == p_sk).mean()
    size = f"{n_query} x {n_bank} x {DIM}"
    return [
        ("kNN k=20 majority", "scikit-learn", size, t_sk, 1.0, (p_sk == yq).mean(), ""),
        ("kNN k=20 majority", "tagless", size, t_u, t_sk / t_u, (p_u == yq).mean(), f"same pred {agree:.2%}"),
        ("kNN k=20 weighted T=0.07", "tagless", size, t_w, t_sk / t_w, (p_w == yq).mean(), ""),
    ]


def bench_sweep(n_train: int, n_eval: int, max_iter: int, device: torch.device, rng, centres,
                tol: float) -> list[tuple]:
    from sklearn.linear_model import LogisticRegression

    xt, yt = make_features(n_train, rng, centres)
    xv, yv = make_features(n_eval, rng, centres)
    xs, ys = make_features(n_eval, rng, centres)
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

    (sk_best, sk_iters), t_sk = timed(sk)
    (our_best, our_iters), t_ours = timed(ours, device)
    size = f"45 x ({n_train} x {DIM}, {CLASSES} cls)"
    return [
        ("L2 sweep (L-BFGS)", "scikit-learn", size, t_sk, 1.0, sk_best[2],
         f"val {sk_best[0]:.4f} l2 {sk_best[1]:.2g} iters {sk_iters}"),
        ("L2 sweep (L-BFGS)", "tagless", size, t_ours, t_sk / t_ours, our_best[2],
         f"val {our_best[0]:.4f} l2 {our_best[1]:.2g} iters {our_iters}"),
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--device", default="cpu", help="torch device for tagless (cpu, cuda, cuda:1)")
    parser.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per L2 value (both)")
    parser.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance (both)")
    parser.add_argument("--skip", choices=["knn", "linear"], default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        n_bank, n_query, n_train, n_eval = 5000, 1000, 5000, 1000
    else:
        n_bank, n_query, n_train, n_eval = 50_000, 10_000, 50_000, 10_000
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLASSES, DIM)) * 0.2

    print(f"device {device} | torch {torch.__version__} threads {torch.get_num_threads()} | "
          f"{platform.processor() or platform.machine()} | numpy {np.__version__}")
    rows = []
    if args.skip != "knn":
        rows += bench_knn(n_bank, n_query, device, rng, centres)
    if args.skip != "linear":
        rows += bench_sweep(n_train, n_eval, args.max_iter, device, rng, centres, args.tol)
    header = f"{'task':26s} {'impl':13s} {'size':28s} {'time (s)':>9s} {'speed-up':>9s} {'test acc':>9s}  notes"
    print(header)
    print("-" * len(header))
    for task, impl, size, t, ratio, acc, note in rows:
        print(f"{task:26s} {impl:13s} {size:28s} {t:9.2f} {ratio:8.2f}x {acc:9.4f}  {note}")


if __name__ == "__main__":
    main()
