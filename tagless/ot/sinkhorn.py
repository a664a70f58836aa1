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
(or it overwrites the logits with ``inplace=True``); every sum runs in ``dtype`` (fp64 by
default) over row blocks converted on the fly, whatever the storage dtype. One pass over A
per iteration: for each block, ``alpha = r / (A beta)`` then ``t += A^T alpha``; after the
pass (and an all-reduce of t across processes) ``beta = c / t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tagless import distributed as dist
from tagless.errors import TaglessError

OUTPUTS = ("labels", "probs", "plan")


@dataclass
class SinkhornResult:
    """labels: int64 argmax of each (local) row of the plan. probs: the row-normalised plan
    (each row a distribution over clusters; SwAV's codes), or the plan itself for
    ``output='plan'``, or None for ``output='labels'``. beta: the column scaling (K, warm-start
    it with ``beta=``). iterations: column updates done. error: L1 distance of the plan's
    column sums to the column marginals (its rows are exact). converged: error <= tol."""

    labels: torch.Tensor
    probs: torch.Tensor | None
    beta: torch.Tensor
    iterations: int
    error: float
    converged: bool


def _blocks(n: int, k: int, budget: int = 1 << 18):
    """Row slices of about ``budget`` entries, so a converted block stays in cache."""
    rows = max(1, budget // max(k, 1))
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
) -> SinkhornResult:
    """Solve the equipartition transport problem of [0] Eq. 7 for ``P = softmax(logits)``.

    Args:
        logits: N x K scores (the rows this process holds; N may differ between processes).
        lam: lambda of Eq. 7 (25 in [0]; SwAV's 1 / eps = 20). The Gibbs kernel is P^lam.
        row_marginals: r, N non-negative weights of this process's rows; default uniform
            1 / N_total, N_total summed over processes. Rescaled to sum to 1 over all rows.
        col_marginals: c, K cluster masses (a prior); default uniform 1 / K. Rescaled to 1.
        max_iters: at most this many column updates (SwAV: 3, with ``tol=0``).
        tol: stop once the plan's column sums are within this L1 distance of c (its row sums
            are exact after every iteration).
        beta: a previous result's ``beta`` to warm-start from (Sec. 3.1: "the parameters ...
            can be retained between steps").
        output: 'labels' (argmax only), 'probs' (row-normalised plan, N x K) or 'plan' (Q of
            Eq. 8, rows summing to r).
        dtype: of every sum and of the returned scalings (default: fp64 for fp64 logits, else
            fp32; the official code uses fp64).
        storage_dtype: of the stored kernel A (default: the logits' dtype; bf16 halves memory).
        inplace: overwrite ``logits`` with A (no N x K copy at all; storage is logits' dtype).
        distributed: all-reduce the column sums over processes (rows sharded over ranks).
        check_inputs: refuse NaN / +inf logits (one device sync; SwAV's per-step use skips it).
            With ``tol=0`` nothing else waits for the device: the iterations run to
            ``max_iters`` and ``error`` is NaN (not computed).

    Returns:
        :class:`SinkhornResult` for this process's rows.
    """
    if output not in OUTPUTS:
        raise TaglessError(f"sinkhorn: output must be one of {OUTPUTS}, got {output!r}")
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise TaglessError(f"sinkhorn: logits must be N x K with K >= 1, got {tuple(logits.shape)}")
    if not lam > 0 or max_iters < 1 or tol < 0:
        raise TaglessError(f"sinkhorn: need lam > 0, max_iters >= 1, tol >= 0 (got {lam}, {max_iters}, {tol})")
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
    blocks = _blocks(n, k)

    # r and c, normalised to probability vectors over all rows / all columns.
    r = _check_marginal("row_marginals", row_marginals, n, device, dtype)
    r = torch.ones(n, device=device, dtype=dtype) / n_total if r is None else r / reduce_sum(r.sum())
    c = _check_marginal("col_marginals", col_marginals, k, device, dtype)
    c = torch.full((k,), 1.0 / k, device=device, dtype=dtype) if c is None else c / c.sum()

    # A = exp(lam * l - rowmax - colmax), stored once (see the module docstring).
    row_max = torch.empty(n, device=device, dtype=dtype)  # m_i
    col_max = torch.full((k,), -torch.inf, device=device, dtype=dtype)
    for b in blocks:
        s = logits[b].to(dtype) * lam
        row_max[b] = s.amax(dim=1)
        col_max = torch.maximum(col_max, (s - row_max[b, None]).amax(dim=0))
    col_max = reduce_max(col_max)
    live = torch.isfinite(col_max)  # a column of -inf logits everywhere can hold no mass
    if check_inputs and not live.any():
        raise TaglessError("sinkhorn: every column is -inf")
    c = torch.where(live, c, torch.zeros_like(c))
    c = c / c.sum()
    col_max = torch.where(live, col_max, torch.zeros_like(col_max))
    store = logits if inplace else torch.empty((n, k), device=device, dtype=storage_dtype or logits.dtype)
    for b in blocks:
        store[b] = torch.exp(logits[b].to(dtype) * lam - row_max[b, None] - col_max).to(store.dtype)
    # The first column update weighs the rows of exp(lam * l) equally (SwAV's order: Q / sum(Q),
    # then prototypes), i.e. the rows of A by exp(m_i), taken relative to the largest m_i.
    first_weights = r * torch.exp(row_max - reduce_max(row_max.max().reshape(1)))
    del row_max

    tiny = torch.finfo(dtype).tiny
    if beta is not None:  # warm start: the caller's beta is in the unshifted scale
        beta = torch.as_tensor(beta, device=device, dtype=dtype).reshape(-1)
        if beta.numel() != k:
            raise TaglessError(f"sinkhorn: beta has {beta.numel()} entries, expected {k}")
        beta, iterations = beta * torch.exp(col_max), 0
    else:  # the first column update, with constant row scalings of exp(lam * l)
        t = torch.zeros(k, device=device, dtype=dtype)
        for b in blocks:
            t += store[b].to(dtype).T @ first_weights[b]
        beta, iterations = c / reduce_sum(t).clamp_min(tiny), 1
    while True:  # one pass: row scalings from beta, then the column sums they give
        t = torch.zeros(k, device=device, dtype=dtype)
        for b in blocks:
            a = store[b].to(dtype)
            t += a.T @ (r[b] / (a @ beta).clamp_min(tiny))
        t = reduce_sum(t)
        if tol > 0:  # column sums of the plan whose rows are exact (a device sync)
            error = float((beta * t - c).abs().sum())
            if error <= tol:
                break
        if iterations >= max_iters:
            break
        beta = c / t.clamp_min(tiny)
        iterations += 1
    error = error if tol > 0 else float("nan")
    converged = error <= tol

    labels = torch.empty(n, dtype=torch.long, device=device)
    probs = None if output == "labels" else store
    for b in blocks:
        q = store[b].to(dtype) * beta  # rows of the plan up to the row scaling
        labels[b] = q.argmax(dim=1)
        if probs is not None:
            q = q / q.sum(dim=1, keepdim=True).clamp_min(tiny)
            probs[b] = (q * r[b, None] if output == "plan" else q).to(store.dtype)
    beta = beta * torch.exp(-col_max)  # back to the unshifted scale, for warm starts
    return SinkhornResult(labels, probs, beta, iterations, error, converged)
