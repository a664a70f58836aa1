"""Pascal VOC XML: the VOC07 difficult convention, boxes in pixel edges, image sets."""
import numpy as np
import pytest
from PIL import Image

from tagless.data import DataConfig, build_dataset
from tagless.data.sources.voc import VOC_CLASSES
from tagless.errors import TaglessError


def obj(name, box, difficult=0):
    x0, y0, x1, y1 = box
    return (f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def write_voc(root, images, sets):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, (w, h, objects) in images.items():
        Image.new("RGB", (w, h), (128, 64, 32)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            + "".join(objects) + "</annotation>")
    for name, ids in sets.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2007"
    write_voc(root, {
        "000001": (50, 25, [obj("dog", (1, 1, 50, 25), difficult=1),
                            obj("cat", (11, 6, 20, 10), difficult=1), obj("cat", (21, 1, 30, 5))]),
        "000002": (20, 20, [obj("person", (1, 1, 10, 20))]),
        "000003": (20, 40, [obj("car", (5, 5, 15, 25)), obj("dog", (2, 2, 4, 4), difficult=1)]),
    }, {"trainval": ["000001", "000002"], "test": ["000003"]})
    return root


def cfg(root, tmp_path, **kw):
    kw = {"train_split_name": "trainval", **kw}
    return DataConfig(source="voc", root=str(root), image_size=10, cache_dir=str(tmp_path / "cache"), **kw)


def test_voc07_difficult_convention(voc, tmp_path):
    ds = build_dataset(cfg(voc, tmp_path), "train")
    assert ds.classes == list(VOC_CLASSES) and ds.label_kind == "multi" and len(ds) == 2
    c = {name: i for i, name in enumerate(VOC_CLASSES)}
    first = ds.targets[0]
    assert first[c["dog"]] == -1  # only a difficult dog
    assert first[c["cat"]] == 1  # one difficult and one normal cat
    assert first[c["person"]] == 0
    assert ds.targets[1].tolist() == [1 if i == c["person"] else 0 for i in range(20)]
    test = build_dataset(cfg(voc, tmp_path), "test")
    assert test.targets[0, c["car"]] == 1 and test.targets[0, c["dog"]] == -1


def test_boxes_scaled_with_difficult_flags(voc, tmp_path):
    ds = build_dataset(cfg(voc, tmp_path), "train")
    dog, cat = VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")
    # 50 x 25 image -> 10 x 10; VOC (xmin, ymin) are 1-based: edges (xmin - 1, ymin - 1, xmax, ymax)
    np.testing.assert_allclose(ds.boxes[0], [[0, 0, 10, 10, dog], [2, 2, 4, 4, cat], [4, 0, 6, 2, cat]])
    assert ds.extras["difficult"][0].tolist() == [True, True, False]
    assert ds.extras["difficult"][1].tolist() == [False]
    assert ds.paths[1].endswith("JPEGImages/000002.jpg")
    assert len(build_dataset(cfg(voc, tmp_path), "all")) == 3


def test_voc_errors(voc, tmp_path):
    with pytest.raises(TaglessError, match="ImageSets/Main/train.txt"):
        build_dataset(cfg(voc, tmp_path, train_split_name="train"), "train")
    with pytest.raises(TaglessError, match="object class 'car' is not in the class list"):
        build_dataset(cfg(voc, tmp_path, classes=["dog", "cat", "person"]), "test")
    (voc / "Annotations" / "000002.xml").write_text("<annotation><object>")
    with pytest.raises(TaglessError, match="000002.xml"):
        build_dataset(cfg(voc, tmp_path), "train")
