"""Multi-label losses against their formulas written out with explicit ``math`` loops.

The hand-made batch has a row with positives, negatives and unknowns, a row without a
positive, a row without a negative, an all-unknown row and a plain row; a column has no
positive. Every loss is checked on it under both ``unknown`` conventions.
"""

import dataclasses
import inspect
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from tagless.config_io import from_dict
from tagless.errors import TaglessError
from tagless.eval.multilabel import map_class
from tagless.losses.large_loss import large_loss_entries, ll_cp, ll_cp_corrections, ll_ct, ll_r, rejection_rate
from tagless.losses.multilabel import asl, sample_wise, splc, two_way
from tagless.losses.registry import LOSS_CONFIGS, LOSSES, NEEDS, EnSclConfig, LossConfig
from tagless.losses.single_positive import consistency, expected_negatives, role

NAMES = ["bce", "focal", "asl", "two_way", "sample_wise", "class_wise", "two_way_margin", "warp", "rml", "an",
         "an_ls", "wan", "epr", "role", "en", "hill", "splc", "en_cl", "en_scl", "ll_r", "ll_ct", "ll_cp"]
LARGE_LOSS = ("ll_r", "ll_ct", "ll_cp")

X = [[1.2, -0.7, 0.3, -2.0],
     [-0.4, 0.9, -1.5, 0.2],
     [2.1, 0.5, -0.3, 1.15],
     [0.0, -1.1, 0.8, -0.6],
     [-1.3, 1.7, 0.4, -0.9]]
Y = [[1, 0, -1, 0],
     [0, -1, 0, -1],  # no positive
     [1, 1, -1, -1],  # no observed negative
     [-1, -1, -1, -1],  # all unknown
     [0, 1, 1, 0]]  # column 3 has no positive
TH = [[0.5, -0.2, 0.1, -1.0],  # ROLE's label-estimate logits
      [-0.3, 0.4, -0.8, 0.6],
      [1.5, 0.9, 0.2, -0.4],
      [0.3, -0.5, 0.7, 0.0],
      [-0.6, 1.1, 0.8, -0.2]]
NEG = [[False, False, True, False],  # EN's expected negatives (only unknown entries matter)
       [False, False, False, True],
       [False, False, False, True],
       [True, False, True, False],
       [False, False, False, False]]
EMA = [[0.7, 0.2, 0.4, 0.1],
       [0.3, 0.6, 0.2, 0.5],
       [0.8, 0.7, 0.3, 0.6],
       [0.5, 0.2, 0.6, 0.4],
       [0.1, 0.9, 0.5, 0.2]]
_g = torch.Generator().manual_seed(3)
CAM = (torch.randn(5, 4, 2, 2, generator=_g) * 2).tolist()
HEAT = torch.rand(5, 4, 2, 2, generator=_g).tolist()
K = 1.5


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---- scalar helpers (math only) -----------------------------------------------------------

def sig(v):
    return 1 / (1 + math.exp(-v))


def nlog_p(v):  # -log sigmoid(v)
    return math.log1p(math.exp(-v)) if v >= 0 else -v + math.log1p(math.exp(v))


def nlog_1mp(v):  # -log(1 - sigmoid(v))
    return nlog_p(-v)


def kind(y, unknown):
    if y == 1:
        return "pos"
    if y == 0 or unknown == "negative":
        return "neg"
    return None


def mean_of(total, count):
    return total / count if count else 0.0


def entries(unknown):
    for i in range(len(X)):
        for c in range(len(X[0])):
            yield i, c, X[i][c], Y[i][c], kind(Y[i][c], unknown)


# ---- references --------------------------------------------------------------------------

def ref_bce(unknown="ignore"):
    tot = cnt = 0
    for _, _, x, _, k in entries(unknown):
        if k:
            tot += nlog_p(x) if k == "pos" else nlog_1mp(x)
            cnt += 1
    return mean_of(tot, cnt)


def ref_focal(unknown="negative", gamma=2.0, reduction="mean"):
    tot = cnt = 0
    for _, _, x, _, k in entries(unknown):
        if k:
            p = sig(x)
            tot += (1 - p) ** gamma * nlog_p(x) if k == "pos" else p ** gamma * nlog_1mp(x)
            cnt += 1
    return tot if reduction == "sum" else mean_of(tot, cnt)


def ref_asl(unknown="negative", gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8, reduction="mean"):
    tot = cnt = 0
    for _, _, x, _, k in entries(unknown):
        if k:
            p = sig(x)
            if k == "pos":
                tot += -((1 - p) ** gamma_pos) * math.log(max(p, eps))
            else:
                pm = max(p - clip, 0.0)
                tot += -(pm ** gamma_neg) * math.log(max(1 - pm, eps))
            cnt += 1
    return tot if reduction == "sum" else mean_of(tot, cnt)


def _sets(unknown, by_row):
    outer = range(len(X)) if by_row else range(len(X[0]))
    inner = range(len(X[0])) if by_row else range(len(X))
    for a in outer:
        P, N = [], []
        for b in inner:
            i, c = (a, b) if by_row else (b, a)
            k = kind(Y[i][c], unknown)
            if k == "pos":
                P.append(X[i][c])
            elif k == "neg":
                N.append(X[i][c])
        yield P, N


