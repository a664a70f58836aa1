"""Pascal VOC: `root/Annotations/<id>.xml`, `root/JPEGImages/<id>.jpg`,
`root/ImageSets/Main/<split name>.txt`.

Split lists: `train_split_name` / `test_split_name` name the files; left empty, the train
split is `trainval` (VOC2007), or `train` when there is no `trainval.txt`, and the test split
is `test`, or `val` when there is no `test.txt` (VOC2012, whose test labels are not public);
the fallbacks are noted. A missing split list's error names the split lists that do exist
(the plain ones, not the per-class `<class>_<split>.txt`).

Classes: `data.classes` when set (an object of another class is an error). Otherwise the 20
VOC classes when every object name in the annotations of both splits is one of them, else
the sorted set of names found there (noted), the same list for the train and test split.

Targets follow the VOC07 classification convention: 1 if the image has a non-difficult
object of the class, -1 (ignored by mAP and by masked losses) if it has only difficult
ones, else 0; label_kind 'multi'. Boxes keep every object; `extras['difficult']` is a bool
per box and `extras['area']` the box area in original image pixels (float32). VOC boxes
are 1-based inclusive pixel indices; they are stored as pixel edges (xmin - 1, ymin - 1,
xmax, ymax) before scaling. XML is parsed with defusedxml: an annotation that declares
entities (the "billion laughs" expansion) or reaches for external files is refused with a
one-line error naming it, whatever the XML library underneath.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import parse as parse_xml

from tagless.data.listing import Listing
from tagless.data.materialize import materialize
from tagless.data.splits import limit_only, require_dir, require_file, split_names
from tagless.errors import TaglessError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# (name, [x0, y0, x1, y1] as pixel edges, difficult) of each object in one annotation file
Objects = list[tuple[str, list[float], bool]]


def _sets_dir(root: Path) -> Path:
    return root / "ImageSets" / "Main"


def _split_lists(root: Path) -> list[str]:
    """Names of the plain split lists in ImageSets/Main (not the per-class `<class>_<split>`)."""
    folder = _sets_dir(root)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.txt") if p.is_file() and "_" not in p.stem)


FIELDS = ("train_split_name", "test_split_name")


def _voc_split_names(cfg, root: Path) -> tuple[list[str], list[str]]:
    """([train list name, test list name], notes): the config's names, else VOC's defaults for
    this folder (trainval, else train; test, else val)."""
    have = set(_split_lists(root))
    train = "train" if "train" in have and "trainval" not in have else "trainval"
    test = "val" if "val" in have and "test" not in have else "test"
    notes = []
    if not cfg.train_split_name and train == "train":
        notes.append("no ImageSets/Main/trainval.txt: train.txt is the train split")
    if not cfg.test_split_name and test == "val":
        notes.append("no ImageSets/Main/test.txt: val.txt is the test split")
    return split_names(cfg, "all", (train, test)), notes


def _image_ids(root: Path, name: str, field_name: str) -> list[str]:
    path = _sets_dir(root) / f"{name}.txt"
    if not path.is_file():
        have = _split_lists(root)
        listed = f"this folder has: {', '.join(have)}" if have else "no split lists there"
        raise TaglessError(f"VOC image set not found: {path.expanduser().absolute()} ({listed}); "
                           f"set data.{field_name}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _objects(xml_path: Path) -> Objects:
    """(name, [x0, y0, x1, y1], difficult) of each object in one annotation file."""
    try:
        tree = parse_xml(require_file(xml_path, "VOC annotation"))
        out = []
        for obj in tree.getroot().iter("object"):
            name = obj.findtext("name", "").strip()
            if not name:
                raise TaglessError(f"{xml_path}: an object has no <name>")
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = int(float(obj.findtext("difficult", "0") or 0)) == 1
            out.append((name, [x0 - 1, y0 - 1, x1, y1], difficult))
        return out
    except DefusedXmlException as exc:
        raise TaglessError(f"{xml_path}: refused: the XML declares entities or external references "
                           f"({type(exc).__name__}); a VOC annotation needs neither") from None
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, TaglessError):
            raise
        raise TaglessError(f"{xml_path}: not a VOC annotation ({type(exc).__name__}: {exc})") from exc


def load_voc(cfg, split: str):
    root = require_dir(cfg.root, "VOC folder")
    names, notes = _voc_split_names(cfg, root)
    wanted = {"train": [0], "test": [1]}.get(split, [0, 1])
    ids = list(dict.fromkeys(i for k in wanted for i in _image_ids(root, names[k], FIELDS[k])))
    ids = [ids[i] for i in limit_only(len(ids), cfg)]
    parsed: dict[str, Objects] = {}  # each annotation file is read once

    def objects(image_id: str) -> Objects:
        if image_id not in parsed:
            parsed[image_id] = _objects(root / "Annotations" / f"{image_id}.xml")
        return parsed[image_id]

    classes = list(cfg.classes)
    if not classes:  # from both splits' annotations, so train and test get the same list
        every = [i for k in (0, 1) if (_sets_dir(root) / f"{names[k]}.txt").is_file()
                 for i in _image_ids(root, names[k], FIELDS[k])]
        found = {name for image_id in dict.fromkeys(every) for name, _, _ in objects(image_id)}
        if found <= set(VOC_CLASSES):
            classes = list(VOC_CLASSES)
        else:
            classes = sorted(found)
            notes.append(f"classes: the {len(classes)} object names found in the annotations "
                         f"(not the {len(VOC_CLASSES)} VOC classes)")
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(ids), len(classes)), np.int8)
    boxes, difficult, area = [], [], []
    for r, image_id in enumerate(ids):
        rows = []
        for name, box, hard in objects(image_id):
            if name not in index:
                raise TaglessError(f"{root / 'Annotations' / f'{image_id}.xml'}: object class "
                                   f"{name!r} is not in the class list")
            c = index[name]
            if not hard:
                targets[r, c] = 1
            elif targets[r, c] == 0:
                targets[r, c] = -1
            rows.append(([*box, c], hard))
        boxes.append(np.asarray([b for b, _ in rows], np.float32).reshape(-1, 5))
        difficult.append(np.asarray([h for _, h in rows], bool))
        area.append(np.asarray([(b[2] - b[0]) * (b[3] - b[1]) for b, _ in rows], np.float32))
    listing = Listing(targets=targets, classes=classes, label_kind="multi", name="voc",
                      paths=[str(root / "JPEGImages" / f"{i}.jpg") for i in ids], boxes=boxes,
                      extras={"difficult": difficult, "area": area}, notes=notes)
    return materialize(cfg, listing, split)
