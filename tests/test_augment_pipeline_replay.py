"""A view recipe's full pipeline, replayed op by op with the same sampled parameters.

``build_views(cfg)(images, generator)`` must equal: with a fresh generator of the same seed,
for each kind of view (globals, then locals), the public ``sample_*`` functions called in the
recipe's order on the n * B batch (n views of that kind, view-major: row v * B + b is view v of
image b), then the public ``apply_*`` ops one by one on the image batch repeated n times, then
``normalize``. The flip is applied as its own op here (the recipe folds it into the crop grid).
Every probability lies strictly between 0 and 1, so every op runs and is checked.
"""

import pytest
import torch

import tagless.augment as A

B, H, W = 8, 24, 20  # non-square, so a swapped height / width shows

# The recipe's draw order, from one generator.
ORDER = ("crop", "flip", "jitter", "gray", "blur", "solarize")


def two_views_cfg():
    return A.ViewsConfig(recipe="two_views", global_size=16, global_scale=(0.2, 1.0), flip_p=0.5,
                         jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.3, blur_p=0.5,
                         blur_sigma=(0.1, 2.0), blur_kernel_size=5, solarize_p=0.3,
                         solarize_threshold=0.6, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))


def logo_cfg():
    return A.ViewsConfig(recipe="logo", num_global=2, num_local=2, global_size=16, local_size=8,
                         global_scale=(0.4, 1.0), local_scale=(0.08, 0.6), jitter_p=0.6,
                         grayscale_p=0.3, blur_p=0.5, solarize_p=0.3, flip_p=0.5)


CONFIGS = {"two_views": two_views_cfg, "logo": logo_cfg}


def images(seed=0):
    return torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def groups(cfg):
    """(kind, n, size, scale) of each kind of view, globals first."""
    out = [("global", cfg.num_global, cfg.global_size, cfg.global_scale)]
    if cfg.num_local:
        out.append(("local", cfg.num_local, cfg.local_size, cfg.local_scale))
    return out


def sample(name, cfg, m, scale, g):
    """One sampler of the recipe, with the recipe's arguments, for m = n * B samples."""
    if name == "crop":
        return A.sample_resized_crop_params(m, H, W, scale, cfg.ratio, generator=g)
    if name == "flip":
        return A.sample_horizontal_flip_params(m, cfg.flip_p, generator=g)
    if name == "jitter":
        return A.sample_color_jitter_params(m, *cfg.jitter, p=cfg.jitter_p, generator=g)
    if name == "gray":
        return A.sample_grayscale_params(m, cfg.grayscale_p, generator=g)
    if name == "blur":
        return A.sample_gaussian_blur_params(m, cfg.blur_sigma, cfg.blur_p, generator=g)
    if name == "solarize":
        return A.sample_solarize_params(m, cfg.solarize_p, generator=g)
    raise ValueError(name)


def replay(cfg, x_uint8, seed, order=ORDER, skip=(), check_exercised=False):
    """(crops, boxes, flipped, kinds, generator after) by the individual ops."""
    x = A.to_float(x_uint8)
    g = torch.Generator().manual_seed(seed)
    crops, boxes, flipped, kinds = [], [], [], []
    for kind, n, size, scale in groups(cfg):
        m = n * B
        p = {name: sample(name, cfg, m, scale, g) for name in order}
        if check_exercised:  # every op has both outcomes in this draw, so every op is checked
            for op, on in (("flip", p["flip"]), ("jitter", p["jitter"].apply), ("gray", p["gray"]),
                           ("blur", p["blur"] > 0), ("solarize", p["solarize"])):
                assert 0 < int(on.sum()) < m, (kind, op, int(on.sum()))

        y = A.apply_resized_crop(x.repeat(n, 1, 1, 1), p["crop"], size)  # view-major n * B
        y = A.apply_horizontal_flip(y, p["flip"])
        y = A.apply_color_jitter(y, p["jitter"])
        if "gray" not in skip:
            y = A.apply_grayscale(y, p["gray"])
        y = A.apply_gaussian_blur(y, p["blur"], cfg.blur_kernel_size or A.auto_kernel_size(size))
        y = A.apply_solarize(y, p["solarize"], cfg.solarize_threshold)
        y = A.normalize(y, cfg.mean, cfg.std)
        crops += list(y.chunk(n))
        boxes += list(p["crop"].chunk(n))
        flipped += list(p["flip"].chunk(n))
        kinds += [kind] * n
    return crops, boxes, flipped, kinds, g


def recipe(cfg, x_uint8, seed):
    g = torch.Generator().manual_seed(seed)
    return A.build_views(cfg)(x_uint8, g), g


def same_crops(a, b):
    return len(a) == len(b) and all(torch.allclose(u, v, rtol=0, atol=1e-5) for u, v in zip(a, b))


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seed", [0, 5])
def test_recipe_equals_replay_of_individual_ops(name, seed):
    cfg, x = CONFIGS[name](), images(seed)
    views, g_recipe = recipe(cfg, x, seed)
    crops, boxes, flipped, kinds, g_replay = replay(cfg, x, seed, check_exercised=True)

    assert views.kinds == kinds
    assert len(views.crops) == len(views.boxes) == len(views.flipped) == len(crops)
    for i, (vc, rc, vb, rb, vf, rf) in enumerate(zip(views.crops, crops, views.boxes, boxes,
                                                     views.flipped, flipped)):
        assert vc.shape == rc.shape, i
        assert torch.equal(vb, rb), i
        assert torch.equal(vf, rf), i
        assert torch.allclose(vc, rc, rtol=0, atol=1e-5), (i, (vc - rc).abs().max().item())
    # the recipe draws exactly what the replay draws: the generators end in the same state
    assert torch.equal(g_recipe.get_state(), g_replay.get_state())


def swapped(a, b):
    order = list(ORDER)
    i, j = order.index(a), order.index(b)
    order[i], order[j] = order[j], order[i]
    return tuple(order)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("pair", [("flip", "gray"), ("gray", "solarize"), ("crop", "jitter"),
                                  ("blur", "solarize")])
def test_replay_with_swapped_draws_differs(name, pair):
    # The comparison is sensitive to the draw order: swapping two samplers (even two coin
    # flips of the same size) changes the views.
    cfg, x = CONFIGS[name](), images()
    views, _ = recipe(cfg, x, 0)
    crops, _boxes, _flipped, _, _ = replay(cfg, x, 0, order=swapped(*pair))
    assert not same_crops(views.crops, crops)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_replay_without_grayscale_differs(name):
    # ... and to each op: a pipeline missing the grayscale step does not match.
    cfg, x = CONFIGS[name](), images()
    views, _ = recipe(cfg, x, 0)
    crops, boxes, _flipped, _, _ = replay(cfg, x, 0, skip=("gray",))
    assert all(torch.equal(u, v) for u, v in zip(views.boxes, boxes))
    assert not same_crops(views.crops, crops)