def ell(P, N, tp, tn, margin=0.0):
    """Paper 001 supp. Eq. (iii), written out."""
    hard_neg = tn * math.log(sum(math.exp(v / tn) for v in N))
    hard_pos = tp * math.log(sum(math.exp(-v / tp) for v in P))
    return math.log1p(math.exp(hard_neg + hard_pos + margin))


def ref_direction(unknown, by_row, tp=4.0, tn=1.0, margin=0.0):
    tot = cnt = 0
    for P, N in _sets(unknown, by_row):
        if P:
            cnt += 1
            tot += ell(P, N, tp, tn, margin) if N else 0.0
    return mean_of(tot, cnt)


def ref_sample_wise(unknown="ignore", tp=4.0, tn=1.0):
    return ref_direction(unknown, True, tp, tn)


def ref_class_wise(unknown="ignore", tp=4.0, tn=1.0):
    return ref_direction(unknown, False, tp, tn)


def ref_two_way(unknown="ignore", tp=4.0, tn=1.0):
    return ref_direction(unknown, True, tp, tn) + ref_direction(unknown, False, tp, tn)


def ref_two_way_margin(unknown="ignore", margin=1.0):
    return ref_direction(unknown, True, 1, 1, margin) + ref_direction(unknown, False, 1, 1, margin)


def ref_warp(unknown="ignore", margin=1.0):
    tot = cnt = 0
    for P, N in _sets(unknown, True):
        if not P:
            continue
        cnt += 1
        for xp in P:
            hinges = [max(0.0, margin - xp + xn) for xn in N]
            v = sum(1 for h in hinges if h > 0)
            if v:
                tot += sum(1 / j for j in range(1, v + 1)) / v * sum(hinges)
    return mean_of(tot, cnt)


def ref_rml(unknown="ignore", ramp_cap=2.0, class_weight=1.0):
    def ramp(z):
        return min(max(0.0, 1 - z), ramp_cap)
    rank = rows = 0
    for P, N in _sets(unknown, True):
        if P and N:
            rows += 1
            rank += sum(ramp(xp - xn) for xp in P for xn in N) / (len(P) * len(N))
    tot = cnt = 0
    for _, _, x, _, k in entries(unknown):
        if k:
            tot += ramp(x if k == "pos" else -x)
            cnt += 1
    return mean_of(rank, rows) + class_weight * mean_of(tot, cnt)


def ref_hill(unknown="negative", lamb=1.5, margin=1.0, gamma=2.0, reduction="mean"):
    tot = cnt = 0
    for _, _, x, _, k in entries(unknown):
        if k:
            if k == "pos":
                pm = sig(x - margin)
                tot += (1 - pm) ** gamma * nlog_p(x - margin)
            else:
                p = sig(x)
                tot += (lamb - p) * p * p
            cnt += 1
    return tot if reduction == "sum" else mean_of(tot, cnt)


def ref_splc(unknown="negative", epoch=0, tau=0.6, change_epoch=1, margin=1.0, gamma=2.0, reduction="mean"):
    tot = cnt = 0
    for _, _, x, y, k in entries(unknown):
        if y == 1:
            x = x - margin
        elif y == -1 and epoch >= change_epoch and sig(x) > tau:
            k = "pos"
        if k:
            p = sig(x)
            tot += (1 - p) ** gamma * nlog_p(x) if k == "pos" else p ** gamma * nlog_1mp(x)
            cnt += 1
    return tot if reduction == "sum" else mean_of(tot, cnt)


def ref_an(unknown="negative"):
    return ref_bce(unknown)


def ref_an_ls(unknown="negative", ls_coef=0.1):
    tot = cnt = 0
    for _, _, x, _, k in entries(unknown):
        if k == "pos":
            tot += (1 - ls_coef) * nlog_p(x) + ls_coef * nlog_1mp(x)
        elif k == "neg":
            tot += (1 - ls_coef) * nlog_1mp(x) + ls_coef * nlog_p(x)
        cnt += k is not None
    return mean_of(tot, cnt)


def ref_wan(unknown="negative"):
    tot = cnt = 0
    for _, _, x, y, k in entries(unknown):
        if k == "pos":
            tot += nlog_p(x)
        elif k == "neg":
            tot += nlog_1mp(x) * (1 / 3 if y == -1 else 1.0)
        cnt += k is not None
    return mean_of(tot, cnt)


def epr_reg(P, k):
    return (sum(sum(row) for row in P) / len(P) - k) ** 2 / len(P[0]) ** 2


def ref_epr(unknown="negative", expected_positives=K):
    tot = cnt = 0
    for _, _, x, y, k in entries(unknown):
        if y == 1:
            tot += nlog_p(x)
        elif y == 0:
            tot += nlog_1mp(x)
        cnt += k is not None
    return mean_of(tot, cnt) + epr_reg([[sig(v) for v in row] for row in X], expected_positives)


