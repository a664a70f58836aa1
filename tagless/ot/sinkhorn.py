"""Sinkhorn-Knopp for the equipartition of self-labelling (paper 002) and SwAV's codes.

[0] Asano, Rupprecht & Vedaldi, Self-labelling via simultaneous clustering and representation
    learning (SeLa), ICLR 2020: Eq. 7, the entropic transport problem
    ``min_{Q in U(r, c)} <Q, -log P> + 1/lambda KL(Q || r c^T)``, whose minimiser is Eq. 8,
    ``Q = diag(alpha) P^lambda diag(beta)``, found by alternately rescaling rows and columns
    (Sec. 3.1, Step 2); lambda = 25 (appendix A.1).
[1] Cuturi, Sinkhorn distances, NeurIPS 2013.
[2] Caron et al., SwAV, NeurIPS 2020: per batch, 3 iterations, eps = 0.05 (lambda = 20) on the
    prototype scores, codes = the row-normalised plan.
Official code: yukimasano/self-label ``sinkhornknopp.py`` (P = softmax, P ** lambda in fp64,
rescaled until the image scalings stop changing).

Layout: rows are items (N images, possibly sharded over processes), columns are clusters (K).
NOTE: the paper writes P as K x N; here logits are N x K, as a network outputs them.

Numerics. ``P^lambda = softmax(l)^lambda`` equals ``exp(lambda * l)`` up to a per-row factor,
which the row scaling absorbs, so the solver never forms P. It stores
``A_ik = exp(lambda * l_ik - m_i - g_k)`` with m_i the row maximum of ``lambda * l`` and g_k
the column maximum of what remains: every row and every column of A then holds a 1, so no
row and no column underflows to all zeros, however large lambda or the logit gaps (a column
the network never predicts still gets its share). A is the one N x K array the solver makes
(or it overwrites the logits with ``inplace=True``). Every sum runs in ``dtype`` over row
blocks converted on the fly, whatever the storage dtype, with autocast disabled (a bf16
autocast around the caller would otherwise run the matrix products in bf16). ``dtype``
defaults to fp32 (fp64 for fp64 logits): SwAV's per-step codes and the official SwAV code sum
in fp32, GPUs run fp64 at a fraction of the fp32 rate, and fp32 sums meet tolerances down to
about 1e-6; SeLa asks for fp64, as the official self-label code computes.

One iteration, per row block: ``alpha = r / (A beta)``, then ``t += A^T alpha``; after the
blocks (and an all-reduce of t across processes) ``beta = c / t``. Block sizes (`block_rows`):
all rows at once when A is stored in ``dtype`` (a block is then a view: two BLAS calls and a
division per iteration), else blocks converted on the fly: about 4M entries on a CPU (the
converted block stays in cache for its second read), as many rows as 2 GiB hold on an
accelerator (a few large launches per iteration, not thousands). Measured on a 2-core VM
(BENCHMARKS.md), cache-sized blocks of a kernel stored in ``dtype`` gained nothing over one
block: the second read of a cached block cost 60-90% of the first, and the per-block calls
(each an OpenMP region) cost up to 6x when the cores are shared.

Warm starts. The column scaling of the unshifted problem, ``beta_k * exp(-g_k)``, spans more
than fp64's range when a cluster is predicted far below the others (g_k of -1000 at lambda 25
is a logit gap of 40), so the returned ``beta`` is that scaling divided by its median over the
live clusters (its scale is free: the row scalings absorb it) and clipped to [sqrt(tiny),
1 / sqrt(tiny)] of ``dtype`` (e^-354 to e^354 in fp64): always finite, > 0 on live clusters (0 on
dead ones); a clipped cluster only loses its warm start, the iterations restore it. A solve whose
scalings are not finite raises :class:`TaglessError`, after one retry from a cold start when
it was warm-started (with a warning); it never returns arbitrary labels.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass

import torch

from tagless import distributed as dist
from tagless.errors import TaglessError

OUTPUTS = ("labels", "probs", "plan")
CPU_BLOCK_ENTRIES = 1 << 22  # entries per converted row block on a CPU (32 MiB of fp64)
ACCEL_BLOCK_BYTES = 2 << 30  # the largest converted / temporary block on an accelerator


@dataclass
class SinkhornResult:
    """labels: int64 argmax of each (local) row of the plan. probs: the row-normalised plan
    (each row a distribution over clusters; SwAV's codes), or the plan itself for
    ``output='plan'``, or None for ``output='labels'``. beta: the column scaling (K, up to a
    constant factor: median 1 over live clusters, clipped to [sqrt(tiny), 1 / sqrt(tiny)], see
    the module docstring);
    warm-start the next solve with ``beta=``. iterations: column updates done. error: L1
    distance of the plan's column sums to the column marginals (its rows are exact).
    converged: error <= tol."""

    labels: torch.Tensor
    probs: torch.Tensor | None
    beta: torch.Tensor
    iterations: int
    error: float
    converged: bool


def block_rows(n: int, k: int, device_type: str, entry_bytes: int) -> int:
    """Rows per block for an ``n x k`` kernel on ``device_type`` when a block costs
    ``entry_bytes`` of temporary memory per entry (0: a view, nothing converted): every row
    when nothing is converted; else about ``CPU_BLOCK_ENTRIES`` entries on a CPU and as many
    rows as ``ACCEL_BLOCK_BYTES`` hold on an accelerator."""
    if entry_bytes == 0:
        return max(n, 1)
    if device_type == "cpu":
        return max(1, min(n, CPU_BLOCK_ENTRIES // max(k, 1)))
    return max(1, min(n, ACCEL_BLOCK_BYTES // (max(k, 1) * entry_bytes)))


def _slices(n: int, rows: int) -> list[slice]:
    return [slice(s, min(s + rows, n)) for s in range(0, n, rows)]


def _check_marginal(name: str, m: torch.Tensor | None, size: int, device, dtype) -> torch.Tensor | None:
    if m is None:
        return None
    m = torch.as_tensor(m, device=device, dtype=dtype).reshape(-1)
    if m.numel() != size:
        raise TaglessError(f"sinkhorn: {name} has {m.numel()} entries, expected {size}")
    if not torch.isfinite(m).all() or (m < 0).any():
        raise TaglessError(f"sinkhorn: {name} must be finite and >= 0")
    return m


def _no_autocast(device_type: str):
    """Autocast off on this device (sums in the promised dtype), where autocast exists."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _scaled(log_beta: torch.Tensor, centre: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(log beta - centre) clipped to [sqrt(tiny), 1 / sqrt(tiny)] of ``dtype``: finite and
    > 0 (the module docstring's warm-start rule)."""
    bound = -0.5 * math.log(torch.finfo(dtype).tiny)
    return torch.exp((log_beta - centre).clamp(-bound, bound))


@torch.no_grad()
def sinkhorn(
    logits: torch.Tensor,
    lam: float = 25.0,
    row_marginals: torch.Tensor | None = None,
    col_marginals: torch.Tensor | None = None,
    max_iters: int = 1000,
    tol: float = 1e-6,
    beta: torch.Tensor | None = None,
    output: str = "labels",
    dtype: torch.dtype | None = None,
    storage_dtype: torch.dtype | None = None,
    inplace: bool = False,
    distributed: bool = True,
    check_inputs: bool = True,
    rows_per_block: int | None = None,
) -> SinkhornResult:
    """Solve the equipartition transport problem of [0] Eq. 7 for ``P = softmax(logits)``.

    Args:
        logits: N x K scores (the rows this process holds; N may differ between processes,
            and be 0 on some when others hold rows).
        lam: lambda of Eq. 7 (25 in [0]; SwAV's 1 / eps = 20). The Gibbs kernel is P^lam.
        row_marginals: r, N non-negative weights of this process's rows; default uniform
            1 / N_total, N_total summed over processes. Rescaled to sum to 1 over all rows.
        col_marginals: c, K cluster masses (a prior); default uniform 1 / K. Rescaled to 1.
        max_iters: at most this many column updates (SwAV: 3, with ``tol=0``).
        tol: stop once the plan's column sums are within this L1 distance of c (its row sums
            are exact after every iteration).
        beta: a previous result's ``beta`` to warm-start from (Sec. 3.1: "the parameters ...
            can be retained between steps"); finite, >= 0, K entries.
        output: 'labels' (argmax only), 'probs' (row-normalised plan, N x K) or 'plan' (Q of
            Eq. 8, rows summing to r).
        dtype: of every sum and of the returned scalings (default: fp64 for fp64 logits, else
            fp32; see the module docstring for why; the official SeLa code uses fp64).
        storage_dtype: of the stored kernel A (default: the logits' dtype; bf16 halves memory).
        inplace: overwrite ``logits`` with A (no N x K copy at all; storage is logits' dtype).
        distributed: all-reduce the column sums over processes (rows sharded over ranks).
        check_inputs: refuse NaN / +inf logits, rows of -inf, and non-finite results (device syncs; SwAV's
            per-step use skips them). With ``tol=0`` and no checks nothing waits for the device:
            the iterations run to ``max_iters``, ``error`` is NaN (not computed) and a
            non-finite result is the caller's to notice (SwAV: a NaN loss).
        rows_per_block: rows of A per block of the iterations (default: `block_rows`'s rule
            for this device; benchmarks set it).

    Returns:
        :class:`SinkhornResult` for this process's rows.
    """
    if output not in OUTPUTS:
        raise TaglessError(f"sinkhorn: output must be one of {OUTPUTS}, got {output!r}")
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise TaglessError(f"sinkhorn: logits must be N x K with K >= 1, got {tuple(logits.shape)}")
    if not lam > 0 or max_iters < 1 or tol < 0:
        raise TaglessError(f"sinkhorn: need lam > 0, max_iters >= 1, tol >= 0 (got {lam}, {max_iters}, {tol})")
    with _no_autocast(logits.device.type):
        return _solve(logits, lam, row_marginals, col_marginals, max_iters, tol, beta, output, dtype, storage_dtype,
                      inplace, distributed, check_inputs, rows_per_block)


def _solve(logits, lam, row_marginals, col_marginals, max_iters, tol, beta, output, dtype, storage_dtype, inplace,
           distributed, check_inputs, rows_per_block) -> SinkhornResult:
    reduce_sum = dist.all_reduce_sum if distributed else (lambda x: x)
    reduce_max = dist.all_reduce_max if distributed else (lambda x: x)
    n, k = logits.shape
    device = logits.device
    dtype = dtype or (torch.float64 if logits.dtype == torch.float64 else torch.float32)
    n_total = reduce_sum(torch.tensor(float(n), device=device, dtype=dtype))  # stays on the device
    if n == 0 and not (distributed and dist.is_initialized()):  # one rank may hold no rows
        raise TaglessError("sinkhorn: no rows")
    if check_inputs and bool(torch.isnan(logits).any() or torch.isposinf(logits).any()):
        raise TaglessError("sinkhorn: logits contain NaN or +inf")
    if check_inputs and n and bool(torch.isneginf(logits).all(dim=1).any()):
        raise TaglessError("sinkhorn: a row of logits is -inf everywhere (no cluster can take it)")
    store_dtype = logits.dtype if inplace else (storage_dtype or logits.dtype)
    size = torch.finfo(dtype).bits // 8
    # temporaries of the set-up and output passes are dtype blocks; the iterations convert A only when it is stored
    # in another dtype
    wide = _slices(n, block_rows(n, k, device.type, size))
    blocks = _slices(n, rows_per_block or block_rows(n, k, device.type, 0 if store_dtype == dtype else size))

    # r and c, normalised to probability vectors over all rows / all columns.
    r = _check_marginal("row_marginals", row_marginals, n, device, dtype)
    r = torch.ones(n, device=device, dtype=dtype) / n_total if r is None else r / reduce_sum(r.sum())
    c = _check_marginal("col_marginals", col_marginals, k, device, dtype)
    c = torch.full((k,), 1.0 / k, device=device, dtype=dtype) if c is None else c / c.sum()
    if beta is not None:
        beta = torch.as_tensor(beta, device=device, dtype=dtype).reshape(-1)
        if beta.numel() != k:
            raise TaglessError(f"sinkhorn: beta has {beta.numel()} entries, expected {k}")
        if check_inputs and not bool(torch.isfinite(beta).all() and (beta >= 0).all() and (beta > 0).any()):
            raise TaglessError("sinkhorn: beta must be finite, >= 0 and not all 0 (a previous result's beta)")

    # A = exp(lam * l - rowmax - colmax), stored once (see the module docstring).
    row_max = torch.empty(n, device=device, dtype=dtype)  # m_i
    col_max = torch.full((k,), -torch.inf, device=device, dtype=dtype)
    for b in wide:
        s = logits[b].to(dtype) * lam
        row_max[b] = s.amax(dim=1)
        col_max = torch.maximum(col_max, s.sub_(row_max[b, None]).amax(dim=0))
    col_max = reduce_max(col_max)
    live = torch.isfinite(col_max)  # a column of -inf logits everywhere can hold no mass
    if check_inputs and not live.any():
        raise TaglessError("sinkhorn: every column is -inf")
    c = torch.where(live, c, torch.zeros_like(c))
    c = c / c.sum()
    col_max = torch.where(live, col_max, torch.zeros_like(col_max))
    store = logits if inplace else torch.empty((n, k), device=device, dtype=store_dtype)
    for b in wide:
        s = logits[b].to(dtype) * lam
        store[b] = s.sub_(row_max[b, None]).sub_(col_max).exp_().to(store.dtype)
    # The first column update weighs the rows of exp(lam * l) equally (SwAV's order: Q / sum(Q),
    # then prototypes), i.e. the rows of A by exp(m_i), taken relative to the largest m_i.
    top = row_max.max() if n else torch.tensor(-torch.inf, device=device, dtype=dtype)
    first_weights = r * torch.exp(row_max - reduce_max(top.reshape(1)))
    del row_max

    tiny = torch.finfo(dtype).tiny
    floor = torch.full((1,), tiny, device=device, dtype=dtype)  # A beta + tiny > 0
    views = [(store[b], r[b]) for b in blocks]
    check = tol > 0 or check_inputs

    def iterate(beta):
        if beta is not None:  # warm start: the caller's beta is in the unshifted scale
            log_beta = torch.log(beta) + col_max
            beta, iterations = _scaled(log_beta, log_beta.max(), dtype), 0
        else:  # the first column update, with constant row scalings of exp(lam * l)
            t = torch.zeros(k, device=device, dtype=dtype)
            for b in blocks:
                t.addmv_(store[b].to(dtype).T, first_weights[b])
            beta, iterations = c / reduce_sum(t).clamp_min(tiny), 1
        error = float("nan")
        while True:  # one pass: row scalings from beta, then the column sums they give
            t = torch.zeros(k, device=device, dtype=dtype)
            for a, rb in views:
                a = a.to(dtype)
                alpha = torch.addmv(floor, a, beta)
                torch.div(rb, alpha, out=alpha)
                t.addmv_(a.T, alpha)
            t = reduce_sum(t)
            if tol > 0:  # column sums of the plan whose rows are exact (a device sync)
                error = float((beta * t - c).abs().sum())
                if error <= tol or not math.isfinite(error):
                    break
            if iterations >= max_iters:
                break
            beta = c / t.clamp_min(tiny)
            iterations += 1
        finite = math.isfinite(error) if tol > 0 else (not check or bool(torch.isfinite(beta).all()))
        return beta, iterations, error, finite

    warm = beta is not None
    beta, iterations, error, finite = iterate(beta)
    if not finite and warm:
        warnings.warn("sinkhorn: the warm-started solve gave non-finite scalings; solving again from a cold start",
                      stacklevel=3)
        beta, iterations, error, finite = iterate(None)
    if not finite:
        raise TaglessError(f"sinkhorn: the scalings are not finite after {iterations} iterations (lam={lam} too "
                           f"large for {dtype}? try dtype=torch.float64)")
    converged = error <= tol

    labels = torch.empty(n, dtype=torch.long, device=device)
    probs = None if output == "labels" else store
    for b in wide:
        q = store[b].to(dtype) * beta  # rows of the plan up to the row scaling
        labels[b] = q.argmax(dim=1)
        if probs is not None:
            q /= q.sum(dim=1, keepdim=True).clamp_min(tiny)
            probs[b] = (q * r[b, None] if output == "plan" else q).to(store.dtype)
    # back to the unshifted scale, for warm starts: beta_k exp(-g_k) over its median, clipped (module docstring)
    log_beta = torch.where(c > 0, torch.log(beta) - col_max, torch.nan)
    beta = torch.where(c > 0, _scaled(log_beta, log_beta.nanmedian(), dtype), torch.zeros_like(beta))
    return SinkhornResult(labels, probs, beta, iterations, error, converged)
