"""SCL heatmap store (Verelst et al. WACV 2023 supp. G) and the ``multilabel`` view recipe (supp. A).

References are written out in NumPy with explicit loops: the store is an image covering
[0, source]^2, bilinear between pixel centres and clamped beyond the outer ones."""

import math

import numpy as np
import pytest
import torch

import tagless.augment as A
from tagless.errors import TaglessError
from tagless.methods.heatmaps import HeatmapStore

SRC, S = 48, 8  # source side (px), store side: store pixel i spans [6 i, 6 i + 6]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def bilinear(img, u, v):
    """img (K x H x W) at continuous pixel-centre coords (u along x, v along y), edge-clamped."""
    h, w = img.shape[-2:]
    u, v = min(max(u, 0.0), w - 1.0), min(max(v, 0.0), h - 1.0)
    x0, y0 = math.floor(u), math.floor(v)
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = u - x0, v - y0
    return ((1 - fy) * ((1 - fx) * img[:, y0, x0] + fx * img[:, y0, x1])
            + fy * ((1 - fx) * img[:, y1, x0] + fx * img[:, y1, x1]))


def ref_sample(stored, box, flip, out):
    """Crop ``box`` (source px) of the map ``stored`` (K x S x S over [0, SRC]^2), resize to out."""
    k, s = stored.shape[0], stored.shape[-1]
    x0, y0, x1, y1 = box
    res = np.zeros((k, out, out))
    for i in range(out):
        for j in range(out):
            xs, ys = x0 + (j + 0.5) * (x1 - x0) / out, y0 + (i + 0.5) * (y1 - y0) / out
            res[:, i, j] = bilinear(stored, xs * s / SRC - 0.5, ys * s / SRC - 0.5)
    return res[:, :, ::-1] if flip else res


def ref_update(old, view, box, flip, m):
    """(new map, inside mask): store pixels with centres in the closed box get m old + (1-m) x,
    x = the un-flipped view bilinearly read at the pixel centre."""
    s = old.shape[-1]
    h, w = view.shape[-2:]
    view = view[:, :, ::-1] if flip else view
    x0, y0, x1, y1 = box
    new, inside = old.copy(), np.zeros((s, s), bool)
    for p in range(s):
        for q in range(s):
            cx, cy = (q + 0.5) * SRC / s, (p + 0.5) * SRC / s
            if x0 <= cx <= x1 and y0 <= cy <= y1:
                inside[p, q] = True
                x = bilinear(view, (cx - x0) / (x1 - x0) * w - 0.5, (cy - y0) / (y1 - y0) * h - 0.5)
                new[:, p, q] = m * old[:, p, q] + (1 - m) * x
    return new, inside


# Boxes: an interior one, one touching the top-left border (flipped), a whole-image one (flipped).
BOXES = torch.tensor([[10.0, 4.0, 40.0, 34.0], [0.0, 0.0, 27.0, 27.0], [0.0, 0.0, 48.0, 48.0]])
FLIPS = torch.tensor([False, True, True])
INDEX = torch.tensor([3, 0, 5])


def filled_store(dtype, top_k=0, classes=3, seed=0, **kw):
    store = HeatmapStore(6, classes, S, SRC, dtype=dtype, top_k=top_k, **kw)
    g = gen(seed)
    if dtype == "uint8":
        store.maps.copy_(torch.randint(0, 256, store.maps.shape, generator=g, dtype=torch.uint8))
    else:
        store.maps.copy_(torch.rand(store.maps.shape, generator=g).half())
    return store


def as_float(store):
    maps = store.maps.double().numpy()
    return maps / 255 if store.maps.dtype == torch.uint8 else maps


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_sample_is_crop_and_resize_of_the_stored_map(dtype):
    store = filled_store(dtype)
    out = store.sample(INDEX, BOXES, FLIPS, 5)
    assert out.shape == (3, 3, 5, 5) and out.dtype == torch.float32
    maps = as_float(store)
    for b in range(3):
        ref = ref_sample(maps[INDEX[b]], BOXES[b].tolist(), bool(FLIPS[b]), 5)
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1


