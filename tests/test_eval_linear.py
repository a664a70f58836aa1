"""Linear probes against scikit-learn's LogisticRegression(solver='lbfgs') at the same C."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tagless.errors import TaglessError
from tagless.eval import fit_linear, l2_to_C, linear_probe, linear_sweep, map_class


def _blobs(n=600, dim=20, classes=4, sep=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * sep
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.standard_normal((n, dim))
    return x, y


def _sk(x, y, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, solver="lbfgs", max_iter=5000, tol=1e-10).fit(x, y)


def _sk_objective(clf, x, y):
    """scikit-learn's objective divided by N, i.e. ours."""
    logp = clf.predict_log_proba(x)
    return -logp[np.arange(len(y)), np.searchsorted(clf.classes_, y)].mean()


@pytest.mark.parametrize("l2,precondition", [(1e-3, "auto"), (1e-1, "auto"), (1e-3, "diag"), (1e-3, "none")])
def test_multinomial_matches_sklearn(l2, precondition):
    x, y = _blobs()
    if precondition != "none":  # plain L-BFGS is slow on this; preconditioning is the point
        x = x * np.linspace(0.1, 3, x.shape[1]) + 2.0  # uneven scales and an offset
    ref = _sk(x, y, l2_to_C(l2, len(y)))
    tol = 1e-9 if precondition == "none" else 1e-7  # the scaled problem is slower to polish
    model = fit_linear(x, y, l2, dtype=torch.float64, tol=tol, tol_change=0, max_iter=2000,
                       precondition=precondition)
    assert model.kind == "softmax" and model.weight.shape == (4, 20)
    np.testing.assert_allclose(model.weight.numpy(), ref.coef_, atol=1e-4)
    proba = torch.softmax(model.decision_function(torch.tensor(x)), 1).numpy()
    np.testing.assert_allclose(proba, ref.predict_proba(x), atol=1e-5)
    ours_obj = model.objective
    ref_obj = _sk_objective(ref, x, y) + 0.5 * l2 * (ref.coef_**2).sum()
    assert ours_obj == pytest.approx(ref_obj, rel=1e-6)


def test_path_memory_maps_exactly_to_the_new_l2():
    """After set_l2, the stored gradient at the previous iterate equals the new objective's
    gradient there, in the new coordinates (the invariant behind keeping the memory)."""
    from tagless.eval._logreg import LBFGSPath, Problem, make_preconditioner

    x, y = _blobs(n=300, dim=12, classes=3, seed=8)
    x = torch.tensor(x * np.linspace(0.2, 2, 12) + 1.0)
    problem = Problem(x, torch.tensor(y), None, "softmax", 3)
    path = LBFGSPath(problem, make_preconditioner(problem, "full"), 4, 0.0, 0.0, 10)
    path.set_l2(1e-1)
    path.run()
    path.set_l2(3e-3)
    state = path.opt.state[path.v]
    flat = torch.cat([path.v.detach().reshape(-1), path.c.detach()])
    prev = flat - state["t"] * state["d"]
    with torch.no_grad():
        path.v.copy_(prev[:-3].view(3, 12))
        path.c.copy_(prev[-3:])
    path.evaluate()
    grad = torch.cat([path.v.grad.reshape(-1), path.c.grad])
    torch.testing.assert_close(state["prev_flat_grad"], grad, rtol=1e-9, atol=1e-12)
    for y_, s_, ro in zip(state["old_dirs"], state["old_stps"], state["ro"]):
        assert float(ro) == pytest.approx(1 / float(y_.dot(s_)))


def test_float32_default_accuracy_close_to_sklearn():
    x, y = _blobs(n=800, dim=30, classes=5, sep=0.5, seed=1)
    xt, yt, xs, ys = x[:600], y[:600], x[600:], y[600:]
    l2 = 1e-2
    ref = _sk(xt, yt, l2_to_C(l2, len(yt)))
    model = fit_linear(torch.tensor(xt, dtype=torch.float32), yt, l2)
    acc = (model.predict(torch.tensor(xs)).numpy() == ys).mean()
    assert abs(acc - ref.score(xs, ys)) <= 0.005
    # default tol=1e-4 stops near, not at, the optimum: F within 1e-4 relative
    ref_obj = _sk_objective(ref, xt, yt) + 0.5 * l2 * (ref.coef_**2).sum()
    assert ref_obj * (1 - 1e-6) <= model.objective <= ref_obj * (1 + 1e-4)
    np.testing.assert_allclose(model.weight.numpy(), ref.coef_, atol=2e-2)