def ref_role(unknown="negative", expected_positives=K):
    tot = cnt = 0
    for i, c, x, y, k in entries(unknown):
        if not k:
            continue
        th = TH[i][c]
        p, q = sig(x), sig(th)
        anchor = nlog_p(x) + nlog_p(th) if y == 1 else (nlog_1mp(x) + nlog_1mp(th) if y == 0 else 0.0)
        cross = q * nlog_p(x) + (1 - q) * nlog_1mp(x) + p * nlog_p(th) + (1 - p) * nlog_1mp(th)
        tot += 0.5 * anchor + 0.5 * cross
        cnt += 1
    reg = 0.5 * (epr_reg([[sig(v) for v in row] for row in X], expected_positives)
                 + epr_reg([[sig(v) for v in row] for row in TH], expected_positives))
    return mean_of(tot, cnt) + reg


def ref_en(unknown="negative", negatives=NEG):
    tot = cnt = 0
    for i, c, x, y, k in entries(unknown):
        if y == 1:
            tot += nlog_p(x)
        elif y == 0 or (k == "neg" and (negatives is None or negatives[i][c])):
            tot += nlog_1mp(x)
        cnt += k is not None
    return mean_of(tot, cnt)


def ref_distance(p, q, distance):
    if distance == "l1":
        return abs(p - q)
    if distance == "l2":
        return (p - q) ** 2
    p, q = min(max(p, 1e-6), 1 - 1e-6), min(max(q, 1e-6), 1 - 1e-6)
    m = (p + q) / 2

    def kl(a):
        return a * math.log(a / m) + (1 - a) * math.log((1 - a) / (1 - m))
    return 0.5 * (kl(p) + kl(q))


def ref_en_cl(unknown="negative", cl_weight=1.0, distance="l2"):
    d = [ref_distance(sig(X[i][c]), EMA[i][c], distance) for i in range(5) for c in range(4)]
    return ref_en(unknown) + cl_weight * sum(d) / len(d)


def ref_en_scl(unknown="negative", scl_weight=1.0, distance="l2"):
    d = [ref_distance(sig(CAM[i][c][u][v]), HEAT[i][c][u][v], distance)
         for i in range(5) for c in range(4) for u in range(2) for v in range(2)]
    return ref_en(unknown) + scl_weight * sum(d) / len(d)


def ref_large_loss(unknown, epoch, delta_rel, delta_max=1.0, schedule="linear", rate_of="unobserved",
                   reduction="mean", correct=False):
    """Kim et al.: AN's BCE; from the second epoch the ceil(delta n) unobserved entries with the
    largest AN loss -log(1 - p) are rejected (0) or get -log p; delta = min(delta_max, delta_rel t)
    (linear) or min(delta_max, delta_rel) (constant), n = the unobserved count or B x C."""
    rate = 0.0 if epoch == 0 else min(delta_max, delta_rel * epoch if schedule == "linear" else delta_rel)
    unobserved = sorted(((nlog_1mp(x), i, c) for i, c, x, y, k in entries(unknown) if y == -1 and k), reverse=True)
    n = len(unobserved) if rate_of == "unobserved" else len(X) * len(X[0])
    large = {(i, c) for _, i, c in unobserved[:math.ceil(round(rate * n, 9))]}
    tot = cnt = 0
    for i, c, x, _, k in entries(unknown):
        if k:
            if (i, c) in large:
                tot += nlog_p(x) if correct else 0.0
            else:
                tot += nlog_p(x) if k == "pos" else nlog_1mp(x)
            cnt += 1
    return tot if reduction == "sum" else mean_of(tot, cnt)


# the hand batch's 9 unknowns at rate 0.4 (epoch 2 x 0.2): the 4 largest, logits 1.15, 0.9, 0.8, 0.3
LL_STATE = {"epoch": 2, "delta_rel": 0.2}


def ref_ll_r(unknown="negative", epoch=2, delta_rel=0.2, **kw):
    return ref_large_loss(unknown, epoch, delta_rel, **kw)


def ref_ll_ct(unknown="negative", epoch=2, delta_rel=0.2, **kw):
    return ref_large_loss(unknown, epoch, delta_rel, correct=True, **kw)


def ref_ll_cp(unknown="negative", epoch=2, delta_rel=0.2, schedule="constant", **kw):
    return ref_large_loss(unknown, epoch, delta_rel, schedule=schedule, correct=True, **kw)


REFS = {n: globals()[f"ref_{n}"] for n in NAMES}


def state_kwargs(name):
    """The state each stateful loss reads, for the hand-made batch."""
    return {
        "epr": {"expected_positives": K},
        "role": {"label_logits": torch.tensor(TH), "expected_positives": K},
        "en": {"negatives": torch.tensor(NEG)},
        "en_cl": {"negatives": torch.tensor(NEG), "ema_scores": torch.tensor(EMA)},
        "en_scl": {"negatives": torch.tensor(NEG), "cam_logits": torch.tensor(CAM),
                   "heatmap_target": torch.tensor(HEAT)},
        **dict.fromkeys(LARGE_LOSS, LL_STATE),
    }.get(name, {})


def _value(name, x=None, y=None, **kw):
    x = torch.tensor(X) if x is None else x
    y = torch.tensor(Y, dtype=torch.int8) if y is None else y
    return LOSSES[name](x, y, **{**state_kwargs(name), **kw})


# ---- the hand-made batch ------------------------------------------------------------------

@pytest.mark.parametrize("unknown", ["negative", "ignore"])
@pytest.mark.parametrize("name", NAMES)
def test_every_loss_matches_its_formula(name, unknown):
    got = _value(name, unknown=unknown).item()
    assert got == pytest.approx(REFS[name](unknown=unknown), rel=2e-5, abs=1e-6)


