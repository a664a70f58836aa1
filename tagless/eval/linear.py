"""Linear probes on frozen features: L2-regularised logistic regression fitted full-batch
with L-BFGS, and the L2 sweep of the transfer protocol.

[0] Paper 001 (Kobayashi, CVPR 2023), supp. B: "LBFGS with a L2 regularization weight for
    which we sampled 45 values equally-spaced on log-scale between [1e-6, 1e5]; we report
    the best performance over those regularization parameters" (protocol 'best_on_test').
[1] Kornblith et al., Do Better ImageNet Models Transfer Better?, CVPR 2019: the same
    sweep with the value chosen on a held-out split of the training set, then a refit on
    train + val (protocol 'val', our default).
[2] Paper 004 (LoGo), supp. 3: L-BFGS on the cross-entropy with L2, 5000 iterations.
[3] scikit-learn ``LogisticRegression(solver='lbfgs', C=C)``: minimises
    ``sum_i loss_i + ||W||^2 / (2 C)`` with an unpenalised intercept.

Objective and the meaning of ``l2``. We minimise the mean loss plus weight decay,
``F(W, b) = (1/N) sum_i loss_i + (l2 / 2) ||W||^2`` (bias unpenalised), which is [3]'s
objective divided by N with ``C = 1 / (l2 N)``: the same minimiser, so accuracies and
coefficients are comparable with scikit-learn at that C (see :func:`l2_to_C`). ``l2`` is
the weight decay lambda of [0]'s sweep. Losses:

* single-label (``y`` int of shape N, K > 2 classes): multinomial softmax cross-entropy
  with a K x D weight (as scikit-learn's multinomial model);
* two classes: one logit with the logistic loss (as scikit-learn does for binary data);
* multi-label (``y`` N x K of 1 / 0 / -1): K independent one-vs-rest logistic regressions
  (sigmoid BCE) with -1 entries dropped; class k equals scikit-learn fitted on the rows
  where ``y[:, k] != -1`` with the common ``C = 1 / (l2 N)``, N = all rows.

The solver (:mod:`tagless.eval._logreg`) preconditions by a change of variables and keeps
the L-BFGS memory along the sweep; it changes the route, not the minimiser. With
``precondition='none'`` the iterates are plain L-BFGS on (W, b), as scikit-learn's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tagless.errors import TaglessError
from tagless.eval._logreg import LBFGSPath, Preconditioner, Problem, make_preconditioner
from tagless.eval.multilabel import map_class, map_sample

DEFAULT_L2_VALUES = np.logspace(-6, 5, 45)  # paper 001's sweep
_METRICS = ("accuracy", "mean_per_class_accuracy", "map_class", "map_sample")
_PRECONDITIONERS = ("auto", "full", "diag", "none")


def l2_to_C(l2: float, n: int) -> float:
    """scikit-learn's ``C`` with the same minimiser as weight decay ``l2`` on N rows."""
    return 1.0 / (l2 * n)


def C_to_l2(C: float, n: int) -> float:
    """Weight decay ``l2`` (on the mean loss) equivalent to scikit-learn's ``C`` on N rows."""
    return 1.0 / (C * n)


@dataclass
class LinearModel:
    """A fitted linear classifier: ``logits = standardise(x) @ weight.T + bias``.

    ``kind`` is 'softmax' (K x D weight), 'binary' (1 x D, logit of class 1) or 'ovr'
    (K x D, one sigmoid per class). ``mean``/``std`` are set when features were standardised.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    kind: str
    num_classes: int
    l2: float
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    n_iter: int = 0
    objective: float = float("nan")

    def decision_function(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).to(self.weight)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return F.linear(x, self.weight, self.bias)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (single-label) or N x K 0/1 predictions (multi-label)."""
        z = self.decision_function(x)
        if self.kind == "softmax":
            return z.argmax(dim=1)
        if self.kind == "binary":
            return (z[:, 0] > 0).long()
        return (z > 0).long()


