"""The solver behind :mod:`tagless.eval.linear`: L2-regularised logistic regression with
``torch.optim.LBFGS`` (strong Wolfe line search), preconditioned, along an L2 path.

F(W, b) = (1/N) sum_i loss_i(x_i W^T + b) + (l2 / 2) ||W||^2, bias unpenalised.

Why it is fast (none of this changes the minimiser, only the route to it):

1. Preconditioning by a change of variables. The Hessian of F in W is at most
   s * Cov(x) (x) I + l2 I, with s = 1/2 for the softmax and 1/4 for the sigmoid
   (Boehning's bound). With Cov(x) = U diag(lam) U^T (one eigendecomposition, estimated on
   at most 16384 rows) we optimise V with W = (V * p) U^T, p = (s lam + l2)^(-1/2), and
   the bias through c = b + W mu (centred features, so the intercept decouples). Features
   of real networks have a steep spectrum; this removes it, and L-BFGS needs several times
   fewer passes over the data. The rotation acts on the K x D parameters, never on X.
2. An L2 path that keeps the L-BFGS memory. Going from l2 to l2' changes the Hessian by
   (l2' - l2) I and the variables by a diagonal scaling, so every stored curvature pair
   (s, y) maps exactly to a pair of the new problem: s' = s * p / p',
   y' = (y / p + (l2' - l2) s p) * p'. The next fit starts with a well-scaled
   quasi-Newton step instead of a blind gradient step. This edits the internal state of
   torch's LBFGS (d, t, old_dirs, old_stps, ro, H_diag, prev_flat_grad; stable since
   torch 1.x, checked by a test); if the state is not as expected the memory is dropped.
3. The first evaluation at a new L2 value is free: the data term at the starting point
   is the one computed at the end of the previous fit.
4. One pass per evaluation computes loss and gradient by hand (no autograd graph), in the
   features' dtype (fp32 by default), in cache-sized row blocks on the CPU.

Stopping follows scikit-learn (max |dF/d(W, b)| <= tol in the original variables; see
:meth:`LBFGSPath.evaluate`), so ``tol`` means what it means there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Boehning's bound on the loss curvature per unit feature variance.
CURVATURE = {"softmax": 0.5, "binary": 0.25, "ovr": 0.25}
# Below this many multiply-adds per pass one thread is faster: per-op overhead dominates,
# and OpenMP barriers cost more than the work (badly so on a loaded machine).
_SMALL_PROBLEM = 1 << 22


@dataclass
class Problem:
    """Features and targets on the device.

    kind 'softmax': target int64 N; 'binary': target float N (0/1), one logit;
    'ovr': target float N x K, ``mask`` float N x K of kept (not -1) entries.
    """

    x: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor | None
    kind: str
    num_classes: int

    @property
    def rows(self) -> int:
        """Rows of W: 1 for the binary logit, else the number of classes."""
        return 1 if self.kind == "binary" else self.num_classes

    def loss_grad(self, w: torch.Tensor, b: torch.Tensor):
        """Mean data loss and its gradients in W (K x D) and b (K), one pass over x.

        On the CPU the rows go in blocks of ~4 MB: each block is still in cache when its
        weight gradient G^T X is taken, and the small products parallelise better than one
        N-long reduction (about 1.3x faster with 2 threads; the same with 1). Elsewhere the
        blocks only bound the K x B logits to ~256 MB.
        """
        n, dim = self.x.shape
        size = self.x.element_size()
        if self.x.device.type == "cpu":
            step = max(256, (4 << 20) // (dim * size))
        else:
            step = max(4096, (256 << 20) // (w.shape[0] * size))
        loss = torch.zeros((), dtype=self.x.dtype, device=self.x.device)
        gw = torch.zeros_like(w)
        gb = torch.zeros_like(b)
        for start in range(0, n, step):
            rows = slice(start, min(start + step, n))
            x = self.x[rows]
            # logits as K x B: reductions over the K classes run along contiguous memory
            g, part = self._residual(torch.addmm(b[:, None], w, x.T), rows)
            loss += part
            gw.addmm_(g, x)
            gb += g.sum(1)
        return loss / n, gw.div_(n), gb.div_(n)

    def _residual(self, z: torch.Tensor, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """dloss/dz (in place of the K x B logits z) and the summed loss of a block."""
        if self.kind == "softmax":
            target = self.target[None, rows]
            z.sub_(z.amax(dim=0))  # log-sum-exp by hand: faster than logsumexp on K x B
            g = z.exp()
            total = g.sum(dim=0)
            loss = (total.log() - z.gather(0, target)[0]).sum()
            g.div_(total)
            return g.scatter_add_(0, target, torch.full_like(g[:1], -1.0)), loss
        if self.kind == "binary":
            target = self.target[None, rows]
            loss = F.binary_cross_entropy_with_logits(z, target, reduction="sum")
            return z.sigmoid_().sub_(target), loss
        target, mask = self.target[rows].T, self.mask[rows].T
        loss = F.binary_cross_entropy_with_logits(z, target, weight=mask, reduction="sum")
        return z.sigmoid_().sub_(target).mul_(mask), loss

    def loss(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.loss_grad(w, b)[0]


@dataclass
class Preconditioner:
    """W = (V * p) basis^T with p = (curv + l2)^(-1/2); bias c = b + W mean."""

    mean: torch.Tensor | None  # D, or None (no centring)
    basis: torch.Tensor | None  # D x D orthogonal, or None (identity)
    curv: torch.Tensor | None  # D curvature bound per coordinate, or None (p = 1)

    def scale(self, l2: float) -> torch.Tensor | None:
        return None if self.curv is None else (self.curv + l2).rsqrt()


def make_preconditioner(problem: Problem, mode: str, max_rows: int = 16384) -> Preconditioner:
    """'none' (plain L-BFGS, scikit-learn's iterates), 'diag' (per-feature variance),
    'full' (covariance eigenbasis), 'auto' (full up to D = 2048, else diag)."""
    x = problem.x
    n, d = x.shape
    if mode == "auto":
        mode = "full" if d <= 2048 else "diag"
    if mode == "none":
        return Preconditioner(None, None, None)
    s = CURVATURE[problem.kind]
    mean = x.mean(0)
    if n > max_rows:  # a preconditioner need not be exact: estimate it on a fixed subsample
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = x[torch.randperm(n, generator=gen)[:max_rows].to(x.device)]
    if mode == "diag":
        return Preconditioner(mean, None, s * x.var(0, unbiased=False))
    if mode != "full":
        raise ValueError(f"unknown preconditioner {mode!r}")
    xc = x - mean
    cov = (xc.T @ xc).double() / xc.shape[0]
    lam, basis = torch.linalg.eigh(cov)
    return Preconditioner(mean, basis.to(x.dtype), s * lam.clamp(min=0).to(x.dtype))


@contextlib.contextmanager
def threads_for(problem: Problem):
    small = problem.x.device.type == "cpu" and problem.x.numel() * problem.rows < _SMALL_PROBLEM
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class LBFGSPath:
    """One L-BFGS run per L2 value, each warm-started (parameters and memory) from the last."""

    def __init__(self, problem: Problem, precond: Preconditioner, max_iter: int, tol: float,
                 tol_change: float, history_size: int, keep_memory: bool = True):
        self.problem, self.pre, self.keep_memory = problem, precond, keep_memory
        x = problem.x
        self.v = torch.zeros(problem.rows, x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
        self.c = torch.zeros(problem.rows, dtype=x.dtype, device=x.device, requires_grad=True)
        self.tol = tol
        self.opt = torch.optim.LBFGS([self.v, self.c], lr=1, max_iter=max_iter, tolerance_grad=0.0,
                                     tolerance_change=tol_change, history_size=history_size,
                                     line_search_fn="strong_wolfe")
        self.l2: float | None = None
        self.p: torch.Tensor | None = None
        # data-term (loss, dF/dW, dF/db) at the final point of the last run: moving to the
        # next L2 value changes only the penalty, so the first evaluation there is free
        self._cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._last_data: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # -- coordinates ---------------------------------------------------------------
    def _to_w(self, v: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = v if self.p is None else v * self.p
        if self.pre.basis is not None:
            w = w @ self.pre.basis.T
        b = c if self.pre.mean is None else c - w @ self.pre.mean
        return w, b

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            w, b = self._to_w(self.v, self.c)
            return w.clone(), b.clone()

    def set_start(self, w: torch.Tensor, b: torch.Tensor) -> None:
        """Start the next run from (w, b) in the original coordinates (forgets the memory)."""
        with torch.no_grad():
            c = b if self.pre.mean is None else b + w @ self.pre.mean
            v = w if self.pre.basis is None else w @ self.pre.basis
            self.v.copy_(v if self.p is None else v / self.p)
            self.c.copy_(c)
        self.opt.state.clear()
        self._cached = None

    def set_l2(self, l2: float) -> None:
        """Move to a new L2 value, keeping (W, b) and mapping the L-BFGS memory exactly."""
        p_new = self.pre.scale(l2)
        with torch.no_grad():
            if self.l2 is not None:
                if self.keep_memory:
                    self._map_memory(l2 - self.l2, self.p, p_new)
                else:
                    self.opt.state.clear()
                if p_new is not None:
                    self.v.mul_(self.p / p_new)
        self.l2, self.p = float(l2), p_new

    def _map_memory(self, delta: float, p_old, p_new) -> None:
        state = self.opt.state.get(self.v)
        keys = ("d", "t", "old_dirs", "old_stps", "ro", "prev_flat_grad")
        if not state or any(state.get(key) is None for key in keys) or not state["old_dirs"]:
            self.opt.state.clear()
            return
        rows, dim = self.v.shape
        n_w = rows * dim
        ones = torch.ones(dim, dtype=self.v.dtype, device=self.v.device)
        p_old = ones if p_old is None else p_old
        p_new = ones if p_new is None else p_new

        def w_part(t: torch.Tensor) -> torch.Tensor:
            return t[:n_w].view(rows, dim)

        flat = torch.cat([self.v.reshape(-1), self.c])
        prev_x = flat - state["t"] * state["d"]
        # gradient at the previous iterate, of the new objective, in the new coordinates
        w_part(state["prev_flat_grad"]).div_(p_old).add_(w_part(prev_x) * p_old, alpha=delta).mul_(p_new)
        kept = []
        for y, s in zip(state["old_dirs"], state["old_stps"]):
            w_part(y).div_(p_old).add_(w_part(s) * p_old, alpha=delta).mul_(p_new)
            w_part(s).mul_(p_old / p_new)
            ys = y.dot(s)  # >= l2' |s|^2 > 0 by convexity; drop it where torch would
            if ys > 1e-10:
                kept.append((y, s, 1.0 / ys))
        w_part(state["d"]).mul_(p_old / p_new)
        if not kept:
            self.opt.state.clear()
            return
        state["old_dirs"][:] = [y for y, _, _ in kept]
        state["old_stps"][:] = [s for _, s, _ in kept]
        state["ro"][:] = [r for _, _, r in kept]
        y, s, _ = kept[-1]
        state["H_diag"] = y.dot(s) / y.dot(y)

    # -- one run -------------------------------------------------------------------
    def evaluate(self, data=None) -> float:
        """F at the current point; sets ``v.grad`` and ``c.grad`` (one pass over x).

        Convergence is judged on scikit-learn's criterion, max |dF/d(W, b)| <= tol, in the
        original variables whatever the preconditioner: once it holds, the gradient handed
        to torch's LBFGS is zero, which stops it (its own test is on the preconditioned
        gradient, with ``tolerance_grad=0``). The memory is unaffected: LBFGS stores
        gradients only at the start of an iteration, and stops before the next one.
        """
        l2, pre = self.l2, self.pre
        with torch.no_grad():
            w, b = self._to_w(self.v, self.c)
            if data is not None:  # the data term at this point, known already
                loss, gw, gb = data[0], data[1].clone(), data[2].clone()
            else:
                loss, gw, gb = self.problem.loss_grad(w, b)
            self._last_data = (loss, gw.clone(), gb.clone())
            gw.add_(w, alpha=l2)
            converged = max(float(gw.abs().max()), float(gb.abs().max())) <= self.tol
            if pre.mean is not None:
                gw.sub_(torch.outer(gb, pre.mean))
            if pre.basis is not None:
                gw = gw @ pre.basis
            if self.p is not None:
                gw.mul_(self.p)
            if converged:
                gw.zero_()
                gb.zero_()
            self.v.grad, self.c.grad = gw, gb
            return float(loss + 0.5 * l2 * w.pow(2).sum())

    def run(self) -> tuple[int, float]:
        """Minimise at the current L2; returns (iterations, final objective)."""
        l2, problem = self.l2, self.problem
        evaluated: list[tuple] = []
        # the run starts where the last one ended (set_l2 keeps W, b): reuse its data term
        cached, self._cached = self._cached, None

        def closure():
            nonlocal cached
            obj = self.evaluate(cached)
            cached = None
            # V and c are small: remember where F and its data term were evaluated, to
            # report F at the final point and to reuse the data term at the next L2 value
            # without another pass over the data
            evaluated.append((obj, self._last_data, self.v.detach().clone(), self.c.detach().clone()))
            del evaluated[:-4]
            return obj

        state = self.opt.state.get(self.v) or {}
        start = int(state.get("n_iter", 0))
        v0, c0 = self.v.detach().clone(), self.c.detach().clone()
        with threads_for(problem):
            self.opt.step(closure)
            if not (torch.isfinite(self.v).all() and torch.isfinite(self.c).all()):
                # fp32 curvature pairs from tiny steps (y.s ~ 1e-9) can blow the quasi-Newton
                # direction up; start this L2 value again from where it began, without memory
                with torch.no_grad():
                    self.v.copy_(v0)
                    self.c.copy_(c0)
                self.opt.state.clear()
                evaluated.clear()
                cached, start = None, 0
                self.opt.step(closure)
        n_iter = int(self.opt.state[self.v].get("n_iter", 0)) - start
        for value, data, v, c in reversed(evaluated):
            if torch.equal(v, self.v) and torch.equal(c, self.c):
                self._cached = data
                return n_iter, value
        with torch.no_grad():  # the line search ended on a point it did not evaluate last
            w, b = self._to_w(self.v, self.c)
            return n_iter, float(problem.loss(w, b) + 0.5 * l2 * w.pow(2).sum())