def test_sample_top_k_scatters_kept_classes():
    store = filled_store("uint8", top_k=2, classes=5)
    assert (store.sample(INDEX, BOXES, FLIPS, 4) == 0).all()  # nothing kept yet
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.0], [0.5, 0.1, 0.1, 0.1, 0.9], [0.0, 0.1, 0.7, 0.2, 0.6]])
    store.select_classes(INDEX, scores)
    assert store.kept[INDEX].tolist() == [[1, 3], [4, 0], [2, 4]]
    store.maps.copy_(torch.randint(0, 256, store.maps.shape, generator=gen(1), dtype=torch.uint8))
    out = store.sample(INDEX, BOXES, FLIPS, 4)
    maps = as_float(store)
    for b, kept in enumerate([[1, 3], [4, 0], [2, 4]]):
        ref = np.zeros((5, 4, 4))
        for slot, c in enumerate(kept):
            ref[c] = ref_sample(maps[INDEX[b], slot : slot + 1], BOXES[b].tolist(), bool(FLIPS[b]), 4)[0]
        np.testing.assert_allclose(out[b].numpy(), ref, atol=1e-5)


def test_select_classes_keeps_staying_maps_and_resets_entering():
    store = filled_store("float16", top_k=2, classes=4)
    idx = torch.tensor([2])
    store.select_classes(idx, torch.tensor([[0.9, 0.8, 0.1, 0.0]]))  # keeps 0, 1
    store.maps.fill_(0.5)
    store.maps[2, 1] = 0.25  # class 1's map
    store.select_classes(idx, torch.tensor([[0.0, 0.9, 0.1, 0.8]]))  # keeps 1, 3: 1 stays, 3 enters
    assert store.kept[2].tolist() == [1, 3]
    assert (store.maps[2, 0] == 0.25).all() and (store.maps[2, 1] == 0).all()
    assert (store.maps[3] == 0.5).all()  # other images untouched
    with pytest.raises(TaglessError, match="top_k"):
        HeatmapStore(2, 3, 4, 8).select_classes(idx, torch.zeros(1, 3))


def test_top_k_update_writes_the_kept_classes():
    """Updates before the first selection (empty slots) leave nothing behind: after it, the
    first visit writes the kept classes' samples afresh (visited flags cleared)."""
    store = HeatmapStore(6, 4, S, SRC, dtype="float16", top_k=2, momentum=0.9)
    store.update(INDEX, BOXES, FLIPS, torch.rand(3, 4, 5, 5, generator=gen(10)), gen())  # warm-up
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.8], [0.7, 0.1, 0.1, 0.9], [0.0, 0.1, 0.7, 0.6]])
    store.select_classes(INDEX, scores)
    probs = torch.rand(3, 4, 5, 5, generator=gen(11))
    store.update(INDEX, BOXES, FLIPS, probs, gen())
    for b, kept in enumerate([[1, 3], [3, 0], [2, 3]]):
        ref, _ = ref_update(np.zeros((2, S, S)), probs[b, kept].double().numpy(), BOXES[b].tolist(),
                            bool(FLIPS[b]), 0.0)
        np.testing.assert_allclose(as_float(store)[INDEX[b]], ref, atol=2e-3)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_update_writes_inside_the_crop_only(dtype):
    m = 0.7
    store = filled_store(dtype, momentum=m)
    store.visited.fill_(True)  # an averaging visit (the first-visit rule has its own test)
    before = store.maps.clone()
    old = as_float(store)
    probs = torch.rand(3, 3, 5, 7, generator=gen(2))  # view maps need not be square
    store.update(INDEX, BOXES, FLIPS, probs, gen(3))
    tol = 1 / 255 + 1e-6 if dtype == "uint8" else 2e-3
    for b in range(3):
        n = INDEX[b]
        ref, inside = ref_update(old[n], probs[b].double().numpy(), BOXES[b].tolist(), bool(FLIPS[b]), m)
        assert (inside.any() and not inside.all()) or b == 2
        mask = torch.from_numpy(inside)
        assert torch.equal(store.maps[n][:, ~mask], before[n][:, ~mask])  # bit-identical outside
        np.testing.assert_allclose(as_float(store)[n], ref, atol=tol)
    for n in (1, 2, 4):  # images not in the batch
        assert torch.equal(store.maps[n], before[n])