def test_unknown_defaults_and_the_two_conventions_differ():
    ignore_default = {"bce", "two_way", "sample_wise", "class_wise", "two_way_margin", "warp", "rml"}
    for name in NAMES:
        default = inspect.signature(LOSSES[name]).parameters["unknown"].default
        assert default == ("ignore" if name in ignore_default else "negative"), name
        assert _value(name).item() == pytest.approx(REFS[name](), rel=2e-5, abs=1e-6)
        if name != "epr":  # EPR has no negative term: the conventions differ only in the count
            assert abs(_value(name, unknown="negative").item() - _value(name, unknown="ignore").item()) > 1e-4, name
    with pytest.raises(TaglessError):
        _value("bce", unknown="maybe")


def _ref_at(name, xs, unknown):
    """The reference evaluated at logits ``xs`` instead of X."""
    global X  # noqa: PLW0603 - the ref_* formulas read the module-level X; swapped in and restored below
    saved, X = X, xs
    try:
        return REFS[name](unknown=unknown)
    finally:
        X = saved


@pytest.mark.parametrize("unknown", ["negative", "ignore"])
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("asl", "role")])  # detached weights: own tests
def test_gradients_are_the_derivative_of_the_formula(name, unknown):
    """Autograd against central differences of the math reference: catches a stray
    ``.detach()`` (focal, hill and splc differentiate their focal weights)."""
    x = torch.tensor(X, requires_grad=True)
    (grad,) = torch.autograd.grad(_value(name, x=x, unknown=unknown), x)
    h = 1e-6
    for i in range(len(X)):
        for c in range(len(X[0])):
            up = [row[:] for row in X]
            down = [row[:] for row in X]
            up[i][c] += h
            down[i][c] -= h
            fd = (_ref_at(name, up, unknown) - _ref_at(name, down, unknown)) / (2 * h)
            assert grad[i, c].item() == pytest.approx(fd, abs=2e-6, rel=1e-4), (i, c)


@pytest.mark.parametrize("name", ["focal", "asl", "hill", "splc"])
def test_sum_reduction(name):
    kw = {"epoch": 1} if name == "splc" else {}
    got = _value(name, reduction="sum", **kw).item()
    assert got == pytest.approx(REFS[name](reduction="sum", **kw), rel=2e-5)


@pytest.mark.parametrize("distance", ["l1", "l2", "jsd"])
def test_cl_and_scl_distances(distance):
    assert _value("en_cl", distance=distance, cl_weight=0.3).item() == pytest.approx(
        ref_en_cl(distance=distance, cl_weight=0.3), rel=2e-5)
    assert _value("en_scl", distance=distance, scl_weight=2.0).item() == pytest.approx(
        ref_en_scl(distance=distance, scl_weight=2.0), rel=2e-5)
    p, q = torch.tensor([0.0, 0.3, 1.0]), torch.tensor([0.5, 0.3, 0.2])
    want = sum(ref_distance(a, b, distance) for a, b in zip(p.tolist(), q.tolist())) / 3
    assert consistency(p, q, distance).item() == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_warm_up_state_falls_back_to_an():
    an = _value("an").item()
    assert _value("en", negatives=None).item() == pytest.approx(an, rel=1e-6)
    assert _value("en_cl", negatives=None, ema_scores=None).item() == pytest.approx(an, rel=1e-6)
    assert _value("en_scl", negatives=None, cam_logits=None, heatmap_target=None).item() == pytest.approx(an, rel=1e-6)


# ---- two-way specifics --------------------------------------------------------------------

def test_two_way_at_unit_temperature_is_the_pairwise_softmax():
    x = torch.tensor(X)
    y = torch.tensor(Y, dtype=torch.int8)

    def pairwise(by_row):
        tot = cnt = 0
        for P, N in _sets("ignore", by_row):
            if P:
                cnt += 1
                tot += math.log(1 + sum(math.exp(xn - xp) for xp in P for xn in N))
        return tot / cnt
    assert sample_wise(x, y, tp=1.0, tn=1.0).item() == pytest.approx(pairwise(True), rel=1e-5)
    assert two_way(x, y, tp=1.0, tn=1.0).item() == pytest.approx(pairwise(True) + pairwise(False), rel=1e-5)


def test_two_way_masking_does_not_leak_at_minus_500():
    x = torch.tensor([[3.0, 2.0, -500.0, 1.0]])
    y = torch.tensor([[1, 1, 0, 0]])
    exact = math.log1p(math.exp(math.log(math.exp(-500.0) + math.exp(1.0))
                                + 4 * math.log(math.exp(-3 / 4) + math.exp(-2 / 4))))
    # the official additive -100 mask (in the T-scaled domain) lets the -500 negative into the soft-min
    official = math.log1p(math.exp(math.log(math.exp(-500.0) + math.exp(1.0) + math.exp(2.0 - 100) + math.exp(3 - 100))
                                   + 4 * math.log(math.exp(-3 / 4) + math.exp(-2 / 4) + math.exp(500 / 4 - 100)
                                                  + math.exp(-1 / 4 - 100))))
    assert official > exact + 50
    assert sample_wise(x, y).item() == pytest.approx(exact, rel=1e-6)


