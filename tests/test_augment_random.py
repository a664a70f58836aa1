"""Sampled parameters: ranges, frequencies, per-sample independence, generator determinism."""

import math

import pytest
import torch

import tagless.augment as A
from tagless.errors import TaglessError

N = 4000


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("hw,scale,ratio", [((100, 80), (0.2, 1.0), (3 / 4, 4 / 3)),
                                            ((64, 64), (0.05, 0.4), (3 / 4, 4 / 3)),
                                            ((90, 120), (0.08, 0.6), (0.5, 2.0))])
def test_crop_areas_and_ratios_in_range(hw, scale, ratio):
    h, w = hw
    boxes = A.sample_resized_crop_params(N, h, w, scale, ratio, generator=gen())
    x0, y0, x1, y1 = boxes.unbind(1)
    bw, bh = x1 - x0, y1 - y0
    assert torch.equal(boxes, boxes.round())  # integer pixel boxes, like torchvision
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert (bw >= 1).all() and (bh >= 1).all()
    # w and h are rounded from the sampled real sides: allow that rounding, nothing more.
    lo_area = (torch.sqrt(bw * bh) - 0.5) ** 2 / (h * w)
    hi_area = (torch.sqrt(bw * bh) + 0.5) ** 2 / (h * w)
    area = bw * bh / (h * w)
    assert (hi_area >= scale[0] * 0.98).all() and (lo_area <= scale[1] * 1.02).all()
    aspect = bw / bh
    assert (aspect >= ratio[0] * (1 - 1 / bh.clamp(min=4))).all()
    assert (aspect <= ratio[1] * (1 + 1 / bh.clamp(min=4))).all()
    # The draws spread over the range (not a fixed box).
    assert area.min() < scale[0] + 0.1 * (scale[1] - scale[0])
    assert area.max() > scale[1] - 0.2 * (scale[1] - scale[0])
    assert len(set(map(tuple, boxes.tolist()))) > N // 4


def test_crop_offsets_cover_the_image():
    boxes = A.sample_resized_crop_params(N, 32, 32, (0.05, 0.1), generator=gen())
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    assert cx.min() < 6 and cx.max() > 26
    assert abs(cx.mean().item() - 16) < 1.0


def test_crop_fallback_is_centre_crop():
    # Aspect 2 cannot fit a full-area crop of a square image: every attempt fails.
    boxes = A.sample_resized_crop_params(50, 32, 32, (1.0, 1.0), (2.0, 2.0), generator=gen())
    assert torch.equal(boxes, torch.tensor([0.0, 8.0, 32.0, 24.0]).expand(50, 4))


def test_crop_first_valid_attempt_is_used():
    """Against torchvision's sequential loop, replayed on the same draws (the sampler takes
    B x 10 areas, then B x 10 log-ratios, then B x 2 offsets from the generator)."""
    b, h, w, scale, ratio = 300, 32, 32, (0.9, 1.0), (0.5, 2.0)  # many candidates do not fit
    boxes = A.sample_resized_crop_params(b, h, w, scale, ratio, generator=gen(4))
    g = gen(4)
    areas = torch.rand(b, 10, generator=g) * (scale[1] - scale[0]) + scale[0]
    logr = torch.rand(b, 10, generator=g) * (math.log(ratio[1]) - math.log(ratio[0])) + math.log(ratio[0])
    fallbacks = 0
    for i in range(b):
        for a, lr in zip(areas[i].tolist(), logr[i].tolist()):
            cw = round(math.sqrt(a * h * w * math.exp(lr)))
            ch = round(math.sqrt(a * h * w / math.exp(lr)))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw, ch = w, h
            fallbacks += 1
        assert (boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]) == (cw, ch), i
    assert 0 < fallbacks < b // 2


def test_bad_crop_ranges_raise():
    with pytest.raises(TaglessError):
        A.sample_resized_crop_params(2, 8, 8, (0.5, 0.2), generator=gen())


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_flip_frequency(p):
    flips = A.sample_horizontal_flip_params(N, p, generator=gen())
    assert flips.dtype == torch.bool
    assert abs(flips.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / N)


def test_other_probabilities():
    g = gen()
    tol = 4 * math.sqrt(0.25 / N)
    assert abs(A.sample_color_jitter_params(N, p=0.8, generator=g).apply.float().mean() - 0.8) < tol
    assert abs(A.sample_grayscale_params(N, 0.2, generator=g).float().mean() - 0.2) < tol
    assert abs((A.sample_gaussian_blur_params(N, (0.1, 2.0), 0.5, generator=g) > 0).float().mean() - 0.5) < tol
    assert abs(A.sample_solarize_params(N, 0.2, generator=g).float().mean() - 0.2) < tol
    assert not A.sample_horizontal_flip_params(N, 0.0, generator=g).any()
    assert A.sample_horizontal_flip_params(N, 1.0, generator=g).all()


def test_jitter_params_ranges():
    p = A.sample_color_jitter_params(N, 0.4, 0.3, 0.2, 0.1, p=0.8, generator=gen())
    f = p.factors[p.apply]
    for i, s in enumerate((0.4, 0.3, 0.2)):
        assert f[:, i].min() >= 1 - s and f[:, i].max() <= 1 + s
        assert f[:, i].min() < 1 - 0.9 * s and f[:, i].max() > 1 + 0.9 * s
    assert f[:, 3].abs().max() <= 0.1 and f[:, 3].min() < -0.09
    assert torch.equal(p.factors[~p.apply], torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(int((~p.apply).sum()), 4))
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(N, 4))  # permutations
    assert len({tuple(o) for o in p.order.tolist()}) == 24  # all orders occur


def test_blur_sigma_range():
    s = A.sample_gaussian_blur_params(N, (0.1, 2.0), 1.0, generator=gen())
    assert s.min() >= 0.1 and s.max() <= 2.0 and s.std() > 0.4


def test_per_sample_independence_of_convenience_ops():
    x = torch.rand(64, 3, 16, 16, generator=gen(5))
    out, boxes = A.random_resized_crop(x, 8, (0.1, 1.0), generator=gen(), return_params=True)
    assert out.shape == (64, 3, 8, 8) and len(set(map(tuple, boxes.tolist()))) > 32
    _, flips = A.horizontal_flip(x, generator=gen(), return_params=True)
    assert 0 < flips.sum() < 64
    _, params = A.color_jitter(x, generator=gen(), return_params=True)
    assert params.factors[params.apply, 0].unique().numel() == int(params.apply.sum())
    _, sigma = A.gaussian_blur(x, generator=gen(), return_params=True)
    assert sigma[sigma > 0].unique().numel() == int((sigma > 0).sum())


@pytest.mark.parametrize("op", ["random_resized_crop", "horizontal_flip", "color_jitter",
                                "grayscale", "gaussian_blur", "solarize"])
def test_same_seed_same_output(op):
    x = torch.rand(16, 3, 12, 12, generator=gen(9))
    kwargs = {"size": 10} if op == "random_resized_crop" else {}
    fn = getattr(A, op)
    a, b = fn(x, generator=gen(1), **kwargs), fn(x, generator=gen(1), **kwargs)
    c = fn(x, generator=gen(2), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32 and torch.isfinite(a).all()


def test_sampler_draws_on_the_generators_device():
    g = gen()
    assert A.sample_resized_crop_params(3, 8, 8, generator=g).device == g.device
    with pytest.raises(TypeError):
        A.sample_horizontal_flip_params(3, 0.5, generator=None)


def test_probability_out_of_range_raises():
    with pytest.raises(TaglessError):
        A.sample_grayscale_params(3, 1.5, generator=gen())
