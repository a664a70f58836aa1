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


# --- label separator: data.label_separator = auto | ; | , | whitespace -------------------------

DIGIT_ROWS = [[0, 3, 5], [1, 2], [4, 6, 7], [8, 9], [0, 9], [2, 5, 8], [3], [1, 4, 7], [6, 9],
              [0, 1, 2], [3, 4], [5, 6, 7], [7, 8, 9], [0, 5], [1, 6], [2, 7], [3, 8], [4, 9],
              [0, 2, 4], [1, 3, 5], [6, 8], [7, 9, 0], [2, 3]]


@pytest.fixture
def many_images(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(len(DIGIT_ROWS)):
        Image.new("RGB", (5, 5), (i, 0, 0)).save(folder / f"im{i}.png")
    return folder


def digit_csv(folder, join, quote=False, name="labels.csv"):
    cells = [join.join(str(d) for d in row) for row in DIGIT_ROWS]
    cells = [f'"{c}"' if quote else c for c in cells]
    return write_csv(folder, "path,labels\n" + "".join(f"im{i}.png,{c}\n" for i, c in enumerate(cells)), name)


def expected_digits():
    want = np.zeros((len(DIGIT_ROWS), 10), np.int8)
    for r, row in enumerate(DIGIT_ROWS):
        want[r, row] = 1
    return want


@pytest.mark.parametrize("join, quote", [(";", False), (",", True), (" ", False), ("  ", False),
                                         ("; ", False), (", ", True)])
def test_auto_separator_gives_the_digit_classes(many_images, tmp_path, join, quote):
    path = digit_csv(many_images, join, quote)
    ds = load(path, tmp_path)
    assert ds.classes == [str(d) for d in range(10)] and ds.label_kind == "multi"
    assert ds.targets.shape == (len(DIGIT_ROWS), 10)
    assert (ds.targets == expected_digits()).all()


@pytest.mark.parametrize("join, quote, separator", [(";", False, ";"), (",", True, ","),
                                                    (" ", False, "whitespace"), ("\t ", False, "whitespace")])
def test_explicit_separator_matches_auto(many_images, tmp_path, join, quote, separator):
    ds = load(digit_csv(many_images, join, quote), tmp_path, label_separator=separator)
    assert ds.classes == [str(d) for d in range(10)] and (ds.targets == expected_digits()).all()


def test_explicit_separator_overrides_auto(many_images, tmp_path):
    path = digit_csv(many_images, " ")
    combos = {" ".join(str(d) for d in row) for row in DIGIT_ROWS}
    ds = load(path, tmp_path, label_separator=";")  # every combination is its own class
    assert len(ds.classes) == len(combos) == len(DIGIT_ROWS) and "0 3 5" in ds.classes
    assert ((ds.targets == 1).sum(1) == 1).all()
    ds = load(path, tmp_path, label_separator=",")
    assert len(ds.classes) == len(DIGIT_ROWS)


def test_names_with_spaces_and_semicolons(images, tmp_path):
    path = write_csv(images, "path,labels\n"
                             "im0.png,traffic light;person\n"
                             "im1.png,stop sign;fire hydrant;person\n"
                             "im2.png,traffic light\n"
                             "im3.png,hot dog;teddy bear\n"
                             "im4.png,fire hydrant;stop sign\n"
                             "im5.png,teddy bear\n")
    ds = load(path, tmp_path)  # ';' gives 6 classes, whitespace 13
    assert ds.classes == ["fire hydrant", "hot dog", "person", "stop sign", "teddy bear", "traffic light"]
    assert ds.targets.tolist() == [[0, 0, 1, 0, 0, 1], [1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1],
                                   [0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0]]
    words = load(path, tmp_path, label_separator="whitespace")
    assert len(words.classes) == 13 and {"traffic", "light;person", "bear"} <= set(words.classes)


def test_single_label_names_with_spaces(images, tmp_path):
    """Only whitespace occurs, inside names: no split wins when it is clearly smaller."""
    path = write_csv(images, "path,labels\nim0.png,traffic light\nim1.png,stop sign\n"
                             "im2.png,fire hydrant\nim3.png,traffic light\n")
    ds = load(path, tmp_path)
    assert ds.classes == ["fire hydrant", "stop sign", "traffic light"]
    assert ds.targets.tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]]


