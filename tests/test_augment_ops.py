"""Augmentation ops with fixed parameters against kornia and hand-computed values.

kornia is optional: only the tests marked ``needs_kornia`` compare against it and are skipped
without it; the hand-formula tests run either way."""

import math

import pytest
import torch
import torch.nn.functional as F

import tagless.augment as A

try:
    import kornia
except ImportError:  # optional: only the kornia comparisons need it
    kornia = None

needs_kornia = pytest.mark.skipif(kornia is None, reason="kornia is not installed")

# ITU-R 601 luma, the weights torchvision and kornia use.
LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def rand_images(b=6, c=3, h=20, w=24, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


# ---- flip -----------------------------------------------------------------------------------

def test_flip_of_known_tensor():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    out = A.apply_horizontal_flip(x, torch.tensor([True, False]))
    assert torch.equal(out[0, 0], torch.tensor([[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]))
    assert torch.equal(out[1], x[1])


# ---- resized crop ---------------------------------------------------------------------------

def test_crop_of_constant_image_is_constant():
    x = torch.full((3, 3, 17, 23), 0.3)
    boxes = torch.tensor([[0.0, 0.0, 23.0, 17.0], [2.0, 3.0, 9.0, 8.0], [20.0, 10.0, 23.0, 17.0]])
    out = A.apply_resized_crop(x, boxes, (13, 11))
    assert out.shape == (3, 3, 13, 11)
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)


def test_crop_of_ramp_matches_hand_formula():
    w_in, h_in = 32, 16
    ramp = torch.arange(w_in, dtype=torch.float32).expand(1, 1, h_in, w_in).contiguous()
    x0, x1, out_w = 4, 12, 16  # an 8-px-wide box enlarged 2x
    out = A.apply_resized_crop(ramp, torch.tensor([[x0, 2.0, x1, 10.0]]), (8, out_w))
    u = torch.arange(out_w, dtype=torch.float32)
    expected = (x0 + (u + 0.5) * (x1 - x0) / out_w - 0.5).clamp(x0, x1 - 1)  # pixel-centre coords
    assert torch.allclose(out[0, 0], expected.expand(8, out_w), atol=1e-5)


def test_crop_equals_interpolate_of_integer_crop():
    x = rand_images(4, 3, 20, 24)
    boxes = torch.tensor([[0, 0, 24, 20], [3, 2, 10, 9], [5, 1, 24, 20], [10, 4, 16, 16]], dtype=torch.float32)
    for size in [(16, 16), (7, 9), (32, 30)]:
        out = A.apply_resized_crop(x, boxes, size)
        for i, (a, b, c, d) in enumerate(boxes.long().tolist()):
            ref = F.interpolate(x[i:i + 1, :, b:d, a:c], size=size, mode="bilinear", align_corners=False)
            assert torch.allclose(out[i:i + 1], ref, atol=1e-5), (size, i)


@needs_kornia
def test_crop_matches_kornia_crop_and_resize():
    # kornia maps the box's corner points to the output's corner pixel centres
    # (align_corners=True); the equivalent points of our box are a = x0 - 0.5 + s / 2 and
    # a + (out - 1) s with s = box / out. Shrinking crops keep every sample inside the box.
    x = rand_images(3, 3, 40, 36)
    boxes = torch.tensor([[2, 3, 34, 35], [0, 0, 36, 40], [10, 8, 30, 28]], dtype=torch.float32)
    out_h, out_w = 16, 12
    sx = (boxes[:, 2] - boxes[:, 0]) / out_w
    sy = (boxes[:, 3] - boxes[:, 1]) / out_h
    ax, ay = boxes[:, 0] - 0.5 + sx / 2, boxes[:, 1] - 0.5 + sy / 2
    bx, by = ax + (out_w - 1) * sx, ay + (out_h - 1) * sy
    pts = torch.stack([torch.stack([ax, ay], 1), torch.stack([bx, ay], 1),
                       torch.stack([bx, by], 1), torch.stack([ax, by], 1)], dim=1)
    ref = kornia.geometry.transform.crop_and_resize(x, pts, (out_h, out_w))
    out = A.apply_resized_crop(x, boxes, (out_h, out_w))
    assert torch.allclose(out, ref, atol=1e-4)


def test_multi_view_crop_layout_and_folded_flip():
    x = rand_images(3, 3, 20, 24)
    g = torch.Generator().manual_seed(1)
    boxes = A.sample_resized_crop_params(2 * 3, 20, 24, (0.1, 1.0), generator=g)  # 2 views x 3
    flip = torch.tensor([True, False, True, False, False, True])
    out = A.apply_resized_crop(x, boxes, 10, flip=flip)
    assert out.shape == (6, 3, 10, 10)
    for v in range(2):
        sl = slice(3 * v, 3 * v + 3)
        ref = A.apply_horizontal_flip(A.apply_resized_crop(x, boxes[sl], 10), flip[sl])
        assert torch.allclose(out[sl], ref, atol=1e-6)


def test_center_crop_boxes():
    boxes = A.center_crop_boxes(2, 40, 50, 32, fraction=0.875)
    assert boxes.shape == (2, 4)
    assert boxes[0].tolist() == [8.0, 2.0, 43.0, 37.0]  # 35 x 35 in 50 x 40; round(7.5) = 8 as torchvision


# ---- colour ---------------------------------------------------------------------------------

def test_brightness_known_pixel():
    x = torch.tensor([0.5, 0.2, 0.9]).view(1, 3, 1, 1)
    out = A.adjust_brightness(x, 1.5)
    assert torch.allclose(out.flatten(), torch.tensor([0.75, 0.3, 1.0]))  # multiplied, clamped
    y = rand_images()
    f = torch.linspace(0.6, 1.4, 6)
    assert torch.allclose(A.adjust_brightness(y, f), (y * f.view(-1, 1, 1, 1)).clamp(0, 1), atol=1e-6)


@needs_kornia
def test_brightness_matches_kornia():
    y = rand_images()
    f = torch.linspace(0.6, 1.4, 6)
    ref = kornia.enhance.adjust_brightness_accumulative(y, f)  # kornia's multiplicative form
    assert torch.allclose(A.adjust_brightness(y, f), ref, atol=1e-6)


def test_contrast_hand_formula():
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # gray mean 0.299
    out = A.adjust_contrast(x, 0.5)
    assert torch.allclose(out.flatten(), torch.tensor([0.6495, 0.1495, 0.1495]), atol=1e-6)
    y = rand_images()
    f = torch.linspace(0.6, 1.4, 6).view(-1, 1, 1, 1)
    mean = (y * LUMA).sum(1, keepdim=True).mean(dim=(-2, -1), keepdim=True)  # per-sample gray mean
    assert torch.allclose(A.adjust_contrast(y, f.flatten()), (f * y + (1 - f) * mean).clamp(0, 1), atol=1e-6)


@needs_kornia
def test_contrast_matches_kornia():
    y = rand_images()
    f = torch.linspace(0.6, 1.4, 6)
    ref = kornia.enhance.adjust_contrast_with_mean_subtraction(y, f)
    assert torch.allclose(A.adjust_contrast(y, f), ref, atol=1e-6)


def test_saturation_matches_gray_blend():
    y = rand_images()
    f = torch.linspace(0.0, 1.4, 6)
    out = A.adjust_saturation(y, f)
    gray = (y * LUMA).sum(1, keepdim=True)
    fv = f.view(-1, 1, 1, 1)
    assert torch.allclose(out, (fv * y + (1 - fv) * gray).clamp(0, 1), atol=1e-6)
    assert torch.allclose(out[0], out[0, :1].expand(3, -1, -1))  # factor 0 -> gray


@needs_kornia
def test_saturation_matches_kornia():
    y = rand_images()
    f = torch.linspace(0.0, 1.4, 6)
    ref = kornia.enhance.adjust_saturation_with_gray_subtraction(y, f)
    assert torch.allclose(A.adjust_saturation(y, f), ref, atol=1e-6)


def test_hue_known_pixels():
    px = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.4, 0.4, 0.4]]).T.reshape(1, 3, 1, 3)
    # a shift in turns: red + 1/3 = green, green + 1/3 = blue, -1/3 undoes it; gray has no hue
    out = A.adjust_hue(px, 1 / 3)
    assert torch.allclose(out[0, :, 0].T, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.4, 0.4, 0.4]]),
                          atol=1e-6)
    assert torch.allclose(A.adjust_hue(out, -1 / 3), px, atol=1e-6)
    y = rand_images(8)
    assert torch.allclose(A.adjust_hue(y, 0.0), y, atol=1e-6)
    assert torch.allclose(A.adjust_hue(y, torch.full((8,), 0.5)), A.adjust_hue(y, -0.5), atol=1e-5)  # a turn