# ---- finiteness ---------------------------------------------------------------------------

def _grad_inputs(name, x, y, g):
    kw = {"expected_positives": 2.0} if name in ("epr", "role") else {}
    extra = []
    if name == "role":
        kw["label_logits"] = torch.randn(x.shape, generator=g).requires_grad_()
        extra.append(kw["label_logits"])
    if name in ("en", "en_cl", "en_scl"):
        kw["negatives"] = torch.rand(x.shape, generator=g) > 0.5
    if name == "en_cl":
        kw["ema_scores"] = torch.rand(x.shape, generator=g)
    if name == "en_scl":
        kw["cam_logits"] = (torch.randn(*x.shape, 3, 3, generator=g) * 50).requires_grad_()
        kw["heatmap_target"] = torch.rand(*x.shape, 3, 3, generator=g)
        extra.append(kw["cam_logits"])
    if name == "splc":
        kw["epoch"] = 3
    if name in LARGE_LOSS:
        kw["epoch"], kw["delta_rel"] = 3, 0.3
    return kw, extra


@pytest.mark.parametrize("name", NAMES)
def test_finite_without_positives(name):
    g = torch.Generator().manual_seed(1)
    big = torch.tensor([[60.0, -120.0, 300.0, -500.0, 0.0], [-90.0, 95.0, 0.5, -0.5, 200.0]])
    cases = [
        (torch.tensor([[1, 0, -1, 0, 1], [0, -1, 0, -1, 0]]), big),  # a row without positive
        (torch.tensor([[0, 0, -1, 0, 0], [-1, -1, 0, -1, 0]]), big),  # no positive in the batch
        (torch.full((2, 5), -1), big),  # everything unknown
        (torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]), big),  # no negative at all
    ]
    distances = ["l1", "l2", "jsd"] if name in ("en_cl", "en_scl") else [None]
    for (y, x0), unknown, distance in itertools.product(cases, ("negative", "ignore"), distances):
        x = x0.clone().requires_grad_()
        kw, extra = _grad_inputs(name, x, y, g)
        if distance:
            kw["distance"] = distance
        loss = LOSSES[name](x, y, unknown=unknown, **kw)
        assert loss.dim() == 0 and torch.isfinite(loss), (name, y, unknown)
        assert loss.requires_grad
        grads = torch.autograd.grad(loss, [x, *extra], allow_unused=True)
        assert all(gr is None or torch.isfinite(gr).all() for gr in grads), (name, y, unknown)


# ---- learning ---------------------------------------------------------------------------

def _problem():
    g = torch.Generator().manual_seed(0)
    n, d, c = 240, 12, 5
    feats = torch.randn(n, d, 2, 2, generator=g)  # a 2 x 2 "feature map" per image
    w_true = torch.randn(d, c, generator=g)
    s = feats.mean((2, 3)) @ w_true
    full = (s > s.quantile(0.62, dim=0)).to(torch.int8)  # ~1.9 positives per image
    single = torch.full_like(full, -1)
    for i in range(n):
        idx = full[i].nonzero().flatten()
        if len(idx):
            single[i, idx[torch.randint(len(idx), (1,), generator=g)]] = 1
    return feats, full, single, g


FULL_LABEL = {"bce", "focal", "asl", "two_way", "sample_wise", "class_wise", "two_way_margin", "warp", "rml"}


