"""DataConfig validation, the SOURCES registry and build_dataset's argument checks."""
import pytest

from tagless.data import SOURCES, DataConfig, build_dataset
from tagless.errors import TaglessError


def test_registry_names():
    assert set(SOURCES) == {"digits", "digit_scenes", "image_folder", "csv", "cifar10",
                            "cifar100", "coco", "voc"}
    assert all(callable(f) for f in SOURCES.values())


def test_defaults():
    cfg = DataConfig()
    assert (cfg.source, cfg.image_size, cfg.on_corrupt, cfg.test_fraction) == ("digits", 32, "skip", 0.2)
    assert cfg.classes == [] and cfg.scene_digits == (1, 4) and cfg.scene_digit_size == (12, 28)
    cfg.validate()


@pytest.mark.parametrize("kw, message", [
    ({"source": "imagenet"}, "unknown source 'imagenet'"),
    ({"image_size": 0}, "image_size"),
    ({"on_corrupt": "ignore"}, "on_corrupt"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"limit": -1}, "limit"),
    ({"label_kind": "weak"}, "label_kind"),
    ({"classes": ["a", "a"]}, "duplicate"),
    ({"scene_digits": (3, 2)}, "scene_digits"),
    ({"scene_digit_size": (0, 4)}, "scene_digit_size"),
    ({"scene_max_overlap": 1.5}, "scene_max_overlap"),
])
def test_bad_values(kw, message):
    with pytest.raises(TaglessError, match=message):
        build_dataset(DataConfig(**kw), "train")


def test_bad_split():
    with pytest.raises(TaglessError, match="unknown split 'validation'"):
        build_dataset(DataConfig(), "validation")