@needs_kornia
def test_hue_matches_kornia_radians():
    y = rand_images(8)
    y[0, :, :4] = 0.5  # gray pixels have no hue
    y[1, 1] = y[1, 0]  # red/green ties
    shift = torch.linspace(-0.5, 0.5, 8)
    ref = kornia.enhance.adjust_hue(y, 2 * math.pi * shift)
    assert torch.allclose(A.adjust_hue(y, shift), ref, atol=1e-5)


def test_hsv_known_pixels_and_round_trip():
    px = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.25, 0.25], [0.4, 0.4, 0.4]]).T.reshape(1, 3, 1, 4)
    hsv = A.rgb_to_hsv(px)  # hue in turns, s = (max - min) / max, v = max
    expected = torch.tensor([[0.0, 1.0, 1.0], [1 / 3, 1.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.4]])
    assert torch.allclose(hsv[0, :, 0].T, expected, atol=1e-6)
    assert torch.allclose(A.hsv_to_rgb(hsv), px, atol=1e-6)
    y = rand_images(4)
    assert torch.allclose(A.hsv_to_rgb(A.rgb_to_hsv(y)), y, atol=1e-5)


@needs_kornia
def test_hsv_conversions_match_kornia():
    y = rand_images(4)
    hsv = A.rgb_to_hsv(y)
    ref = kornia.color.rgb_to_hsv(y)
    ref[:, 0] /= 2 * math.pi
    dh = (hsv[:, 0] - ref[:, 0]).abs()
    assert torch.minimum(dh, 1 - dh).max() < 1e-5
    assert torch.allclose(hsv[:, 1:], ref[:, 1:], atol=1e-5)


