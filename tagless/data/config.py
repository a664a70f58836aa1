"""`DataConfig`: where images come from, how they are split, resized and cached."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from PIL import Image

from tagless.config_io import MAX_IMAGE_SIDE, AtLeastOne, Count, Fraction, Positive, Range, Seed
from tagless.errors import TaglessError

SPLITS = ("train", "test", "all")
LABEL_KINDS = ("auto", "single", "multi", "partial", "single_positive")
CORRUPT_POLICIES = ("skip", "fail")
IMBALANCE = ("none", "light", "heavy")
LABEL_SEPARATORS = ("auto", ";", ",", "whitespace")
MAX_IMAGE_SIZE = MAX_IMAGE_SIDE
PILLOW_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb limit
ImageSize = Annotated[int, Range(1, MAX_IMAGE_SIZE)]
HeldOut = Annotated[float, Range(0, 1, high_open=True)]  # a share carved out: below 1, something is left


@dataclass
class DataConfig:
    """Data settings. Sizes are in pixels; fractions in [0, 1].

    `root` means, per source: digits/digit_scenes: unused; image_folder: the folder;
    csv: the CSV file (or a base image folder when `csv_path` is also given);
    cifar10/cifar100: the `cifar-10-batches-py` / `cifar-100-python` folder;
    coco: the image folder (may contain `{split}`); voc: the VOCdevkit year folder.
    """

    source: str = "digits"  # digits | digit_scenes | image_folder | csv | cifar10 | cifar100 | coco | voc
    root: str = ""
    image_size: ImageSize = 32  # every image is resized to image_size x image_size RGB
    cache_dir: str = ".cache/tagless"  # relative to the working dir; "" = no disk cache
    on_corrupt: str = "skip"  # skip | fail: unreadable or missing image files
    test_fraction: HeldOut = 0.2  # seeded split for sources without a given split
    split_seed: Seed = 0
    limit: Count = 0  # 0 = all; else the first N of the split after a seeded shuffle
    imbalance: str = "none"  # train split of single-label data: none | light | heavy (paper 002, Sec. 4.5)
    class_keep: list[Fraction] = field(default_factory=list)  # train split: fraction kept of each class
    classes: list[str] = field(default_factory=list)  # fixed class list (folder, csv, coco, voc)
    label_kind: str = "auto"  # auto | single | multi | partial | single_positive (CSV labels)
    csv_path: str = ""  # csv source: the CSV; image_folder: flat form `path,labels` CSV
    annotations: str = ""  # coco instances JSON; may contain `{split}`
    # file name of the train split; "" = the source's (coco: train; voc: trainval, else train)
    train_split_name: str = ""
    test_split_name: str = ""  # name of the test split; "" = the source's (coco: val; voc: test, else val)
    label_separator: str = "auto"  # csv labels: ; | , | whitespace | auto (the one that fits the file)
    decode_workers: Annotated[int, Range(0, 256)] = 0  # decoding threads; 0 = min(8, cpu count)
    scene_count: Annotated[int, Range(1, 10_000_000)] = 2000  # digit scenes in train + test (split by test_fraction)
    scene_digits: tuple[AtLeastOne, AtLeastOne] = (1, 4)  # min, max digits per scene
    scene_digit_size: tuple[ImageSize, ImageSize] = (12, 28)  # min, max digit side in pixels
    scene_max_overlap: Fraction = 0.2  # max fraction of the smaller digit square covered
    scene_noise_std: Annotated[float, Range(0, 255)] = 0.0  # gaussian background noise, in uint8 grey levels
    # COCO's small/medium/large limits in original pixels^2
    object_size_thresholds: tuple[Positive, Positive] = (1024.0, 9216.0)
    # Image files of more pixels (width x height, read from the header) are skipped as unreadable,
    # never decoded: a small PNG can hold a decompression bomb. The default is Pillow's limit.
    max_image_pixels: AtLeastOne = PILLOW_MAX_PIXELS  # larger image files are skipped unread (Pillow's limit)

    def validate(self) -> None:
        """Called by the config loader: the source must be registered and values in range."""
        from tagless.data.registry import SOURCES

        if self.source not in SOURCES:
            raise TaglessError(f"data.source: unknown source {self.source!r}; "
                               f"expected one of {sorted(SOURCES)}")
        check_data_config(self)


def _pair(value, name: str, low: int) -> tuple[int, int]:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise TaglessError(f"data.{name} must be (min, max) with {low} <= min <= max, got {value}")
    return int(value[0]), int(value[1])


def check_data_config(cfg: DataConfig) -> None:
    """Raise TaglessError on values no source accepts (types are checked by the config loader)."""
    if not 1 <= cfg.image_size <= MAX_IMAGE_SIZE:
        raise TaglessError(f"data.image_size must be in [1, {MAX_IMAGE_SIZE}], got {cfg.image_size}")
    if cfg.max_image_pixels < 1:
        raise TaglessError(f"data.max_image_pixels must be >= 1, got {cfg.max_image_pixels}")
    if cfg.on_corrupt not in CORRUPT_POLICIES:
        raise TaglessError(f"data.on_corrupt must be one of {CORRUPT_POLICIES}, got {cfg.on_corrupt!r}")
    if not 0.0 <= cfg.test_fraction < 1.0:
        raise TaglessError(f"data.test_fraction must be in [0, 1), got {cfg.test_fraction}")
    if cfg.limit < 0:
        raise TaglessError(f"data.limit must be >= 0, got {cfg.limit}")
    if cfg.label_separator not in LABEL_SEPARATORS:
        raise TaglessError(f"data.label_separator must be one of {LABEL_SEPARATORS}, got {cfg.label_separator!r}")
    if cfg.imbalance not in IMBALANCE:
        raise TaglessError(f"data.imbalance must be one of {IMBALANCE}, got {cfg.imbalance!r}")
    if cfg.class_keep and (cfg.imbalance != "none" or not all(0 <= f <= 1 for f in cfg.class_keep)):
        raise TaglessError("data.class_keep: fractions in [0, 1], and not together with data.imbalance")
    if cfg.label_kind not in LABEL_KINDS:
        raise TaglessError(f"data.label_kind must be one of {LABEL_KINDS}, got {cfg.label_kind!r}")
    if len(set(cfg.classes)) != len(cfg.classes):
        raise TaglessError("data.classes has duplicate names")
    if cfg.scene_count < 1:
        raise TaglessError(f"data.scene_count must be >= 1, got {cfg.scene_count}")
    _pair(cfg.scene_digits, "scene_digits", 1)
    _pair(cfg.scene_digit_size, "scene_digit_size", 1)
    if not 0.0 <= cfg.scene_max_overlap <= 1.0:
        raise TaglessError(f"data.scene_max_overlap must be in [0, 1], got {cfg.scene_max_overlap}")
    if cfg.scene_noise_std < 0:
        raise TaglessError(f"data.scene_noise_std must be >= 0, got {cfg.scene_noise_std}")
    sizes = tuple(cfg.object_size_thresholds)
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise TaglessError(f"data.object_size_thresholds must be (small, large) with 0 < small < large, "
                           f"got {sizes}")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise TaglessError(f"unknown split {split!r}; expected one of {SPLITS}")
