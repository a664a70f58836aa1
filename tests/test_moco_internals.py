"""MoCo internals against formulas: the EMA update of the key encoder, which view is the
query and which the key, the symmetric loss, the queue's wrap-around and the accuracy monitor.

Every reference is computed here, independently of the method, from copies of its encoders
taken before the step (in the same train mode and on the same full batch, since BatchNorm in
train mode makes each output depend on the whole batch). ``info_nce`` itself is checked
against a loop formula in test_losses_contrastive.py.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from run_helpers import fixed_views, make_images
from tagless.losses import contrastive_accuracy, info_nce
from tagless.methods import Batch, MoCo, MocoConfig
from tagless.methods.common import KeyQueue
from tagless.models import build_backbone

N = 8
M = 0.9
T = 0.2


def make_moco(symmetric: bool = False, queue_keys: str = "one") -> MoCo:
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", stem="cifar", width=0.125)
    cfg = MocoConfig(queue_size=24, proj_dim=16, proj_hidden_dim=32, momentum=M, temperature=T,
                     symmetric=symmetric, bn_mode="local", queue_keys=queue_keys)
    method = MoCo(backbone, fixed_views, cfg, seed=0)
    # At construction f_k is an exact copy of f_q, so "which encoder sees which view" would be
    # invisible; move the key encoder away from the query encoder first.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.encoder_k.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return method


def batch(images: torch.Tensor) -> Batch:
    n = images.shape[0]
    return Batch(images, torch.arange(n), torch.full((n,), -1), 0, 0, torch.Generator().manual_seed(5))


def references(method: MoCo, images: torch.Tensor) -> dict:
    """q = f_q(x), k = normalize(f_k(x)) for both views, from copies taken before the step."""
    enc_q, enc_k = copy.deepcopy(method.encoder_q), copy.deepcopy(method.encoder_k.net)
    assert method.training and enc_q.training and enc_k.training  # the method runs in train mode
    x1, x2 = fixed_views(images, None).crops
    with torch.no_grad():
        return {"q1": enc_q(x1), "q2": enc_q(x2), "k1": F.normalize(enc_k(x1), dim=1),
                "k2": F.normalize(enc_k(x2), dim=1), "queue": method.queue.items.clone()}


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    return torch.allclose(a, b, atol=atol, rtol=1e-5)


# --- the momentum update ------------------------------------------------------------------


def test_momentum_update_is_m_times_key_plus_one_minus_m_times_query():
    method = make_moco()
    enc_q, enc_k = method.encoder_q, method.encoder_k
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # known, different values on both sides
        for pk, pq in zip(enc_k.parameters(), enc_q.parameters()):
            pk.copy_(torch.randn(pk.shape, generator=g))
            pq.copy_(torch.randn(pq.shape, generator=g) + 3.0)
        for name, b in enc_q.named_buffers():
            if b.is_floating_point():
                b.fill_(5.0 if name.endswith("running_mean") else 7.0)
    old_k = [p.clone() for p in enc_k.parameters()]
    old_q = [p.clone() for p in enc_q.parameters()]
    q_buffers = {n: b.clone() for n, b in enc_q.named_buffers()}
    k_buffers = {n: b.clone() for n, b in enc_k.net.named_buffers()}
    assert len(old_k) == len(old_q) > 10 and len(k_buffers) > 10

    enc_k.update(enc_q)

    for pk, k0, q0, pq in zip(enc_k.parameters(), old_k, old_q, enc_q.parameters()):
        assert close(pk, M * k0 + (1 - M) * q0)
        assert not close(pk, (1 - M) * k0 + M * q0)  # m and 1 - m swapped
        assert torch.equal(pq, q0)  # the query encoder is left alone
        assert not pk.requires_grad
    # buffers (BN running statistics) are neither averaged nor copied from the query encoder
    for name, b in enc_k.net.named_buffers():
        assert torch.equal(b, k_buffers[name]), name
        if b.is_floating_point():
            assert not torch.equal(b, q_buffers[name]), name

    # after_step applies the same update with the configured momentum
    old_k = [p.clone() for p in enc_k.parameters()]
    queue = method.queue.items.clone()
    method.after_step()
    for pk, k0, q0 in zip(enc_k.parameters(), old_k, old_q):
        assert close(pk, M * k0 + (1 - M) * q0)
    assert torch.equal(method.queue.items, queue) and int(method.queue.ptr) == 0  # no keys: nothing enqueued


# --- query and key -----------------------------------------------------------------------


def test_view1_is_the_query_and_view2_the_key():
    method = make_moco(symmetric=False)
    images = make_images()
    ref = references(method, images)
    loss, logs = method.step(batch(images))

    expected = info_nce(ref["q1"], ref["k2"], ref["queue"], T)
    assert close(loss, expected)
    # the swapped assignment (x2 query, x1 key) and the key from the query encoder both differ
    assert not close(info_nce(ref["q2"], ref["k1"], ref["queue"], T), expected, atol=1e-4)
    assert not close(info_nce(ref["q1"], F.normalize(ref["q2"], dim=1), ref["queue"], T), expected, atol=1e-4)
    assert close(logs["contrastive_acc"], contrastive_accuracy(ref["q1"], ref["k2"], ref["queue"]))

    # after_step enqueues k2 = normalize(f_k(x2)), computed before the momentum update
    method.after_step()
    items = method.queue.items
    assert close(items[:N], ref["k2"])
    assert not close(items[:N], ref["k1"], atol=1e-4)
    assert torch.equal(items[N:], ref["queue"][N:])
    assert int(method.queue.ptr) == N and int(method.queue.filled) == N


def test_symmetric_loss_uses_the_same_queue_for_both_terms():
    method = make_moco(symmetric=True)
    images = make_images()
    ref = references(method, images)
    loss, _ = method.step(batch(images))

    queue = ref["queue"]
    expected = 0.5 * (info_nce(ref["q1"], ref["k2"], queue, T) + info_nce(ref["q2"], ref["k1"], queue, T))
    assert close(loss, expected)
    # sensitivity: the second term against the queue with k2 already enqueued would differ
    updated = torch.cat([ref["k2"], queue[N:]])
    wrong = 0.5 * (info_nce(ref["q1"], ref["k2"], queue, T) + info_nce(ref["q2"], ref["k1"], updated, T))
    assert not close(wrong, expected, atol=1e-4)
    assert not close(info_nce(ref["q1"], ref["k2"], queue, T), expected, atol=1e-4)  # one term only

    method.after_step()  # one key per image, view 2's, as the asymmetric MoCo-v2: no image twice
    items = method.queue.items
    assert close(items[:N], ref["k2"])
    assert not close(items[:N], ref["k1"], atol=1e-4)
    assert torch.equal(items[N:], queue[N:])
    assert int(method.queue.ptr) == N and int(method.queue.filled) == N


def test_queue_keys_both_enqueues_view_1_then_view_2_keys():
    """MoCo's own CIFAR demo: with the symmetric loss both keys enter the queue (k1 first)."""
    method = make_moco(symmetric=True, queue_keys="both")
    images = make_images()
    ref = references(method, images)
    method.step(batch(images))
    method.after_step()
    items = method.queue.items
    assert close(items[:N], ref["k1"]) and close(items[N:2 * N], ref["k2"])
    assert torch.equal(items[2 * N:], ref["queue"][2 * N:])
    assert int(method.queue.ptr) == 2 * N and int(method.queue.filled) == 2 * N