def test_flipped_view_writes_to_the_mirrored_place():
    store = HeatmapStore(1, 1, S, SRC, dtype="float16", first_visit=True)
    probs = torch.zeros(2, 1, 4, 4)
    probs[:, :, :, 0] = 1.0  # hot left column of the view
    whole = torch.tensor([[0.0, 0.0, 48.0, 48.0]])
    store.update(torch.tensor([0]), whole, torch.tensor([True]), probs[:1], gen())
    cols = store.maps[0, 0].float().mean(0)
    assert cols[-1] == 1 and cols[0] == 0  # seen on the right of the source
    store.maps.zero_()
    store.visited.zero_()
    store.update(torch.tensor([0]), whole, torch.tensor([False]), probs[:1], gen())
    cols = store.maps[0, 0].float().mean(0)
    assert cols[0] == 1 and cols[-1] == 0


@pytest.mark.parametrize("first_visit", [True, False])
def test_first_visit_writes_the_sample(first_visit):
    m = 0.9
    store = HeatmapStore(6, 3, S, SRC, dtype="float16", momentum=m, first_visit=first_visit)
    probs = torch.rand(3, 3, 6, 6, generator=gen(4))
    store.update(INDEX, BOXES, FLIPS, probs, gen())
    for b in range(3):
        ref, inside = ref_update(np.zeros((3, S, S)), probs[b].double().numpy(), BOXES[b].tolist(),
                                 bool(FLIPS[b]), 0.0 if first_visit else m)
        np.testing.assert_allclose(as_float(store)[INDEX[b]], ref, atol=2e-3)
        assert torch.equal(store.visited[INDEX[b]], torch.from_numpy(inside))


def test_bias_correction_per_pixel_and_restart():
    """bias_correction: each pixel holds Eq. 4 from 0 over 1 - m^v, v its own visits: a pixel in
    both crops (m(1-m) x1 + (1-m) x2) / (1 - m^2), in one crop that crop's sample. restart()
    forgets the visits, keeps the values; a checkpoint without counts reads visited as 1."""
    m = 0.7
    store = HeatmapStore(1, 2, S, SRC, dtype="float16", momentum=m, bias_correction=True)
    boxes = [torch.tensor([[0.0, 0.0, 30.0, 30.0]]), torch.tensor([[18.0, 12.0, 48.0, 48.0]])]
    probs = [torch.rand(1, 2, 5, 5, generator=gen(s)) for s in (1, 2)]
    samples, insides = [], []
    for box, p in zip(boxes, probs):
        store.update(torch.tensor([0]), box, torch.tensor([False]), p, gen())
        x, inside = ref_update(np.zeros((2, S, S)), p[0].double().numpy(), box[0].tolist(), False, 0.0)
        samples.append(x)
        insides.append(inside)
    a, b = insides
    want = np.zeros((2, S, S))
    want[:, a & ~b] = samples[0][:, a & ~b]
    want[:, b & ~a] = samples[1][:, b & ~a]
    both = a & b
    assert both.any() and (a & ~b).any() and (b & ~a).any()
    want[:, both] = (m * (1 - m) * samples[0][:, both] + (1 - m) * samples[1][:, both]) / (1 - m ** 2)
    np.testing.assert_allclose(as_float(store)[0], want, atol=2e-3)
    assert np.array_equal(store.visits[0].numpy(), a.astype(int) + b.astype(int))
    old = {k: v for k, v in store.state_dict().items() if k != "visits"}
    fresh = HeatmapStore(1, 2, S, SRC, dtype="float16", momentum=m, bias_correction=True)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.visits, store.visited.to(torch.int16))
    before = store.maps.clone()
    store.restart()
    assert not store.visited.any() and not store.visits.any() and torch.equal(store.maps, before)
    store.update(torch.tensor([0]), boxes[1], torch.tensor([False]), probs[0], gen())
    x, _ = ref_update(np.zeros((2, S, S)), probs[0][0].double().numpy(), boxes[1][0].tolist(), False, 0.0)
    np.testing.assert_allclose(as_float(store)[0][:, b], x[:, b], atol=2e-3)  # written afresh


