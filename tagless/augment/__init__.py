"""Batched, per-sample-random augmentation on the device, and view recipes.

Each op has a sampler ``sample_*_params(batch_size, ..., generator, device)`` (tensors drawn
from the explicit generator), a deterministic ``apply_*(images, params)``, and a convenience
``op(images, ..., generator, return_params=False)``. Images are float32 B x C x H x W in [0, 1].
"""

from tagless.augment.blur import (
    apply_gaussian_blur,
    auto_kernel_size,
    gaussian_blur,
    gaussian_kernel1d,
    sample_gaussian_blur_params,
)
from tagless.augment.color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    hsv_to_rgb,
    rgb_to_grayscale,
    rgb_to_hsv,
)
from tagless.augment.crop import (
    apply_resized_crop,
    center_crop_box,
    center_crop_boxes,
    center_crop_resize,
    random_resized_crop,
    sample_resized_crop_params,
)
from tagless.augment.flip import apply_horizontal_flip, horizontal_flip, sample_horizontal_flip_params
from tagless.augment.jitter import (
    JitterParams,
    apply_color_jitter,
    apply_grayscale,
    color_jitter,
    grayscale,
    sample_color_jitter_params,
    sample_grayscale_params,
)
from tagless.augment.pixel import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_solarize,
    normalize,
    sample_solarize_params,
    solarize,
    to_float,
)
from tagless.augment.recipes import (
    RECIPES,
    ViewMaker,
    Views,
    ViewsConfig,
    build_views,
    eval_view,
    eval_views,
    logo,
    multi_crop,
    two_views,
)

__all__ = [
                                  "IMAGENET_MEAN",
                                  "IMAGENET_STD",
                                  "RECIPES",
                                  "JitterParams",
                                  "ViewMaker",
                                  "Views",
                                  "ViewsConfig",
                                  "adjust_brightness",
                                  "adjust_contrast",
                                  "adjust_hue",
                                  "adjust_saturation",
                                  "apply_color_jitter",
                                  "apply_gaussian_blur",
                                  "apply_grayscale",
                                  "apply_horizontal_flip",
                                  "apply_resized_crop",
                                  "apply_solarize",
                                  "auto_kernel_size",
                                  "build_views",
                                  "center_crop_box",
                                  "center_crop_boxes",
                                  "center_crop_resize",
                                  "color_jitter",
                                  "eval_view",
                                  "eval_views",
                                  "gaussian_blur",
                                  "gaussian_kernel1d",
                                  "grayscale",
                                  "horizontal_flip",
                                  "hsv_to_rgb",
                                  "logo",
                                  "multi_crop",
                                  "normalize",
                                  "random_resized_crop",
                                  "rgb_to_grayscale",
                                  "rgb_to_hsv",
                                  "sample_color_jitter_params",
                                  "sample_gaussian_blur_params",
                                  "sample_grayscale_params",
                                  "sample_horizontal_flip_params",
                                  "sample_resized_crop_params",
                                  "sample_solarize_params",
                                  "solarize",
                                  "to_float",
                                  "two_views",
]