def _train(name, steps=200):
    feats, full, single, g = _problem()
    n, d = feats.shape[:2]
    c = full.shape[1]
    targets = full if name in FULL_LABEL else single
    k = float(full.float().sum(1).mean())
    w = (torch.randn(d, c, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(c, requires_grad=True)
    params = [{"params": [w, b], "lr": 0.05}]
    label_logits = None
    if name == "role":
        u = (torch.rand(n, c, generator=g) * 2 - 1) * math.log(0.6 / 0.4)
        label_logits = torch.where(targets == 1, torch.full_like(u, math.log(0.995 / 0.005)), u).requires_grad_()
        params.append({"params": [label_logits], "lr": 0.5})
    opt = torch.optim.Adam(params)

    def forward():
        cams = torch.einsum("ndhw,dc->nchw", feats, w) + b[None, :, None, None]
        return cams.mean((2, 3)), cams

    start = map_class(forward()[0].detach(), full)
    ema, heat, negatives = None, None, None
    corrected = torch.zeros_like(targets, dtype=torch.bool)
    for step in range(steps):
        logits, cams = forward()
        kw = {}
        if name in LARGE_LOSS:
            kw["epoch"] = step // 25
        if name == "ll_cp":  # the permanent corrections are positive labels from then on
            targets = torch.where(corrected, torch.ones_like(single), single)
            corrected |= ll_cp_corrections(logits, targets, epoch=kw["epoch"])
        if name in ("epr", "role"):
            kw["expected_positives"] = k
        if name == "role":
            kw["label_logits"] = label_logits
        if name == "splc":
            kw["epoch"] = step // 25
        warm = step < 40
        if name in ("en", "en_cl", "en_scl"):
            if not warm and step % 20 == 0:
                negatives = expected_negatives(ema, targets, k, selection="global")
            kw["negatives"] = None if warm else negatives
        if name == "en_cl":
            kw["ema_scores"] = None if warm else ema
        if name == "en_scl":
            kw["cam_logits"], kw["heatmap_target"] = (None, None) if warm else (cams, heat)
        loss = LOSSES[name](logits, targets, **kw)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            p, hp = torch.sigmoid(logits), torch.sigmoid(cams)
            ema = p if ema is None else 0.9 * ema + 0.1 * p
            heat = hp if heat is None else 0.9 * heat + 0.1 * hp
    return start, map_class(forward()[0].detach(), full), full.float().mean().item()


@pytest.mark.parametrize("name", NAMES)
def test_every_loss_learns_a_planted_rule(name):
    start, end, chance = _train(name)
    assert end > start + 0.2 and end > chance + 0.35, (name, start, end, chance)


# ---- helpers and gradients ------------------------------------------------------------------

@pytest.mark.parametrize("selection", ["image", "global"])
@pytest.mark.parametrize("k", [0.5, 1.0, 1.5, 2.9, 4.4, 12.0])
def test_expected_negatives_against_brute_force(selection, k):
    g = torch.Generator().manual_seed(int(k * 10))
    n, c = 7, 6
    scores = torch.rand(n, c, generator=g)
    targets = torch.randint(-1, 2, (n, c), generator=g)
    targets[0] = -1  # a fully unknown row
    targets[1] = torch.tensor([1, 0, 0, 0, 0, 0])  # no unknown entry
    got = expected_negatives(scores, targets, k, selection=selection)
    s, t = scores.tolist(), targets.tolist()
    want = [[t[i][j] == -1 for j in range(c)] for i in range(n)]
    if selection == "image":
        drop = math.floor(k - 1 + 0.5)
        for i in range(n):
            unk = sorted((j for j in range(c) if t[i][j] == -1), key=lambda j: -s[i][j])
            for j in unk[:max(drop, 0)]:
                want[i][j] = False
    else:
        drop = math.floor((k - 1) * n + 0.5)
        unk = sorted(((i, j) for i in range(n) for j in range(c) if t[i][j] == -1), key=lambda ij: -s[ij[0]][ij[1]])
        for i, j in unk[:max(drop, 0)]:
            want[i][j] = False
    assert got.dtype == torch.bool and got.tolist() == want


def test_role_cross_terms_do_not_backprop_into_the_detached_side():
    g = torch.Generator().manual_seed(5)
    b, c, k = 4, 3, 1.2
    x = torch.randn(b, c, generator=g, dtype=torch.float32).requires_grad_()
    th = torch.randn(b, c, generator=g).requires_grad_()
    y = torch.full((b, c), -1)
    y[torch.arange(b), torch.tensor([0, 2, 1, 0])] = 1
    gx, gth = torch.autograd.grad(role(x, y, label_logits=th, expected_positives=k), [x, th])
    p, q = torch.sigmoid(x.detach()).double(), torch.sigmoid(th.detach()).double()
    pos = (y == 1).double()

    def hand(a, other):  # d/dz of 0.5(-log a) on positives + 0.5 BCE(a, other) + 0.5 R(a), a = sigmoid(z)
        per = 0.5 * (-(1 - a) * pos) + 0.5 * (a - other)
        reg = 0.5 * 2 * (a.sum(1).mean() - k) / c ** 2 / b * a * (1 - a)
        return per / (b * c) + reg
    assert torch.allclose(gx.double(), hand(p, q), atol=1e-6)
    assert torch.allclose(gth.double(), hand(q, p), atol=1e-6)


def test_asl_focusing_weight_is_detached():
    x = torch.tensor([[1.5, 0.8, -2.0, 0.3]], requires_grad=True)
    y = torch.tensor([[1, 0, 0, -1]])
    (gx,) = torch.autograd.grad(asl(x, y), x)
    want = []
    for v, t in zip(x.detach().tolist()[0], y.tolist()[0]):
        p = sig(v)
        if t == 1:  # -(1-p)^0 log p
            want.append(-(1 - p))
        else:  # -pm^4 log(1 - p + 0.05) with pm^4 a constant
            pm = max(p - 0.05, 0.0)
            want.append(pm ** 4 * p * (1 - p) / (1 - p + 0.05))
    assert torch.allclose(gx[0].double(), torch.tensor(want, dtype=torch.float64) / 4, atol=1e-7)


def test_splc_switches_to_pseudo_positives_exactly_at_change_epoch():
    x = torch.tensor([[2.0, 0.1, 1.2, -0.5]])
    y = torch.tensor([[1, -1, -1, 0]])  # sigmoid(1.2) = 0.77 > tau: a pseudo-positive candidate
    for change in (1, 3):
        for epoch in range(5):
            got = splc(x, y, epoch=epoch, change_epoch=change).item()
            assert got == pytest.approx(ref_splc_row(x[0].tolist(), y[0].tolist(), epoch >= change), rel=1e-5)
        before, at = splc(x, y, epoch=change - 1, change_epoch=change), splc(x, y, epoch=change, change_epoch=change)
        assert abs(before.item() - at.item()) > 1e-3


def ref_splc_row(xs, ys, switched, tau=0.6, m=1.0):
    tot = 0
    for x, y in zip(xs, ys):
        if y == 1:
            x, pos = x - m, True
        else:
            pos = y == -1 and switched and sig(x) > tau
        p = sig(x)
        tot += (1 - p) ** 2 * nlog_p(x) if pos else p ** 2 * nlog_1mp(x)
    return tot / len(xs)


# ---- large-loss rejection and correction (Kim et al., CVPR 2022) --------------------------

# A positive with a large loss (-5.0), an observed negative with the largest loss (4.0), and 5
# unobserved entries: logits -1.0, 0.5 (row 0) and 0.1, -2.0, 1.0 (row 1).
LL_X = [[-5.0, -1.0, 0.5, 4.0], [0.1, 3.0, -2.0, 1.0]]
LL_Y = [[1, -1, -1, 0], [-1, 1, -1, -1]]


def test_large_loss_by_hand():
    """Epoch 2 at delta_rel 0.2: rate 0.4 of the 5 unobserved entries = 2 entries, the logits
    1.0 (row 1) and 0.5 (row 0); the positive and the observed negative keep their loss."""
    x, y = torch.tensor(LL_X), torch.tensor(LL_Y)
    kept = nlog_p(-5.0) + nlog_1mp(-1.0) + nlog_1mp(4.0) + nlog_1mp(0.1) + nlog_p(3.0) + nlog_1mp(-2.0)
    want_mask = [[False, False, True, False], [False, False, False, True]]
    assert large_loss_entries(x, y, 0.4).tolist() == want_mask
    assert ll_r(x, y, epoch=2, delta_rel=0.2).item() == pytest.approx(kept / 8, rel=1e-6)
    corrected = kept + nlog_p(0.5) + nlog_p(1.0)
    assert ll_ct(x, y, epoch=2, delta_rel=0.2).item() == pytest.approx(corrected / 8, rel=1e-6)
    assert ll_ct(x, y, epoch=2, delta_rel=0.2, reduction="sum").item() == pytest.approx(corrected, rel=1e-6)
    # LL-Cp, constant schedule: rate 0.4 from epoch 1 on, whatever the epoch
    for epoch in (1, 2, 7):
        assert ll_cp(x, y, epoch=epoch, delta_rel=0.4).item() == pytest.approx(corrected / 8, rel=1e-6)
        assert ll_cp_corrections(x, y, epoch=epoch, delta_rel=0.4).tolist() == want_mask
    # delta_max caps the rate: 0.2 of 5 = the single largest (1.0); 0.5 keeps its loss
    capped = ll_r(x, y, epoch=2, delta_rel=0.2, delta_max=0.2).item()
    assert capped == pytest.approx((kept + nlog_1mp(0.5)) / 8, rel=1e-6)
    # the official count, ceil(0.4 x B x C) = 4 of the unobserved entries: 1.0, 0.5, 0.1, -1.0
    batch = nlog_p(-5.0) + nlog_1mp(4.0) + nlog_p(3.0) + nlog_1mp(-2.0)
    assert large_loss_entries(x, y, 0.4, rate_of="batch").tolist() == [[False, True, True, False],
                                                                        [True, False, False, True]]
    assert ll_r(x, y, epoch=2, delta_rel=0.2, rate_of="batch").item() == pytest.approx(batch / 8, rel=1e-6)
    # ceil: rate 0.5 of 5 unobserved = 2.5 -> 3 entries
    assert int(large_loss_entries(x, y, 0.5).sum()) == 3


@pytest.mark.parametrize("unknown", ["negative", "ignore"])
@pytest.mark.parametrize("name", LARGE_LOSS)
def test_large_loss_matches_the_rule_on_the_hand_batch_at_every_rate(name, unknown):
    for epoch, delta_rel, rate_of in itertools.product((0, 1, 3), (0.05, 0.2, 0.5), ("unobserved", "batch")):
        got = _value(name, unknown=unknown, epoch=epoch, delta_rel=delta_rel, rate_of=rate_of).item()
        want = REFS[name](unknown=unknown, epoch=epoch, delta_rel=delta_rel, rate_of=rate_of)
        assert got == pytest.approx(want, rel=2e-5, abs=1e-6), (epoch, delta_rel, rate_of)


@pytest.mark.parametrize("name", LARGE_LOSS)
def test_large_loss_first_epoch_is_an(name):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, generator=g) * 3
    y = torch.randint(-1, 2, (6, 5), generator=g)
    for delta_rel in (0.002, 0.5, 1.0):
        assert torch.equal(LOSSES[name](x, y, epoch=0, delta_rel=delta_rel), LOSSES["an"](x, y))
    assert not torch.equal(LOSSES[name](x, y, epoch=1, delta_rel=0.5), LOSSES["an"](x, y))


@pytest.mark.parametrize("name", LARGE_LOSS)
def test_large_loss_never_touches_observed_labels(name):
    """At rate 1 every unobserved entry is rejected or corrected; the gradients at observed
    positives and negatives are AN's all the same."""
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(8, 6, generator=g) * 4).requires_grad_()
    y = torch.randint(-1, 2, (8, 6), generator=g)
    observed = y >= 0
    (g_ll,) = torch.autograd.grad(LOSSES[name](x, y, epoch=5, delta_rel=1.0), x)
    (g_an,) = torch.autograd.grad(LOSSES["an"](x, y), x)
    torch.testing.assert_close(g_ll[observed], g_an[observed])
    large = large_loss_entries(x, y, 1.0)
    assert torch.equal(large, y < 0)
    p = torch.sigmoid(x.detach())
    want = torch.zeros_like(p) if name == "ll_r" else (p - 1) / y.numel()  # d(-log p)/dx = p - 1
    torch.testing.assert_close(g_ll[y < 0], want[y < 0])


