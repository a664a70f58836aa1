"""Contrastive losses against their formulas evaluated by hand (numpy, explicit loops)."""

import math

import numpy as np
import torch

from tagless.losses import info_nce, negative_cosine


def _unit(v):
    return v / np.linalg.norm(v)


def test_info_nce_matches_formula():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(16, 8, generator=g), dim=1)
    t = 0.2
    expected = 0.0
    for i in range(4):
        qi, ki = _unit(q[i].numpy().astype(np.float64)), _unit(k[i].numpy().astype(np.float64))
        pos = math.exp(qi @ ki / t)
        neg = sum(math.exp(qi @ n / t) for n in queue.numpy().astype(np.float64))
        expected += -math.log(pos / (pos + neg))
    assert abs(info_nce(q, k, queue, temperature=t).item() - expected / 4) < 1e-5


def test_info_nce_is_stable_at_small_temperature():
    q = torch.randn(3, 4)
    loss = info_nce(q, q, torch.nn.functional.normalize(torch.randn(5, 4), dim=1), temperature=1e-4)
    assert torch.isfinite(loss)


def test_negative_cosine_formula_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[1.0, 1.0], [0.0, -1.0]], requires_grad=True)
    loss = negative_cosine(p, z)
    assert abs(loss.item() - (-(1 / math.sqrt(2)) + 1) / 2) < 1e-6
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_info_nce_learns():
    """A few SGD steps on free embeddings lower the loss."""
    torch.manual_seed(0)
    q = torch.randn(8, 16, requires_grad=True)
    k = torch.randn(8, 16)
    queue = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
    opt = torch.optim.SGD([q], lr=1.0)
    first = info_nce(q, k, queue).item()
    for _ in range(20):
        opt.zero_grad()
        loss = info_nce(q, k, queue)
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5