def test_grayscale_hand_formula():
    y = rand_images()
    mask = torch.tensor([True, False, True, True, False, False])
    out = A.apply_grayscale(y, mask)
    gray = (y * LUMA).sum(1, keepdim=True)
    assert torch.allclose(out[mask], gray[mask].expand(-1, 3, -1, -1), atol=1e-6)
    assert torch.equal(out[~mask], y[~mask])


@needs_kornia
def test_grayscale_matches_kornia():
    y = rand_images()
    mask = torch.tensor([True, False, True, True, False, False])
    out = A.apply_grayscale(y, mask)
    gray = kornia.color.rgb_to_grayscale(y)  # 0.299, 0.587, 0.114
    assert torch.allclose(out[mask], gray[mask].expand(-1, 3, -1, -1), atol=1e-6)


def _kornia_ops():
    """kornia's torchvision-style brightness, contrast, saturation, hue (hue in turns)."""
    return [kornia.enhance.adjust_brightness_accumulative,
            kornia.enhance.adjust_contrast_with_mean_subtraction,
            kornia.enhance.adjust_saturation_with_gray_subtraction,
            lambda x, f: kornia.enhance.adjust_hue(x, 2 * math.pi * f)]


def _tagless_ops():
    """The single ops, one sample at a time (the fused jitter must equal them in sequence)."""
    return [A.adjust_brightness, A.adjust_contrast, A.adjust_saturation, A.adjust_hue]


def _reference_jitter(ops, img, factors, order):
    """One sample, the ops one by one in ``order``."""
    x = img[None]
    for op in order.tolist():
        x = ops[op](x, float(factors[op]))
    return x[0]


def _check_color_jitter_against(ops):
    b = 24
    y = rand_images(b, 3, 12, 10)
    g = torch.Generator().manual_seed(3)
    params = A.sample_color_jitter_params(b, 0.4, 0.4, 0.4, 0.1, p=0.75, generator=g)
    assert len({tuple(o) for o in params.order.tolist()}) > 5  # per-sample orders
    assert 0 < params.apply.sum() < b
    out = A.apply_color_jitter(y, params)
    for i in range(b):
        if params.apply[i]:
            ref = _reference_jitter(ops, y[i], params.factors[i], params.order[i])
            assert torch.allclose(out[i], ref, atol=2e-5), i
        else:
            assert torch.equal(out[i], y[i])  # not applied: exactly unchanged