def test_binary_matches_sklearn():
    x, y = _blobs(classes=2, seed=2)
    l2 = 1e-2
    ref = _sk(x, y, l2_to_C(l2, len(y)))
    model = fit_linear(x, y, l2, dtype=torch.float64, tol=1e-9, tol_change=0)
    assert model.kind == "binary" and model.weight.shape == (1, 20)
    np.testing.assert_allclose(model.weight.numpy(), ref.coef_, atol=1e-5)
    np.testing.assert_allclose(model.bias.numpy(), ref.intercept_, atol=1e-5)
    np.testing.assert_array_equal(model.predict(torch.tensor(x)).numpy(), ref.predict(x))


def test_ovr_with_ignored_entries_matches_per_class_sklearn():
    rng = np.random.default_rng(3)
    n, dim, k = 500, 15, 4
    x = rng.standard_normal((n, dim))
    w = rng.standard_normal((dim, k))
    y = (x @ w + rng.standard_normal((n, k)) > 0.5).astype(np.int64)
    y[rng.random((n, k)) < 0.3] = -1
    l2 = 1e-2
    model = fit_linear(x, y, l2, dtype=torch.float64, tol=1e-9, tol_change=0)
    assert model.kind == "ovr"
    for c in range(k):
        keep = y[:, c] != -1
        ref = _sk(x[keep], y[keep, c], l2_to_C(l2, n))  # common C = 1 / (l2 N), N = all rows
        np.testing.assert_allclose(model.weight[c].numpy(), ref.coef_[0], atol=1e-5)
        np.testing.assert_allclose(model.bias[c].numpy(), ref.intercept_[0], atol=1e-5)
    # rows whose targets are all ignored contribute nothing but their count to N: with l2
    # rescaled to keep C, garbage features on such rows leave the fit unchanged
    junk = rng.standard_normal((50, dim)) * 100
    x2, y2 = np.vstack([x, junk]), np.vstack([y, -np.ones((50, k), dtype=np.int64)])
    padded = fit_linear(x2, y2, l2 * n / (n + 50), dtype=torch.float64, tol=1e-9, tol_change=0)
    torch.testing.assert_close(padded.weight, model.weight, atol=1e-6, rtol=0)


def test_unlabelled_rows_dropped():
    x, y = _blobs(n=300, seed=4)
    y_unl = y.copy()
    y_unl[:50] = -1
    a = fit_linear(x, y_unl, 1e-2, dtype=torch.float64, tol=1e-9, tol_change=0)
    b = fit_linear(x[50:], y[50:], 1e-2, dtype=torch.float64, tol=1e-9, tol_change=0)
    torch.testing.assert_close(a.weight, b.weight, atol=1e-6, rtol=0)


def test_sweep_chooses_a_sensible_value_and_warm_start_agrees():
    # few noisy samples in high dimension: too little and too much regularisation both hurt
    x, y = _blobs(n=700, dim=60, classes=3, sep=0.35, seed=5)
    xt, yt, xv, yv = x[:200], y[:200], x[200:], y[200:]
    values = np.logspace(-4, 2, 13)
    sweep = linear_sweep(xt, yt, xv, yv, values, dtype=torch.float64, tol=1e-8, tol_change=0)
    assert sweep.scores.shape == (13,) and sweep.best_score == sweep.scores.max()
    assert values[1] <= sweep.best_l2 <= values[-2]
    assert sweep.best_score > sweep.scores[0] and sweep.best_score > sweep.scores[-1]
    cold = linear_sweep(xt, yt, xv, yv, values, dtype=torch.float64, tol=1e-8, tol_change=0, warm_start=False)
    np.testing.assert_allclose(cold.scores, sweep.scores, atol=2 / len(yv))
    torch.testing.assert_close(cold.best_model.weight, sweep.best_model.weight, atol=1e-5, rtol=0)
    # the same sweep with scikit-learn picks an equally good value
    sk_scores = [_sk(xt, yt, l2_to_C(v, len(yt))).score(xv, yv) for v in values]
    assert sweep.best_score == pytest.approx(max(sk_scores), abs=0.005)