def test_stochastic_rounding_moves_a_uint8_store_on_average(monkeypatch):
    """(1 - m) * delta = 0.04 / 255 < 1 / 510: round-to-nearest never moves; the stochastic
    rounding follows the float EMA on average."""
    m, steps, start, target = 0.9, 20, 100, 100.4  # in 1/255 units
    whole = torch.tensor([[0.0, 0.0, 48.0, 48.0]]).repeat(4, 1)
    index, flips = torch.arange(4), torch.zeros(4, dtype=torch.bool)
    probs = torch.full((4, 3, 4, 4), target / 255)

    def run():
        store = HeatmapStore(4, 3, 16, SRC, momentum=m)
        store.maps.fill_(start)
        store.visited.fill_(True)
        g = gen(5)
        for _ in range(steps):
            store.update(index, whole, flips, probs, g)
        return store.maps.double().mean().item()

    floats = target + (start - target) * m ** steps  # the float EMA: 100.35
    assert abs(run() - floats) < 0.1
    half = torch.full  # round to nearest: u = 0.5 always
    monkeypatch.setattr(torch, "rand", lambda shape, generator=None, device=None: half(shape, 0.5))
    assert run() == start


def test_state_dict_round_trip():
    store = filled_store("uint8", top_k=2, classes=4)
    store.select_classes(INDEX, torch.rand(3, 4, generator=gen(6)))
    store.update(INDEX, BOXES, FLIPS, torch.rand(3, 4, 4, 4, generator=gen(7)), gen())
    fresh = HeatmapStore(6, 4, S, SRC, dtype="uint8", top_k=2)
    fresh.load_state_dict(store.state_dict())
    for name in ("maps", "kept", "visited"):
        assert torch.equal(getattr(fresh, name), getattr(store, name)), name
    assert torch.equal(fresh.sample(INDEX, BOXES, FLIPS, 3), store.sample(INDEX, BOXES, FLIPS, 3))
    assert store.memory_bytes() == 6 * 2 * S * S + 6 * S * S + 6 * 2 * 8


def test_bad_settings_raise():
    with pytest.raises(TaglessError, match="dtype"):
        HeatmapStore(2, 3, 4, 8, dtype="float32")
    with pytest.raises(TaglessError, match="top_k"):
        HeatmapStore(2, 3, 4, 8, top_k=4)
    with pytest.raises(TaglessError, match="momentum"):
        HeatmapStore(2, 3, 4, 8, momentum=1.0)


# ---- the multilabel recipe ----------------------------------------------------------------

def test_multilabel_recipe_one_square_flipped_crop_no_colour():
    x = torch.randint(0, 256, (256, 3, 48, 48), dtype=torch.uint8, generator=gen(8))
    cfg = A.ViewsConfig(recipe="multilabel")
    assert (cfg.num_global, cfg.num_local, cfg.global_scale, cfg.ratio, cfg.eval_crop_fraction) == (
        1, 0, (0.25, 1.0), (1.0, 1.0), 1.0)
    views = A.build_views(cfg)(x, gen(9))
    assert views.kinds == ["global"] and len(views.crops) == 1
    box, flip, crop = views.boxes[0], views.flipped[0], views.crops[0]
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    assert torch.equal(w, h) and box.min() >= 0 and box.max() <= 48
    area = w * h / 48 ** 2
    assert area.min() >= 0.25 and area.max() <= 1 and area.min() < 0.35 and area.max() > 0.9
    assert 0.4 < flip.float().mean() < 0.6
    mean, std = torch.tensor(A.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(A.IMAGENET_STD).view(1, 3, 1, 1)
    expected = A.apply_resized_crop(A.to_float(x), box, 32, flip=flip)
    assert crop.shape == (256, 3, 32, 32)
    assert torch.allclose(crop * std + mean, expected, atol=1e-5)
    again, other = A.build_views(cfg)(x, gen(9)), A.build_views(cfg)(x, gen(10))
    assert torch.equal(again.crops[0], crop) and torch.equal(again.boxes[0], box)
    assert not torch.equal(other.boxes[0], box)


def test_multilabel_recipe_config():
    from tagless import config_io

    cfg = config_io.from_dict(A.ViewsConfig, {"recipe": "multilabel", "global_size": 16})
    assert cfg.global_size == 16 and cfg.flip_p == 0.5 and cfg.jitter_p == 0 and cfg.blur_p == 0
    with pytest.raises(TaglessError, match="num_local"):
        A.ViewsConfig(recipe="multilabel", num_local=2)
    # Test view: the whole (square, squished) source resized to global_size.
    assert A.center_crop_box(48, 48, 32, cfg.eval_crop_fraction) == (0, 0, 48, 48)
    # Existing recipes keep their values.
    assert A.two_views().num_global == 2 and A.two_views().ratio == (3 / 4, 4 / 3)
    assert A.logo().global_scale == (0.4, 1.0) and A.eval_views().flip_p == 0.0
