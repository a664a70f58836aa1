"""CSV labels: multi-label, partial (negatives column), single-positive, splits, bad rows."""
import numpy as np
import pytest
from PIL import Image

from tagless.data import DataConfig, build_dataset
from tagless.errors import TaglessError


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(6):
        Image.new("RGB", (9, 7), (i * 30, 0, 0)).save(folder / f"im{i}.png")
    return folder


def write_csv(folder, text, name="labels.csv"):
    path = folder / name
    path.write_text(text)
    return path


def load(path, tmp_path, split="all", **kw):
    return build_dataset(DataConfig(source="csv", root=str(path), image_size=4,
                                    cache_dir=str(tmp_path / "cache"), **kw), split)


def test_multi_label(images, tmp_path):
    path = write_csv(images, "path,labels\nim0.png,cat;dog\nim1.png,dog\nim2.png,\nim3.png, bird ; cat \n")
    ds = load(path, tmp_path)
    assert ds.classes == ["bird", "cat", "dog"] and ds.label_kind == "multi"
    assert ds.targets.dtype == np.int8
    assert ds.targets.tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0], [1, 1, 0]]
    assert ds.paths[3] == str(images / "im3.png")
    assert ds.images[3, 0, 0].tolist() == [90, 0, 0]


def test_partial_labels_with_negatives_column(images, tmp_path):
    path = write_csv(images, "path,labels,negatives\n"
                             "im0.png,cat,dog\n"       # bird unknown
                             "im1.png,,cat;bird\n"      # no positives, dog unknown
                             "im2.png,dog,*\n"          # fully annotated
                             "im3.png,bird;dog,\n")     # cat unknown
    ds = load(path, tmp_path)
    assert ds.label_kind == "partial" and ds.classes == ["bird", "cat", "dog"]
    assert ds.targets.tolist() == [[-1, 1, 0], [0, 0, -1], [0, 0, 1], [1, -1, 1]]


def test_single_positive_and_full_detection(images, tmp_path):
    sp = write_csv(images, "path,labels,negatives\nim0.png,cat,\nim1.png,dog,\n", "sp.csv")
    ds = load(sp, tmp_path)
    assert ds.label_kind == "single_positive" and ds.targets.tolist() == [[1, -1], [-1, 1]]
    full = write_csv(images, "path,labels,negatives\nim0.png,cat,*\nim1.png,dog,cat\n", "full.csv")
    assert load(full, tmp_path).label_kind == "multi"
    forced = write_csv(images, "path,labels\nim0.png,cat\nim1.png,dog\n", "forced.csv")
    ds = load(forced, tmp_path, label_kind="single_positive")
    assert ds.label_kind == "single_positive" and ds.targets.tolist() == [[1, -1], [-1, 1]]
    ds = load(forced, tmp_path, label_kind="single")
    assert ds.label_kind == "single" and ds.targets.dtype == np.int64 and ds.targets.tolist() == [0, 1]
    with pytest.raises(TaglessError, match=r"sp.csv:2: row does not fit label_kind 'multi'"):
        load(sp, tmp_path, label_kind="multi")


def test_class_list_and_outside_label(images, tmp_path):
    path = write_csv(images, "path,labels\nim0.png,cat\nim1.png,dog;cow\n")
    ds = load(path, tmp_path, classes=["dog", "cat", "cow", "emu"])
    assert ds.targets.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0]]
    with pytest.raises(TaglessError, match=r"labels.csv:3: label 'cow' is not in the class list"):
        load(path, tmp_path, classes=["dog", "cat"])


@pytest.mark.parametrize("text, message", [
    ("path,tags\nim0.png,cat\n", r"labels.csv:1: missing column 'labels'"),
    ("path,labels\nim0.png,cat\nim1.png\n", r"labels.csv:3: expected 2 columns"),
    ("path,labels\nim0.png,cat\n,dog\n", r"labels.csv:3: empty path"),
    ("path,labels,negatives\nim0.png,cat,dog\nim1.png,dog,dog\n", r"labels.csv:3: label 'dog' is both"),
    ("path,labels,split\nim0.png,cat,train\nim1.png,dog,holdout\n", r"labels.csv:3: split must be"),
    ("path,labels\n", r"labels.csv: no rows"),
])
def test_bad_rows_name_file_and_line(images, tmp_path, text, message):
    with pytest.raises(TaglessError, match=message):
        load(write_csv(images, text), tmp_path)


def test_split_column_and_seeded_split(images, tmp_path):
    path = write_csv(images, "path,labels,split\nim0.png,a,train\nim1.png,b,test\n"
                             "im2.png,a,val\nim3.png,b,TRAIN\n")
    train, test = load(path, tmp_path, "train"), load(path, tmp_path, "test")
    assert [p[-7:] for p in train.paths] == ["im0.png", "im3.png"]
    assert [p[-7:] for p in test.paths] == ["im1.png", "im2.png"]
    rows = "".join(f"im{i}.png,a\n" for i in range(6))
    seeded = write_csv(images, "path,labels\n" + rows, "seeded.csv")
    train = load(seeded, tmp_path, "train", test_fraction=0.5)
    test = load(seeded, tmp_path, "test", test_fraction=0.5)
    assert len(train) == len(test) == 3 and not set(train.paths) & set(test.paths)


def test_paths_absolute_or_relative_to_root(images, tmp_path):
    elsewhere = tmp_path / "lists"
    elsewhere.mkdir()
    path = write_csv(elsewhere, f"path,labels\n{images / 'im1.png'},x\nim2.png,y\n")
    cfg = DataConfig(source="csv", csv_path=str(path), root=str(images), image_size=4,
                     cache_dir=str(tmp_path / "cache"))
    ds = build_dataset(cfg, "all")
    assert ds.paths == [str(images / "im1.png"), str(images / "im2.png")]
    missing = write_csv(elsewhere, "path,labels\nnope.png,x\n", "missing.csv")
    with pytest.raises(TaglessError, match="nope.png"):
        load(missing, tmp_path, on_corrupt="fail")
    with pytest.raises(TaglessError, match="CSV file not found"):
        load(tmp_path / "absent.csv", tmp_path)