def _to_tensor(x, device, dtype=None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    return x.to(device=device, dtype=dtype) if dtype is not None else x.to(device)


def _label_kind(y: torch.Tensor) -> str:
    if y.ndim == 1:
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise TaglessError("single labels must be integers")
        return "single"
    if y.ndim == 2:
        if ((y != 1) & (y != 0) & (y != -1)).any():
            raise TaglessError("multi-label targets must be 1 / 0 / -1 (ignored)")
        return "multi"
    raise TaglessError(f"labels must be N (single) or N x K (multi-label), got shape {tuple(y.shape)}")


def _prepare(x, y, device, dtype, num_classes: int | None, name: str):
    """Tensors on the device; single labels < 0 (unlabelled) are dropped."""
    x = _to_tensor(x, device, dtype)
    y = _to_tensor(y, device)
    if x.ndim != 2:
        raise TaglessError(f"x_{name} must be N x D, got shape {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise TaglessError(f"x_{name} has {x.shape[0]} rows but y_{name} has {y.shape[0]}")
    if not torch.isfinite(x).all():
        raise TaglessError(f"x_{name} contains NaN or inf")
    kind = _label_kind(y)
    if kind == "single":
        y = y.long()
        keep = y >= 0
        if not keep.all():
            x, y = x[keep], y[keep]
        if num_classes is not None and y.numel() and int(y.max()) >= num_classes:
            raise TaglessError(f"y_{name} has label {int(y.max())} >= num_classes={num_classes}")
    elif num_classes is not None and y.shape[1] != num_classes:
        raise TaglessError(f"y_{name} has {y.shape[1]} columns for num_classes={num_classes}")
    if x.shape[0] == 0:
        raise TaglessError(f"x_{name} has no labelled rows")
    return x, y, kind


def _prepare_pair(x_fit, y_fit, x_eval, y_eval, device, dtype, num_classes: int | None, eval_name: str):
    """Both splits on the device, checked against each other; infers num_classes."""
    xt, yt, kind = _prepare(x_fit, y_fit, device, dtype, num_classes, "train")
    xe, ye, kind_e = _prepare(x_eval, y_eval, device, dtype, num_classes, eval_name)
    if kind != kind_e:
        raise TaglessError(f"train and {eval_name} labels must be of the same kind (single or multi-label)")
    if xt.shape[1] != xe.shape[1]:
        raise TaglessError(f"x_train dim {xt.shape[1]} != x_{eval_name} dim {xe.shape[1]}")
    if kind == "single":
        if num_classes is None:
            num_classes = int(max(int(yt.max()), int(ye.max()))) + 1
        if num_classes < 2:
            raise TaglessError("a linear classifier needs at least 2 classes")
    elif yt.shape[1] != ye.shape[1]:
        raise TaglessError(f"y_train has {yt.shape[1]} classes but y_{eval_name} has {ye.shape[1]}")
    return xt, yt, xe, ye, kind, num_classes or yt.shape[1]


def _make_problem(x: torch.Tensor, y: torch.Tensor, kind: str, num_classes: int) -> Problem:
    if kind == "multi":
        return Problem(x, (y == 1).to(x.dtype), (y != -1).to(x.dtype), "ovr", y.shape[1])
    if num_classes == 2:
        return Problem(x, y.to(x.dtype), None, "binary", 2)
    return Problem(x, y, None, "softmax", num_classes)


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    return mean, torch.where(std > 0, std, torch.ones_like(std))


def _check_solver(l2_values, precondition: str, max_iter: int, tol: float) -> np.ndarray:
    values = np.asarray(l2_values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise TaglessError("l2 values must be positive numbers (and at least one)")
    if precondition not in _PRECONDITIONERS:
        raise TaglessError(f"precondition must be one of {', '.join(_PRECONDITIONERS)}, got {precondition!r}")
    if max_iter < 1 or not tol >= 0:
        raise TaglessError(f"max_iter must be >= 1 and tol >= 0, got {max_iter} and {tol}")
    return values


def _model(path: LBFGSPath, problem: Problem, l2: float, n_iter: int, objective: float,
           mean, std) -> LinearModel:
    w, b = path.weights()
    return LinearModel(w, b, problem.kind, problem.num_classes, float(l2), mean, std, n_iter, objective)


def fit_linear(
    x,
    y,
    l2: float,
    *,
    num_classes: int | None = None,
    standardize: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-4,
    tol_change: float = 1e-9,
    history_size: int = 20,
    precondition: str = "auto",
    init: LinearModel | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> LinearModel:
    """Fit one L2-regularised logistic regression (see the module docstring for the loss).

    Args:
        x: N x D features (tensor or array). y: N int labels (-1 rows dropped) or N x K 1/0/-1.
        l2: weight decay on the mean loss (``C = 1 / (l2 N)`` in scikit-learn terms).
        standardize: subtract the mean and divide by the std of x (stored in the model;
            this changes the objective, unlike ``precondition``).
        max_iter: L-BFGS iterations (paper 004 uses 5000).
        tol: stop when the largest absolute entry of the gradient of F in (W, b) is <= tol
            (scikit-learn's ``tol``; judged in the original variables whatever the
            preconditioner).
        tol_change: stop when F or the step changes by less than this (torch's
            ``tolerance_change``).
        history_size: L-BFGS memory (20 pairs: fewer passes than scipy's 10 for 2 x 20 x K x D
            extra floats).
        precondition: 'auto' (full covariance eigenbasis up to D = 2048, else per-feature
            variance), 'full', 'diag' or 'none'; see :mod:`tagless.eval._logreg`.
        init: warm start from this model's weight and bias.
        device, dtype: where and in which precision to fit (default: x's device, fp32).
    """
    _check_solver([l2], precondition, max_iter, tol)
    if device is None:
        device = x.device if isinstance(x, torch.Tensor) else "cpu"
    xt, yt, kind = _prepare(x, y, device, dtype, num_classes, "train")
    if kind == "single":
        num_classes = int(yt.max()) + 1 if num_classes is None else num_classes
        if num_classes < 2:
            raise TaglessError("a linear classifier needs at least 2 classes")
    mean = std = None
    if standardize:
        mean, std = _standardizer(xt)
        xt = (xt - mean) / std
    problem = _make_problem(xt, yt, kind, num_classes or yt.shape[1])
    path = LBFGSPath(problem, make_preconditioner(problem, precondition), max_iter, tol, tol_change, history_size)
    path.set_l2(l2)
    if init is not None:
        if init.weight.shape != path.v.shape:
            raise TaglessError(f"init weight shape {tuple(init.weight.shape)} != {tuple(path.v.shape)}")
        path.set_start(init.weight.to(xt), init.bias.to(xt))
    n_iter, objective = path.run()
    return _model(path, problem, l2, n_iter, objective, mean, std)


def _score(model: LinearModel, x: torch.Tensor, y: torch.Tensor, metric: str) -> float:
    """Score already-standardised x (the model's mean/std are not applied here)."""
    with torch.no_grad():
        z = F.linear(x, model.weight, model.bias)
    if metric in ("map_class", "map_sample"):
        if y.ndim != 2:
            raise TaglessError(f"metric {metric} needs multi-label targets")
        return (map_class if metric == "map_class" else map_sample)(z, y)
    if y.ndim != 1:
        raise TaglessError(f"metric {metric} needs single labels")
    pred = (z[:, 0] > 0).long() if model.kind == "binary" else z.argmax(dim=1)
    correct = (pred == y).double()
    if metric == "accuracy":
        return float(correct.mean())
    per_class = [correct[y == c].mean() for c in torch.unique(y)]
    return float(torch.stack(per_class).mean())


METRIC_ALIASES = {"top1": "accuracy", "mean_per_class": "mean_per_class_accuracy"}  # the command line's names


def _resolve_metric(metric: str, kind: str) -> str:
    if metric == "auto":
        return "accuracy" if kind == "single" else "map_class"
    metric = METRIC_ALIASES.get(metric, metric)
    if metric not in _METRICS:
        raise TaglessError(f"unknown metric {metric!r}; choose from auto, {', '.join(METRIC_ALIASES)}, "
                           f"{', '.join(_METRICS)}")
    return metric


@dataclass
class SweepResult:
    """Scores of an L2 sweep, in the order of ``l2_values`` given."""

    l2_values: np.ndarray
    scores: np.ndarray
    n_iters: np.ndarray
    best_index: int
    best_l2: float
    best_score: float
    metric: str
    best_model: LinearModel = field(repr=False)
    models: list[LinearModel] | None = field(default=None, repr=False)


def _sweep(problem: Problem, pre: Preconditioner, x_eval, y_eval, values, metric, max_iter, tol,
           tol_change, history_size, warm_start, mean, std, keep_models) -> SweepResult:
    # Strongest regularisation first: its optimum is near W = 0 (the cold start) and is
    # found in a few iterations; each weaker value then starts from the optimum of a
    # slightly stronger one (a regularisation path, as in glmnet / LogisticRegressionCV),
    # so the expensive weakly-regularised fits start close to their solution, with the
    # L-BFGS memory of the previous fit mapped to the new one.
    order = np.argsort(-values, kind="stable")
    scores = np.zeros(len(values))
    n_iters = np.zeros(len(values), dtype=np.int64)
    models: list[LinearModel | None] = [None] * len(values)
    best = None
    path = LBFGSPath(problem, pre, max_iter, tol, tol_change, history_size, keep_memory=warm_start)
    zero_w, zero_b = path.weights()
    for i in order:
        path.set_l2(values[i])
        if not warm_start:
            path.set_start(zero_w, zero_b)
        n_iter, objective = path.run()
        model = _model(path, problem, values[i], n_iter, objective, mean, std)
        scores[i] = _score(model, x_eval, y_eval, metric)
        n_iters[i] = n_iter
        if keep_models:
            models[i] = model
        # strictly better only: ties go to the stronger regularisation (seen first), the
        # more conservative model
        if best is None or scores[i] > scores[best]:
            best, best_model = i, model
    return SweepResult(values, scores, n_iters, int(best), float(values[best]), float(scores[best]),
                       metric, best_model, models if keep_models else None)


def linear_sweep(
    x_train,
    y_train,
    x_val,
    y_val,
    l2_values=DEFAULT_L2_VALUES,
    *,
    num_classes: int | None = None,
    metric: str = "auto",
    standardize: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-4,
    tol_change: float = 1e-9,
    history_size: int = 20,
    precondition: str = "auto",
    warm_start: bool = True,
    keep_models: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> SweepResult:
    """Fit one probe per L2 value on (x_train, y_train) and score each on (x_val, y_val) [0].

    Fits run from the largest to the smallest ``l2``, each warm-started from the previous
    optimum and L-BFGS memory (``warm_start=False`` starts every fit from zero with an empty
    memory). ``metric``: 'auto' (accuracy for single labels, mAP@class for multi-label),
    'accuracy' (alias 'top1'), 'mean_per_class_accuracy' (alias 'mean_per_class': paper 004's
    MPC, Table 1: Pets, Flowers, Caltech101, Aircraft; the mean over the classes present in
    y_val of each class's accuracy, scikit-learn's ``balanced_accuracy_score``), 'map_class' or
    'map_sample'. ``standardize`` uses the training split's statistics.
    Other arguments as in :func:`fit_linear`. Returns a :class:`SweepResult` (ties go to the
    largest l2; ``models`` holds every fit when ``keep_models``).
    """
    values = _check_solver(l2_values, precondition, max_iter, tol)
    if device is None:
        device = x_train.device if isinstance(x_train, torch.Tensor) else "cpu"
    xt, yt, xv, yv, kind, num_classes = _prepare_pair(x_train, y_train, x_val, y_val, device, dtype,
                                                      num_classes, "val")
    metric = _resolve_metric(metric, kind)
    mean = std = None
    if standardize:
        mean, std = _standardizer(xt)
        xt, xv = (xt - mean) / std, (xv - mean) / std
    problem = _make_problem(xt, yt, kind, num_classes)
    pre = make_preconditioner(problem, precondition)
    return _sweep(problem, pre, xv, yv, values, metric, max_iter, tol, tol_change, history_size,
                  warm_start, mean, std, keep_models)


@dataclass
class LinearProbeResult:
    """Outcome of :func:`linear_probe`.

    ``score``: test metric of the reported model. ``protocol``: 'val' (l2 chosen on a
    held-out split of train, refit on all of train) or 'best_on_test' (best test score over
    the sweep, paper 001's protocol: optimistic, label it as such). ``curve``: the sweep's
    score per value of ``l2_values``, measured on ``curve_split`` ('val' or 'test').
    ``C``: scikit-learn's C of the reported model (``1 / (l2 n_fit)``).
    """

    score: float
    metric: str
    protocol: str
    l2: float
    C: float
    l2_values: np.ndarray
    curve: np.ndarray
    curve_split: str
    n_train: int
    n_val: int
    n_test: int
    model: LinearModel = field(repr=False)


def _split(y: torch.Tensor, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/val split of the rows (stratified by class for single labels)."""
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    if y.ndim == 1:
        labels = y.cpu().numpy()
        val = []
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            val.append(idx[: round(val_fraction * len(idx))])
        val = np.sort(np.concatenate(val))
    else:
        val = np.sort(rng.permutation(n)[: round(val_fraction * n)])
    train = np.setdiff1d(np.arange(n), val)
    if len(val) == 0 or len(train) == 0:
        raise TaglessError(f"val_fraction={val_fraction} leaves an empty train or val split of {n} rows")
    return train, val


def linear_probe(
    x_train,
    y_train,
    x_test,
    y_test,
    protocol: str = "val",
    val_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = False,
    l2_values=DEFAULT_L2_VALUES,
    *,
    num_classes: int | None = None,
    metric: str = "auto",
    max_iter: int = 1000,
    tol: float = 1e-4,
    tol_change: float = 1e-9,
    history_size: int = 20,
    precondition: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> LinearProbeResult:
    """Linear-probe transfer evaluation with an L2 sweep [0, 1].

    protocol='val' [1]: hold out ``val_fraction`` of the training rows (stratified, seeded),
    sweep ``l2_values`` on the rest, pick the best value on the held-out rows, refit on all
    training rows (warm-started) and report its test score.
    protocol='best_on_test' [0]: sweep on all training rows, score each value on the test
    set and report the best (selection on test; comparable with paper 001's tables only).
    Other arguments as in :func:`linear_sweep`.
    """
    if protocol not in ("val", "best_on_test"):
        raise TaglessError(f"protocol must be 'val' or 'best_on_test', got {protocol!r}")
    if device is None:
        device = x_train.device if isinstance(x_train, torch.Tensor) else "cpu"
    xt, yt, xs, ys, _kind, num_classes = _prepare_pair(x_train, y_train, x_test, y_test, device, dtype,
                                                      num_classes, "test")
    opts = dict(num_classes=num_classes, metric=metric, standardize=standardize, max_iter=max_iter,
                tol=tol, tol_change=tol_change, history_size=history_size, precondition=precondition,
                device=device, dtype=dtype)
    if protocol == "best_on_test":
        sweep = linear_sweep(xt, yt, xs, ys, l2_values, **opts)
        l2 = sweep.best_l2
        return LinearProbeResult(sweep.best_score, sweep.metric, protocol, l2, l2_to_C(l2, xt.shape[0]),
                                 sweep.l2_values, sweep.scores, "test", xt.shape[0], 0, xs.shape[0],
                                 sweep.best_model)
    if not 0 < val_fraction < 1:
        raise TaglessError(f"val_fraction must be in (0, 1), got {val_fraction}")
    tr, va = _split(yt, val_fraction, seed)
    tr_t, va_t = torch.as_tensor(tr, device=xt.device), torch.as_tensor(va, device=xt.device)
    sweep = linear_sweep(xt[tr_t], yt[tr_t], xt[va_t], yt[va_t], l2_values, **opts)
    opts.pop("metric")
    model = fit_linear(xt, yt, sweep.best_l2, init=sweep.best_model, **opts)
    xs_std = xs if model.mean is None else (xs - model.mean) / model.std
    score = _score(model, xs_std, ys, sweep.metric)
    return LinearProbeResult(score, sweep.metric, protocol, sweep.best_l2, l2_to_C(sweep.best_l2, xt.shape[0]),
                             sweep.l2_values, sweep.scores, "val", len(tr), len(va), xs.shape[0], model)