def test_mls_refuses_two_keys_per_image():
    import pytest

    from tagless.errors import TaglessError
    from tagless.methods.mls import MlsConfig

    with pytest.raises(TaglessError, match="one entry per image"):
        MlsConfig(queue_keys="both").validate()


# --- the queue ---------------------------------------------------------------------------


def test_queue_wraps_around_when_the_batch_does_not_divide_k():
    queue = KeyQueue(10, 3, normalize=False, seed=0)
    expected = queue.items.clone()
    batches = [torch.arange(12.0).view(4, 3) + 100 * (i + 1) for i in range(3)]

    queue.enqueue(batches[0])
    expected[0:4] = batches[0]
    assert torch.equal(queue.items, expected) and int(queue.ptr) == 4 and int(queue.filled) == 4

    queue.enqueue(batches[1])
    expected[4:8] = batches[1]
    assert torch.equal(queue.items, expected) and int(queue.ptr) == 8 and int(queue.filled) == 8

    queue.enqueue(batches[2])  # rows 8, 9, then wraps: its last two rows land at 0 and 1
    expected[8] = batches[2][0]
    expected[9] = batches[2][1]
    expected[0] = batches[2][2]
    expected[1] = batches[2][3]
    assert torch.equal(queue.items, expected) and int(queue.ptr) == 2 and int(queue.filled) == 10
    assert torch.equal(queue.items[2:8], torch.cat([batches[0][2:], batches[1]]))  # the rest untouched

    # a batch larger than K keeps its last K rows, written from the pointer on
    big = torch.arange(39.0).view(13, 3) - 500
    queue.enqueue(big)
    expected = torch.cat([big[11:13], big[3:11]])  # positions 2..9 get rows 3..10, 0 and 1 get 11, 12
    assert torch.equal(queue.items, expected) and int(queue.ptr) == 2 and int(queue.filled) == 10