def test_linear_probe_protocols():
    x, y = _blobs(n=900, dim=20, classes=4, sep=0.6, seed=6)
    xt, yt, xs, ys = x[:600], y[:600], x[600:], y[600:]
    values = np.logspace(-5, 1, 7)
    res = linear_probe(xt, yt, xs, ys, protocol="val", l2_values=values, seed=0)
    assert res.protocol == "val" and res.curve_split == "val" and res.metric == "accuracy"
    assert res.n_train + res.n_val == 600 and res.n_val == pytest.approx(120, abs=4)
    assert res.l2 in values and pytest.approx(1 / (res.l2 * 600)) == res.C
    ref = _sk(xt, yt, res.C).score(xs, ys)
    assert abs(res.score - ref) <= 0.005
    best = linear_probe(xt, yt, xs, ys, protocol="best_on_test", l2_values=values, standardize=True)
    assert best.protocol == "best_on_test" and best.curve_split == "test"
    assert best.score == best.curve.max() and best.model.mean is not None
    mpc = linear_probe(xt, yt, xs, ys, l2_values=values, metric="mean_per_class_accuracy")
    assert 0 < mpc.score <= 1
    with pytest.raises(TaglessError):
        linear_probe(xt, yt, xs, ys, protocol="test")


def test_multilabel_probe_reports_map():
    rng = np.random.default_rng(7)
    n, dim, k = 600, 12, 5
    x = rng.standard_normal((n, dim))
    y = (x @ rng.standard_normal((dim, k)) + rng.standard_normal((n, k)) > 1).astype(np.int64)
    y[rng.random((n, k)) < 0.1] = -1
    res = linear_probe(x[:400], y[:400], x[400:], y[400:], l2_values=np.logspace(-4, 0, 5))
    assert res.metric == "map_class"
    scores = res.model.decision_function(torch.tensor(x[400:]))
    assert res.score == pytest.approx(map_class(scores, torch.tensor(y[400:])), abs=1e-6)
    assert res.score > 0.7


def test_bad_inputs_raise():
    x, y = _blobs(n=50)
    with pytest.raises(TaglessError):
        fit_linear(x, y[:-1], 1e-2)
    with pytest.raises(TaglessError):
        fit_linear(x, y, -1.0)
    with pytest.raises(TaglessError):
        fit_linear(x, np.zeros(50, dtype=int), 1e-2)
    with pytest.raises(TaglessError):
        linear_sweep(x, y, x, y, [])
    xn = x.copy()
    xn[0, 0] = np.nan
    with pytest.raises(TaglessError):
        fit_linear(xn, y, 1e-2)


def test_a_diverged_warm_started_fit_is_redone_without_memory(monkeypatch):
    """fp32 curvature pairs from tiny steps can send L-BFGS to NaN at one L2 value (seen on
    real features at l2 = 1 after a path from 1e5): that value is fitted again from where it
    began with an empty memory, and the sweep equals a cold one."""
    x, y = _blobs(n=400, dim=20, classes=3, sep=0.5, seed=6)
    values = np.logspace(-3, 1, 5)
    kw = dict(dtype=torch.float64, tol=1e-8, tol_change=0)
    cold = linear_sweep(x[:200], y[:200], x[200:], y[200:], values, warm_start=False, **kw)
    real_step, calls = torch.optim.LBFGS.step, []

    def poisoned_step(self, closure):  # the third fit (l2 = 0.1) leaves its parameters NaN
        out = real_step(self, closure)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                for p in self.param_groups[0]["params"]:
                    p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.LBFGS, "step", poisoned_step)
    warm = linear_sweep(x[:200], y[:200], x[200:], y[200:], values, **kw)
    assert len(calls) == len(values) + 1  # one fit redone
    assert np.isfinite(warm.scores).all()
    np.testing.assert_allclose(warm.scores, cold.scores, atol=2 / 200)
    torch.testing.assert_close(warm.best_model.weight, cold.best_model.weight, atol=1e-5, rtol=0)
