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


def plain_cfg(root, tmp_path, **kw):
    """No split names: the VOC source's defaults."""
    kw = {"cache_dir": str(tmp_path / "cache"), **kw}
    return DataConfig(source="voc", root=str(root), image_size=10, **kw)


def test_voc2007_default_split_names(voc, tmp_path):
    (voc / "ImageSets" / "Main" / "dog_trainval.txt").write_text("000001  1\n000002 -1\n")
    train, test = build_dataset(plain_cfg(voc, tmp_path), "train"), build_dataset(plain_cfg(voc, tmp_path), "test")
    assert [p.rsplit("/", 1)[1] for p in train.paths] == ["000001.jpg", "000002.jpg"]
    assert [p.rsplit("/", 1)[1] for p in test.paths] == ["000003.jpg"]
    assert train.classes == test.classes == list(VOC_CLASSES)  # VOC names only: the 20 classes
    assert train.notes == test.notes == []


def test_voc2012_train_and_val_lists(tmp_path):
    root = tmp_path / "VOC2012"
    write_voc(root, {"a": (10, 10, [obj("cat", (1, 1, 5, 5))]), "b": (10, 10, [obj("bus", (1, 1, 9, 9))]),
                     "c": (10, 10, [obj("cow", (2, 2, 3, 3))])},
              {"train": ["a", "b"], "val": ["c"], "aeroplane_train": ["a"], "aeroplane_val": ["c"]})
    train, test = build_dataset(plain_cfg(root, tmp_path), "train"), build_dataset(plain_cfg(root, tmp_path), "test")
    assert (len(train), len(test)) == (2, 1) and test.paths[0].endswith("JPEGImages/c.jpg")
    assert test.targets[0, VOC_CLASSES.index("cow")] == 1
    assert "no ImageSets/Main/trainval.txt: train.txt is the train split" in train.notes
    assert "no ImageSets/Main/test.txt: val.txt is the test split" in test.notes
    with pytest.raises(TaglessError, match=r"ImageSets/Main/trainval.txt \(this folder has: train, val\); "
                                           r"set data.train_split_name$"):
        build_dataset(plain_cfg(root, tmp_path, train_split_name="trainval"), "train")


def test_missing_split_lists_the_existing_ones(voc, tmp_path):
    (voc / "ImageSets" / "Main" / "cat_test.txt").write_text("000003 1\n")
    with pytest.raises(TaglessError, match=r"VOC image set not found: .*/ImageSets/Main/train.txt "
                                           r"\(this folder has: test, trainval\); set data.train_split_name"):
        build_dataset(plain_cfg(voc, tmp_path, train_split_name="train"), "train")
    with pytest.raises(TaglessError, match=r"nope.txt \(this folder has: test, trainval\); set data.test_split_name"):
        build_dataset(plain_cfg(voc, tmp_path, test_split_name="nope"), "all")
    empty = tmp_path / "empty"
    (empty / "ImageSets" / "Main").mkdir(parents=True)
    with pytest.raises(TaglessError, match=r"trainval.txt \(no split lists there\)"):
        build_dataset(plain_cfg(empty, tmp_path), "train")


@pytest.fixture
def own_classes(tmp_path):
    root = tmp_path / "digits_voc"
    write_voc(root, {
        "x1": (20, 20, [obj("d7", (1, 1, 10, 10)), obj("d5", (11, 11, 20, 20), difficult=1)]),
        "x2": (20, 20, [obj("d5", (1, 1, 10, 10)), obj("dog", (2, 2, 8, 8))]),
        "x3": (20, 20, [obj("d2", (1, 1, 10, 10))]),  # d2 only in the test split
    }, {"trainval": ["x1", "x2"], "test": ["x3"]})
    return root


def test_own_class_names_without_data_classes(own_classes, tmp_path):
    train = build_dataset(plain_cfg(own_classes, tmp_path), "train")
    test = build_dataset(plain_cfg(own_classes, tmp_path), "test")
    assert train.classes == test.classes == ["d2", "d5", "d7", "dog"]
    assert train.targets.tolist() == [[0, -1, 1, 0], [0, 1, 0, 1]]
    assert test.targets.tolist() == [[1, 0, 0, 0]]
    np.testing.assert_allclose(train.boxes[0][:, 4], [2, 1])
    note = "classes: the 4 object names found in the annotations (not the 20 VOC classes)"
    assert train.notes == test.notes == [note]
    limited = build_dataset(plain_cfg(own_classes, tmp_path, limit=1), "train")
    assert limited.classes == train.classes  # the class list does not depend on the rows kept


def test_explicit_classes_with_an_unknown_object(own_classes, tmp_path):
    ds = build_dataset(plain_cfg(own_classes, tmp_path, classes=["d7", "d5", "dog"]), "train")
    assert ds.classes == ["d7", "d5", "dog"] and ds.notes == []
    with pytest.raises(TaglessError, match="x3.xml: object class 'd2' is not in the class list"):
        build_dataset(plain_cfg(own_classes, tmp_path, classes=["d7", "d5", "dog"]), "test")


def test_each_annotation_read_once(own_classes, tmp_path, monkeypatch):
    import tagless.data.sources.voc as voc_module

    read = []
    real = voc_module.parse_xml
    monkeypatch.setattr(voc_module, "parse_xml", lambda path, *a: read.append(str(path)) or real(path, *a))
    build_dataset(plain_cfg(own_classes, tmp_path, cache_dir=""), "all")
    assert sorted(p.rsplit("/", 1)[1] for p in read) == ["x1.xml", "x2.xml", "x3.xml"]