def test_rejection_rate_schedule():
    assert [rejection_rate(t, 0.002) for t in range(4)] == pytest.approx([0, 0.002, 0.004, 0.006])
    assert [rejection_rate(t, 0.3, 0.5) for t in range(4)] == pytest.approx([0, 0.3, 0.5, 0.5])
    assert [rejection_rate(t, 0.001, schedule="constant") for t in range(3)] == pytest.approx([0, 0.001, 0.001])
    with pytest.raises(TaglessError):
        rejection_rate(1, 0.1, schedule="step")
    with pytest.raises(TaglessError):
        ll_r(torch.zeros(1, 2), torch.tensor([[1, -1]]), delta_rel=1.5)


def test_ll_cp_config_gives_the_entries_its_loss_corrects():
    cfg = from_dict(_Run, {"loss": {"name": "ll_cp", "delta_rel": 0.2, "rate_of": "batch"}}).loss
    x, y = torch.tensor(LL_X), torch.tensor(LL_Y)
    fix = cfg.corrections(x, y, epoch=1)
    assert torch.equal(fix, large_loss_entries(x, y, 0.2, rate_of="batch"))  # ceil(1.6) = 2 entries
    assert int(fix.sum()) == 2 and not (fix & (y >= 0)).any()
    assert cfg.needs == ("epoch", "corrections") and not cfg.corrections(x, y, epoch=0).any()
    # the loss of the step is LL-Ct's on exactly those entries
    per = torch.where(y == 1, -F.logsigmoid(x), -F.logsigmoid(-x))
    per = torch.where(fix, -F.logsigmoid(x), per)
    assert LOSSES["ll_cp"](x, y, epoch=1, **cfg.function_kwargs()).item() == pytest.approx(per.mean().item())