def test_color_jitter_matches_sequential_single_ops():
    _check_color_jitter_against(_tagless_ops())


@needs_kornia
def test_color_jitter_matches_sequential_kornia_reference():
    _check_color_jitter_against(_kornia_ops())


def test_gaussian_blur_of_impulse_is_the_kernel():
    # An interior impulse (no border effect) blurs into the outer product of the 1-D Gaussian.
    x = torch.zeros(3, 1, 15, 15)
    x[:, :, 7, 7] = 1.0
    sigma = torch.tensor([0.7, 1.5, 0.0])
    k = 7
    out = A.apply_gaussian_blur(x, sigma, k)
    t = torch.arange(k, dtype=torch.float32) - k // 2
    for i, s in enumerate(sigma[:2].tolist()):
        g = torch.exp(-t ** 2 / (2 * s * s))
        g = g / g.sum()
        expected = torch.zeros(15, 15)
        expected[4:11, 4:11] = torch.outer(g, g)
        assert torch.allclose(out[i, 0], expected, atol=1e-6), s
    assert torch.equal(out[2], x[2])  # sigma 0 -> delta kernel -> exactly unchanged
    y = rand_images(5, 3, 16, 18)
    sigma = torch.tensor([0.3, 1.0, 2.0, 0.0, 1.5])
    out = A.apply_gaussian_blur(y, sigma, 7)
    assert torch.equal(out[3], y[3])
    const = torch.full((2, 3, 9, 9), 0.6)
    assert torch.allclose(A.apply_gaussian_blur(const, torch.tensor([1.0, 2.0]), 7), const, atol=1e-6)


@needs_kornia
def test_gaussian_blur_matches_kornia():
    y = rand_images(5, 3, 16, 18)
    sigma = torch.tensor([0.3, 1.0, 2.0, 0.0, 1.5])
    for k in (3, 7):
        out = A.apply_gaussian_blur(y, sigma, k)
        on = sigma > 0
        ref = kornia.filters.gaussian_blur2d(y[on], (k, k), sigma[on, None].expand(-1, 2).contiguous())
        assert torch.allclose(out[on], ref, atol=1e-5)
        assert torch.equal(out[~on], y[~on])


def test_gaussian_kernel_sums_to_one():
    k = A.gaussian_kernel1d(torch.tensor([0.5, 2.0, 0.0]), 9)
    assert torch.allclose(k.sum(1), torch.ones(3))
    assert k[2].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert A.auto_kernel_size(224) == 23 and A.auto_kernel_size(32) == 3


def test_solarize_hand_formula():
    y = rand_images()
    mask = torch.tensor([True, True, False, True, False, True])
    out = A.apply_solarize(y, mask)
    assert torch.equal(out[mask], torch.where(y[mask] >= 0.5, 1 - y[mask], y[mask]))
    assert torch.equal(out[~mask], y[~mask])
    assert A.apply_solarize(torch.tensor([0.2, 0.5, 0.8]).view(1, 1, 1, 3), torch.tensor([True])).flatten().tolist() \
        == pytest.approx([0.2, 0.5, 0.2])


@needs_kornia
def test_solarize_matches_kornia():
    y = rand_images()
    mask = torch.tensor([True, True, False, True, False, True])
    out = A.apply_solarize(y, mask)
    assert torch.allclose(out[mask], kornia.enhance.solarize(y[mask], 0.5))


def test_normalize_hand_formula():
    y = rand_images()
    mean, std = torch.tensor(A.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(A.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(A.normalize(y), (y - mean) / std, atol=1e-6)
    assert torch.allclose(A.normalize(y, (0.5,), (0.25,)), (y - 0.5) / 0.25, atol=1e-6)  # one value, all channels


@needs_kornia
def test_normalize_matches_kornia():
    y = rand_images()
    mean, std = torch.tensor(A.IMAGENET_MEAN), torch.tensor(A.IMAGENET_STD)
    assert torch.allclose(A.normalize(y), kornia.enhance.normalize(y, mean, std), atol=1e-6)


def test_to_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert A.to_float(x).flatten().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert A.to_float(x).dtype == torch.float32
