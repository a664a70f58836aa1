"""View recipes: counts, sizes, kinds, boxes, determinism, normalisation, config checks."""

import pytest
import torch

import tagless.augment as A
from tagless.errors import TaglessError

B = 8


def batch(b=B, h=32, w=32, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def check_views(views, sizes, kinds, b=B):
    assert views.kinds == kinds
    assert len(views.crops) == len(views.boxes) == len(views.flipped) == len(kinds)
    mean = torch.tensor(A.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(A.IMAGENET_STD).view(1, 3, 1, 1)
    for crop, box, flip, s in zip(views.crops, views.boxes, views.flipped, sizes):
        assert crop.shape == (b, 3, s, s) and crop.dtype == torch.float32
        assert torch.isfinite(crop).all()
        raw = crop * std + mean  # normalised from [0, 1]
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
        assert box.shape == (b, 4) and flip.shape == (b,) and flip.dtype == torch.bool


def test_two_views():
    views = A.build_views(A.two_views())(batch(), gen())
    check_views(views, [32, 32], ["global", "global"])
    assert not torch.equal(views.boxes[0], views.boxes[1])  # independent views


def test_multi_crop_counts_sizes_kinds():
    cfg = A.multi_crop()
    assert (cfg.num_global, cfg.num_local, cfg.global_scale, cfg.local_scale) == (2, 6, (0.14, 1.0), (0.05, 0.14))
    views = A.build_views(cfg)(batch(), gen())
    check_views(views, [32] * 2 + [16] * 6, ["global"] * 2 + ["local"] * 6)
    local_area = torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in views.boxes[2:]]) / 32 ** 2
    assert local_area.max() < 0.2  # (0.05, 0.14) plus rounding


def test_logo_counts_sizes_kinds():
    cfg = A.logo()
    assert (cfg.global_scale, cfg.local_scale, cfg.local_size) == ((0.4, 1.0), (0.08, 0.6), 32)
    maker = A.build_views(cfg)
    assert maker.kinds == ["global", "global", "local", "local"]
    views = maker(batch(16), gen())
    check_views(views, [32] * 4, ["global", "global", "local", "local"], b=16)
    g_area = torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in views.boxes[:2]]) / 32 ** 2
    assert g_area.min() > 0.35


def test_eval_is_deterministic_identity_at_native_size():
    x = batch()
    maker = A.build_views(A.eval_views())
    views = maker(x)  # no generator needed
    check_views(views, [32], ["global"])
    assert torch.equal(views.crops[0], maker(x, gen(3)).crops[0])
    assert torch.allclose(views.crops[0], A.normalize(A.to_float(x)))
    assert not views.flipped[0].any()
    assert views.boxes[0][0].tolist() == [0.0, 0.0, 32.0, 32.0]


def test_eval_centre_crop_resize():
    x = batch(2, 40, 48)
    views = A.build_views(A.eval_views(global_size=16, eval_crop_fraction=0.875))(x)
    assert views.crops[0].shape == (2, 3, 16, 16)
    assert views.boxes[0][0].tolist() == [6.0, 2.0, 41.0, 37.0]  # 35 px; round(6.5) = 6


@pytest.mark.parametrize("name", list(A.RECIPES))
def test_same_seed_same_views(name):
    maker = A.build_views(A.ViewsConfig(recipe=name))
    x = batch()
    a, b, c = maker(x, gen(7)), maker(x, gen(7)), maker(x, gen(8))
    for ca, cb, ba, bb, fa, fb in zip(a.crops, b.crops, a.boxes, b.boxes, a.flipped, b.flipped):
        assert torch.equal(ca, cb) and torch.equal(ba, bb) and torch.equal(fa, fb)
    if name != "eval":
        assert not torch.equal(a.crops[0], c.crops[0])