# --- the accuracy monitor ----------------------------------------------------------------


def test_contrastive_accuracy_hand_computed():
    negatives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosines with the negatives (n1, n2) and with the positive, worked out by hand:
    query = torch.tensor([
        [0.6, 0.8],  # pos 1.00 > max(0.6, 0.8)            -> right
        [0.8, 0.6],  # pos 0.96 > max(0.8, 0.6)            -> right
        [1.0, 0.0],  # pos 0.00 < 1.0                      -> wrong
        [2.0, 0.0],  # pos 1.00 == n1's 1.00: a tie        -> wrong (strict >)
        [1.0, 0.0],  # pos 0.60 beats n2 (0) but not n1 (1) -> wrong
    ])
    key = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])  # scale is irrelevant
    per_query = [float(contrastive_accuracy(query[i : i + 1], key[i : i + 1], negatives)) for i in range(5)]
    assert per_query == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert abs(float(contrastive_accuracy(query, key, negatives)) - 2 / 5) < 1e-6


# --- split BatchNorm: BN groups on one process ---------------------------------------------


def test_split_batchnorm_equals_one_batchnorm_per_contiguous_group():
    """Each group of rows gets its own batch statistics (a BN per emulated GPU) and the running
    statistics become the mean of the groups' updates; eval mode is plain BN."""
    import torch.nn as nn

    from tagless.methods.common import convert_split_batchnorm, set_bn_groups

    torch.manual_seed(0)
    for bn, x in ((nn.BatchNorm2d(3), torch.randn(8, 3, 4, 4) * 3 + 1), (nn.BatchNorm1d(5), torch.randn(6, 5))):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
        ref = [copy.deepcopy(bn) for _ in range(2)]
        net = convert_split_batchnorm(nn.Sequential(copy.deepcopy(bn)))
        set_bn_groups(net, 2)
        y = net(x)
        halves = x.chunk(2)
        expected = torch.cat([ref[i](halves[i]) for i in range(2)])
        assert torch.allclose(y, expected, atol=1e-5)
        assert not torch.allclose(y, copy.deepcopy(bn)(x), atol=1e-3)  # not the full-batch statistics
        split = net[0]
        assert torch.allclose(split.running_mean, (ref[0].running_mean + ref[1].running_mean) / 2, atol=1e-6)
        assert torch.allclose(split.running_var, (ref[0].running_var + ref[1].running_var) / 2, atol=1e-6)
        assert split.state_dict().keys() == bn.state_dict().keys()
        y.sum().backward()  # gradients reach the shared affine parameters
        assert split.weight.grad is not None and split.weight.grad.shape == bn.weight.shape
        net.eval()
        assert torch.allclose(net(x), nn.functional.batch_norm(x, split.running_mean, split.running_var, split.weight,
                                                               split.bias, False, 0.0, split.eps), atol=1e-5)


def test_grouped_forward_puts_every_view_of_an_image_in_its_group():
    """[v1; v2] through split BN with 2 groups equals rank r's pass over [v1_r; v2_r] (the
    images r*n..(r+1)*n of both views), outputs back in [v1; v2] order."""
    import torch.nn as nn

    from tagless.methods.common import convert_split_batchnorm, grouped, set_bn_groups

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    net = convert_split_batchnorm(copy.deepcopy(plain))
    set_bn_groups(net, 2)
    v1, v2 = torch.randn(6, 3, 5, 5), torch.randn(6, 3, 5, 5) + 2
    y = grouped(net, torch.cat([v1, v2]), chunks=2, groups=2)
    per_rank = [plain(torch.cat([v1[r * 3 : r * 3 + 3], v2[r * 3 : r * 3 + 3]])) for r in range(2)]
    expected = torch.cat([per_rank[0][:3], per_rank[1][:3], per_rank[0][3:], per_rank[1][3:]])
    assert torch.allclose(y, expected, atol=1e-5)
    assert not torch.allclose(y, net(torch.cat([v1, v2])), atol=1e-3)  # contiguous groups would mix views