@pytest.mark.parametrize("text, message", [
    # ';' gives 4 classes (a b, c, d e, f), whitespace 6 (a, b;c, d, e;f, c, f): neither clearly wins
    ("path,labels\nim0.png,a b;c\nim1.png,d e;f\nim2.png,c\nim3.png,f\n",
     r"^\S*labels.csv: ambiguous label separator: ';' gives 4 classes, whitespace gives 6 classes; "
     r"set data.label_separator$"),
    # only whitespace, inside names or between labels: cannot tell on 3 rows
    ("path,labels\nim0.png,golden retriever\nim1.png,labrador retriever\nim2.png,cat\n",
     r"labels.csv: ambiguous label separator: ';' gives 3 classes, whitespace gives 4 classes;"),
    # ';' gives a, b,c, c,d; ',' gives a;b, c, d;a
    ('path,labels\nim0.png,"a;b,c"\nim1.png,"c,d;a"\n',
     r"labels.csv: ambiguous label separator: ';' gives 3 classes, ',' gives 3 classes;"),
])
def test_ambiguous_separator_is_a_one_line_error(images, tmp_path, text, message):
    with pytest.raises(TaglessError, match=message) as err:
        load(write_csv(images, text), tmp_path)
    assert "\n" not in str(err.value)


def negatives_for(r, row):
    """Row r's negatives: '*' (all others), two digits not in the row, or none."""
    if r % 3 == 0:
        return "*"
    return [d for d in range(10) if d not in row][:2] if r % 3 == 1 else []


@pytest.mark.parametrize("join, quote", [(";", False), (",", True), (" ", False)])
def test_negatives_use_the_same_separator(many_images, tmp_path, join, quote):
    def cell(names):
        text = join.join(str(n) for n in names)
        return f'"{text}"' if quote and len(names) > 1 else text
    lines, want = [], np.full((len(DIGIT_ROWS), 10), -1, np.int8)
    for r, row in enumerate(DIGIT_ROWS):
        neg = negatives_for(r, row)
        lines.append(f"im{r}.png,{cell(row)},{neg if neg == '*' else cell(neg)}\n")
        want[r, list(range(10)) if neg == "*" else neg] = 0
        want[r, row] = 1
    path = write_csv(many_images, "path,labels,negatives\n" + "".join(lines))
    ds = load(path, tmp_path)
    assert ds.classes == [str(d) for d in range(10)] and ds.label_kind == "partial"
    assert (ds.targets == want).all()
    assert (ds.targets[::3] != -1).all()  # '*' rows fully known


def test_image_folder_flat_csv_single_label_auto(images, tmp_path):
    csv_file = write_csv(tmp_path, "path,labels\nim0.png,cat\nim1.png,dog\nim2.png,\nim3.png,dog\n")
    cfg = DataConfig(source="image_folder", root=str(images), csv_path=str(csv_file), image_size=4,
                     cache_dir=str(tmp_path / "cache"), test_fraction=0.0)
    ds = build_dataset(cfg, "train")
    assert ds.label_kind == "single" and ds.classes == ["cat", "dog"]
    assert ds.targets.tolist() == [0, 1, -1, 1]
    multi = write_csv(tmp_path, "path,labels\nim0.png,cat dog\nim1.png,dog\n", "multi.csv")
    cfg.csv_path = str(multi)
    with pytest.raises(TaglessError, match="ambiguous label separator"):
        build_dataset(cfg, "train")
    cfg.label_separator = "whitespace"
    ds = build_dataset(cfg, "train")
    assert ds.label_kind == "multi" and ds.targets.tolist() == [[1, 1], [0, 1]]