# ---- config -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Run:
    loss: LossConfig = dataclasses.field(default_factory=LOSS_CONFIGS["bce"])


def test_loss_config_loads_the_named_dataclass():
    run = from_dict(_Run, {"loss": {"name": "en_scl", "scl_weight": 0.25, "heatmap_dtype": "float16"}})
    assert type(run.loss) is EnSclConfig
    assert (run.loss.scl_weight, run.loss.heatmap_dtype, run.loss.heatmap_scale) == (0.25, "float16", 2)
    assert run.loss.function_kwargs() == {"scl_weight": 0.25, "distance": "l2", "unknown": "negative"}
    assert type(from_dict(_Run, {"loss": {}}).loss) is LOSS_CONFIGS["bce"]


@pytest.mark.parametrize("bad", [
    {"name": "bce", "gamma": 2.0},  # not a field of bce
    {"name": "nope"},
    {"name": "asl", "clip": 1.5},
    {"name": "focal", "unknown": "maybe"},
    {"name": "hill", "reduction": "max"},
    {"name": "two_way", "tp": 0.0},
    {"name": "splc", "tau": 1.2},
    {"name": "en", "selection": "row"},
    {"name": "en_cl", "distance": "cosine"},
    {"name": "en_scl", "heatmap_dtype": "int4"},
    {"name": "en_scl", "ema_momentum": 1.0},
    {"name": "role", "label_lr_scale": -1.0},
    {"name": "epr", "expected_positives": -2.0},
    {"name": "en", "ema_start": "later"},
    {"name": "ll_r", "delta_rel": 2.0},
    {"name": "ll_ct", "delta_max": -0.1},
    {"name": "ll_ct", "rate_of": "all"},
    {"name": "ll_cp", "schedule": "step"},
    {"name": "ll_r", "schedule": "constant"},  # LL-R's schedule is the paper's
])
def test_loss_config_rejects_bad_values(bad):
    with pytest.raises(TaglessError) as err:
        from_dict(_Run, {"loss": bad})
    assert "\n" not in str(err.value)


def test_every_loss_has_a_config_whose_kwargs_its_function_accepts():
    assert list(LOSSES) == NAMES and set(LOSS_CONFIGS) == set(NAMES)
    for name, fn in LOSSES.items():
        cfg = LOSS_CONFIGS[name]()
        assert issubclass(type(cfg), LossConfig) and cfg.name == name
        cfg.validate()
        params = inspect.signature(fn).parameters
        kwargs = cfg.function_kwargs()
        assert set(kwargs) <= set(params), name
        assert not set(kwargs) & {"expected_positives", "label_logits", "negatives", "ema_scores", "cam_logits",
                                  "heatmap_target", "epoch"}, name  # state comes from the method
        for key, value in kwargs.items():  # the config's defaults are the function's (paper) defaults
            if params[key].default is not inspect.Parameter.empty:
                assert value == params[key].default, (name, key)
        assert set(cfg.needs) <= set(NEEDS), name
        state = {"expected_positives": "expected_positives", "label_logits": "label_estimates", "epoch": "epoch",
                 "ema_scores": "ema", "cam_logits": "heatmaps", "negatives": "ema"}
        for param, need in state.items():
            assert (param in params) <= (need in cfg.needs), (name, param)
