"""View recipes: a typed config whose ``recipe`` fills in every unset field, and ``build_views(cfg)``.

``build_views(cfg)(images_uint8_BCHW, generator) -> Views``. Recipes ``two_views``,
``multi_crop`` and ``logo`` share one pipeline, in MoCo-v2 order: random resized crop (flip
folded into the crop grid), colour jitter, grayscale, Gaussian blur, solarize, normalise; they
differ in counts, sizes and scales (``RECIPES``). ``eval`` is deterministic: a centred
crop resized to ``global_size``, then normalise. ``multilabel`` (Verelst et al. WACV 2023, supp. A)
is one square random resized crop plus a flip, no colour ops; its test view is the squished image.

Why it is fast: the batch is converted to float once; the views of one kind (same size, same
settings) are made together, k crops per image from one ``grid_sample`` call and each later op
run once on the k * B batch, so kernel launches do not grow with the number of views. All
parameters are drawn on the device from the passed generator: no host sync, no loop over samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated

import torch

from tagless.augment.blur import apply_gaussian_blur, auto_kernel_size, sample_gaussian_blur_params
from tagless.augment.crop import apply_resized_crop, center_crop_resize, sample_resized_crop_params
from tagless.augment.flip import sample_horizontal_flip_params
from tagless.augment.jitter import (
    apply_color_jitter,
    apply_grayscale,
    sample_color_jitter_params,
    sample_grayscale_params,
)
from tagless.augment.pixel import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_solarize,
    normalize,
    sample_solarize_params,
    to_float,
)
from tagless.config_io import MAX_IMAGE_SIDE, AtLeastOne, Count, Fraction, Positive, Range
from tagless.errors import TaglessError

# Every recipe's values. A field left unset (None) in a ViewsConfig takes its recipe's value,
# so ``views: {recipe: logo}`` alone is LoGo's setting and any field set beside it overrides.
_TWO_VIEWS = dict(
    global_size=32, local_size=16, num_global=2, num_local=0, global_scale=(0.2, 1.0),
    local_scale=(0.05, 0.4), ratio=(3 / 4, 4 / 3), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8,
    grayscale_p=0.2, blur_p=0.5, blur_sigma=(0.1, 2.0), blur_kernel_size=0, solarize_p=0.0,
    solarize_threshold=0.5, flip_p=0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD, eval_crop_fraction=1.0,
)
RECIPES: dict[str, dict] = {
    # MoCo-v2 (Chen et al. 2020): two views, scale (0.2, 1), jitter 0.4/0.4/0.4/0.1 p 0.8,
    # grayscale 0.2, blur p 0.5 sigma (0.1, 2), flip 0.5.
    "two_views": _TWO_VIEWS,
    # SwAV-style multi-crop (Caron et al. 2020): 2 global (0.14, 1) + 6 local (0.05, 0.14),
    # 32 / 16 px (SwAV ImageNet: 224 / 96). NOTE: colour is MoCo-v2's (SwAV uses jitter
    # 0.8 x (1, 1, 1, 0.25)), so a comparison against LoGo isolates the crop strategy.
    "multi_crop": {**_TWO_VIEWS, "num_local": 6, "global_scale": (0.14, 1.0), "local_scale": (0.05, 0.14)},
    # LoGo (Zhang et al. CVPR 2022) CIFAR setting: 2 global (0.4, 1) + 2 local (0.08, 0.6), all
    # resized to 32 (supp. Sec. 1); no blur (official CIFAR pipeline). NOTE: the official code's
    # default local scale is (0.05, 0.4); this follows the paper's stated [0.08, 0.6].
    # ImageNet-100: global_size=224, local_size=96, local_scale=(0.05, 0.4), blur_p=0.5.
    "logo": {**_TWO_VIEWS, "num_local": 2, "global_scale": (0.4, 1.0), "local_scale": (0.08, 0.6),
             "local_size": 32, "blur_p": 0.0},
    # Multi-label classification, Verelst et al. (WACV 2023) supp. A: ONE global view, a square
    # random resized crop with scale (0.25, 1) then a flip; no colour jitter, grayscale, blur or
    # solarize. The paper squishes to 1.5x the training size first: here the source image IS the
    # squished image (set data.image_size = 1.5 x global_size, e.g. 48 for 32), so crop boxes are
    # in its pixels (the SCL heatmap store covers it whole). Test view: squish (the whole square
    # image resized to global_size, eval_crop_fraction 1.0).
    "multilabel": {**_TWO_VIEWS, "num_global": 1, "global_scale": (0.25, 1.0), "ratio": (1.0, 1.0),
                   "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0,
                   "flip_p": 0.5, "eval_crop_fraction": 1.0},
    # Evaluation: no randomness; one centred crop resized to global_size, normalised.
    "eval": {**_TWO_VIEWS, "num_global": 1, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0,
             "solarize_p": 0.0, "flip_p": 0.0},
}


Side = Annotated[int, Range(1, MAX_IMAGE_SIDE)]  # a crop's side in pixels
CropFraction = Annotated[float, Range(0, 1, low_open=True)]


@dataclass
class ViewsConfig:
    """How a batch becomes views. Unset fields take the recipe's values (``RECIPES``)."""

    recipe: str = "two_views"  # two_views (MoCo-v2) | multi_crop (SwAV) | logo | multilabel | eval
    global_size: Side | None = None  # side of global crops (and of the eval view)
    local_size: Side | None = None  # side of local crops
    num_global: AtLeastOne | None = None  # global crops per image
    num_local: Count | None = None  # two_views: 0; multi_crop / logo: >= 1
    global_scale: tuple[float, float] | None = None  # crop area / image area
    local_scale: tuple[float, float] | None = None  # area range of local crops
    ratio: tuple[float, float] | None = None  # crop aspect w / h, sampled in log space
    jitter: tuple[float, float, float, float] | None = None  # brightness contrast saturation hue
    jitter_p: Fraction | None = None  # probability of colour jitter (random order per sample)
    grayscale_p: Fraction | None = None  # probability of grey conversion
    blur_p: Fraction | None = None  # probability of Gaussian blur
    blur_sigma: tuple[float, float] | None = None  # blur sigma range, in pixels of the crop
    blur_kernel_size: Count | None = None  # 0 = auto: odd, ~10% of the crop side, >= 3
    solarize_p: Fraction | None = None  # probability of solarisation
    solarize_threshold: Fraction | None = None  # pixels above it (in [0, 1]) are inverted
    flip_p: Fraction | None = None  # probability of a horizontal flip
    mean: tuple[Fraction, ...] | None = None  # normalisation (ImageNet's by default)
    std: tuple[Positive, ...] | None = None  # one value per channel, like mean
    eval_crop_fraction: CropFraction | None = None  # eval: centred crop side / shorter side (0.875 = 256->224)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise TaglessError(f"views.recipe: unknown recipe {self.recipe!r} (valid: {', '.join(RECIPES)})")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                value = RECIPES[self.recipe][f.name]
            setattr(self, f.name, tuple(value) if isinstance(value, list) else value)  # YAML gives lists
        self.validate()

    def validate(self) -> None:
        def bad(key: str, why: str):
            raise TaglessError(f"views.{key}: {why}")

        for key in ("global_size", "local_size", "num_global"):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.recipe in ("two_views", "multilabel") and self.num_local != 0:
            bad("num_local", f"recipe {self.recipe} has no local crops; use recipe multi_crop or logo")
        if self.recipe in ("multi_crop", "logo") and self.num_local < 1:
            bad("num_local", f"recipe {self.recipe} needs local crops (>= 1)")
        for key in ("global_scale", "local_scale", "ratio", "blur_sigma"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi or (key.endswith("scale") and hi > 1):
                bad(key, f"need 0 < low <= high{' <= 1' if key.endswith('scale') else ''}, got {(lo, hi)}")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            bad("jitter", f"need 4 strengths >= 0 with hue <= 0.5, got {self.jitter}")
        for key in ("jitter_p", "grayscale_p", "blur_p", "solarize_p", "flip_p"):
            if not 0 <= getattr(self, key) <= 1:
                bad(key, f"a probability must lie in [0, 1], got {getattr(self, key)}")
        if self.blur_kernel_size < 0 or (self.blur_kernel_size and self.blur_kernel_size % 2 == 0):
            bad("blur_kernel_size", f"must be 0 (auto) or odd, got {self.blur_kernel_size}")
        if len(self.mean) != len(self.std) or min(self.std, default=0) <= 0:
            bad("std", f"mean and std need the same length and std > 0, got {self.mean} / {self.std}")
        if not 0 < self.eval_crop_fraction <= 1:
            bad("eval_crop_fraction", f"must lie in (0, 1], got {self.eval_crop_fraction}")


@dataclass
class Views:
    """The views of one batch, in order: globals first, then locals.

    crops: float32 normalised B x C x s x s each; kinds: 'global' / 'local'; boxes: float32
    B x 4 crop boxes (x0, y0, x1, y1) in source pixels; flipped: Bool B."""

    crops: list[torch.Tensor] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    boxes: list[torch.Tensor] = field(default_factory=list)
    flipped: list[torch.Tensor] = field(default_factory=list)


def two_views(**fields) -> ViewsConfig:
    """The ``two_views`` recipe (MoCo-v2) with ``fields`` set."""
    return ViewsConfig(recipe="two_views", **fields)


def multi_crop(**fields) -> ViewsConfig:
    """The ``multi_crop`` recipe (SwAV-style) with ``fields`` set."""
    return ViewsConfig(recipe="multi_crop", **fields)


def logo(**fields) -> ViewsConfig:
    """The ``logo`` recipe (2 global + 2 local crops) with ``fields`` set."""
    return ViewsConfig(recipe="logo", **fields)


def eval_views(**fields) -> ViewsConfig:
    """The ``eval`` recipe: one deterministic centred view, with ``fields`` set."""
    return ViewsConfig(recipe="eval", **fields)


def eval_view(images: torch.Tensor, size: int, crop_fraction: float = 1.0, mean=IMAGENET_MEAN,
              std=IMAGENET_STD) -> torch.Tensor:
    """The one evaluation preprocessing (the ``eval`` recipe, the feature extractor, the
    monitor): uint8 or [0, 1] float B x C x H x W -> the centred crop of
    :func:`center_crop_resize`, normalised. Runs outside autocast."""
    with torch.autocast(images.device.type, enabled=False):
        crop, _ = center_crop_resize(to_float(images), size, crop_fraction)
        return normalize(crop, mean, std)


# ---- the view maker -----------------------------------------------------------------------

class ViewMaker:
    """Callable ``(images uint8 or float [0, 1] B x C x H x W, generator) -> Views``."""

    def __init__(self, cfg: ViewsConfig):
        cfg.validate()
        self.cfg = cfg
        if cfg.recipe == "eval":
            self.groups = [("global", 1, cfg.global_size, None)]
        else:
            self.groups = [(kind, n, size, scale) for kind, n, size, scale in (
                ("global", cfg.num_global, cfg.global_size, cfg.global_scale),
                ("local", cfg.num_local, cfg.local_size, cfg.local_scale)) if n > 0]
        self.kinds = [kind for kind, n, _, _ in self.groups for _ in range(n)]
        self.sizes = [size for _, n, size, _ in self.groups for _ in range(n)]
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._stats:  # cache: no host-to-device copy per batch
            self._stats[x.device] = (torch.tensor(self.cfg.mean, device=x.device),
                                     torch.tensor(self.cfg.std, device=x.device))
        return normalize(x, *self._stats[x.device])

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> Views:
        if images.dim() != 4:
            raise TaglessError(f"views: expected images B x C x H x W, got {tuple(images.shape)}")
        # Views are made in fp32 whatever the caller's autocast: blur and jitter lose precision in bf16.
        with torch.autocast(images.device.type, enabled=False):
            return self._make(to_float(images), generator)  # the one uint8 -> float conversion

    def _make(self, x: torch.Tensor, generator: torch.Generator | None) -> Views:
        if self.cfg.recipe == "eval":
            return self._eval(x)
        if generator is None:
            raise TypeError("views: a torch.Generator is required for a random recipe")
        views = Views()
        for kind, n, size, scale in self.groups:
            crops, boxes, flipped = self._group(x, n, size, scale, generator)
            views.crops += list(crops.chunk(n))
            views.boxes += list(boxes.chunk(n))
            views.flipped += list(flipped.chunk(n))
            views.kinds += [kind] * n
        return views

    def _group(self, x: torch.Tensor, n: int, size: int, scale, generator: torch.Generator):
        """n views of one kind for every image: (n * B) crops, boxes, flips, view-major."""
        cfg, dev = self.cfg, x.device
        b, _, height, width = x.shape
        m = n * b
        # Every sampler draws whatever its p, so the stream does not depend on settings.
        rng = dict(generator=generator, device=dev)
        boxes = sample_resized_crop_params(m, height, width, scale, cfg.ratio, **rng)
        flipped = sample_horizontal_flip_params(m, cfg.flip_p, **rng)
        jitter = sample_color_jitter_params(m, *cfg.jitter, p=cfg.jitter_p, **rng)
        gray = sample_grayscale_params(m, cfg.grayscale_p, **rng)
        sigma = sample_gaussian_blur_params(m, cfg.blur_sigma, cfg.blur_p, **rng)
        solar = sample_solarize_params(m, cfg.solarize_p, **rng)

        out = apply_resized_crop(x, boxes, size, flip=flipped)
        if cfg.jitter_p > 0 and max(cfg.jitter) > 0:
            out = apply_color_jitter(out, jitter)
        if cfg.grayscale_p > 0:
            out = apply_grayscale(out, gray)
        if cfg.blur_p > 0:
            out = apply_gaussian_blur(out, sigma, cfg.blur_kernel_size or auto_kernel_size(size))
        if cfg.solarize_p > 0:
            out = apply_solarize(out, solar, cfg.solarize_threshold)
        return self._normalize(out), boxes, flipped

    def _eval(self, x: torch.Tensor) -> Views:
        cfg = self.cfg
        crop, boxes = center_crop_resize(x, cfg.global_size, cfg.eval_crop_fraction)
        flipped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return Views([self._normalize(crop)], ["global"], [boxes], [flipped])


def build_views(cfg: ViewsConfig) -> ViewMaker:
    """The view maker for ``cfg``: ``build_views(cfg)(images_uint8_BCHW, generator) -> Views``."""
    return ViewMaker(cfg)