def test_views_record_their_flips_and_boxes():
    # Identity colour, full-image crops: a view is the (possibly flipped) normalised source.
    cfg = A.two_views(global_scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0,
                    blur_p=0.0)
    x = batch(64)
    views = A.build_views(cfg)(x, gen())
    ref = A.normalize(A.to_float(x))
    flip = views.flipped[0]
    assert 0 < flip.sum() < 64
    assert torch.allclose(views.crops[0][~flip], ref[~flip], atol=1e-5)
    assert torch.allclose(views.crops[0][flip], ref[flip].flip(-1), atol=1e-5)
    assert (views.boxes[0] == torch.tensor([0.0, 0.0, 32.0, 32.0])).all()


def test_uint8_and_float_inputs_agree():
    maker = A.build_views(A.multi_crop(num_local=2, solarize_p=0.5))
    x = batch()
    a, b = maker(x, gen(1)), maker(x.float() / 255, gen(1))
    for ca, cb in zip(a.crops, b.crops):
        assert torch.allclose(ca, cb, atol=1e-6)


def test_config_validation():
    with pytest.raises(TaglessError, match="recipe"):
        A.ViewsConfig(recipe="three_views")
    with pytest.raises(TaglessError, match="num_local"):
        A.ViewsConfig(recipe="two_views", num_local=2)
    with pytest.raises(TaglessError, match="num_local"):
        A.ViewsConfig(recipe="logo", num_local=0)
    with pytest.raises(TaglessError, match="global_scale"):
        A.two_views(global_scale=(0.5, 0.2))
    with pytest.raises(TaglessError, match="blur_kernel_size"):
        A.two_views(blur_kernel_size=4)
    cfg = A.ViewsConfig(recipe="logo", num_local=2, local_scale=[0.1, 0.5], mean=[0.5], std=[0.5])
    assert cfg.local_scale == (0.1, 0.5) and cfg.mean == (0.5,)


@pytest.mark.parametrize("recipe", ["two_views", "multi_crop", "logo", "eval"])
def test_recipe_name_alone_gives_its_values_and_set_fields_override(recipe, tmp_path):
    """``views: {recipe: NAME}`` is the recipe's setting; fields set beside it win; the saved
    (resolved) config reloads to the same values."""
    from tagless import config_io

    cfg = config_io.from_dict(A.ViewsConfig, {"recipe": recipe})
    for key, value in A.RECIPES[recipe].items():
        assert getattr(cfg, key) == pytest.approx(value), key
    custom = config_io.from_dict(A.ViewsConfig, {"recipe": recipe, "global_size": 24, "blur_p": 0.25})
    assert (custom.global_size, custom.blur_p) == (24, 0.25)
    assert custom.global_scale == cfg.global_scale  # the rest stays the recipe's
    config_io.save(custom, tmp_path / "v.yaml")
    assert config_io.load(A.ViewsConfig, tmp_path / "v.yaml") == custom


def test_recipes_differ_where_the_papers_do():
    logo, multi, two = A.logo(), A.multi_crop(), A.two_views()
    assert (logo.num_local, logo.global_scale, logo.local_scale, logo.blur_p) == (2, (0.4, 1.0), (0.08, 0.6), 0.0)
    assert (multi.num_local, multi.global_scale, multi.local_scale) == (6, (0.14, 1.0), (0.05, 0.14))
    assert (two.num_local, two.global_scale, two.blur_p) == (0, (0.2, 1.0), 0.5)
    assert A.eval_views().flip_p == 0.0 and A.eval_views().num_global == 1


def test_config_loads_through_config_io():
    config_io = pytest.importorskip("tagless.config_io")
    cfg = config_io.from_dict(A.ViewsConfig, {"recipe": "multi_crop", "num_local": 4,
                                              "local_scale": [0.05, 0.2]})
    assert cfg.local_scale == (0.05, 0.2) and cfg.num_local == 4
    assert config_io.to_dict(cfg)["recipe"] == "multi_crop"


def test_one_channel_images():
    cfg = A.two_views(mean=(0.5,), std=(0.25,))
    views = A.build_views(cfg)(batch()[:, :1], gen())
    assert views.crops[0].shape == (B, 1, 32, 32) and torch.isfinite(views.crops[0]).all()
