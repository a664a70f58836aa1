"""Pascal VOC: `root/Annotations/<id>.xml`, `root/JPEGImages/<id>.jpg`,
`root/ImageSets/Main/<split name>.txt` (train_split_name / test_split_name, e.g. trainval/test).

Targets follow the VOC07 classification convention: 1 if the image has a non-difficult
object of the class, -1 (ignored by mAP and by masked losses) if it has only difficult
ones, else 0; label_kind 'multi'. Boxes keep every object; `extras['difficult']` is a bool
per box. VOC boxes are 1-based inclusive pixel indices; they are stored as pixel edges
(xmin - 1, ymin - 1, xmax, ymax) before scaling. XML is parsed with the standard library:
only read annotation files you trust.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from tagless.data.listing import Listing
from tagless.data.materialize import materialize
from tagless.data.splits import limit_only, require_dir, require_file, split_names
from tagless.errors import TaglessError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def _image_ids(root: Path, name: str) -> list[str]:
    path = require_file(root / "ImageSets" / "Main" / f"{name}.txt", "VOC image set")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _objects(xml_path: Path, index: dict[str, int]) -> list[tuple[list[float], bool]]:
    """[(x0, y0, x1, y1, class), difficult] of each object in one annotation file."""
    try:
        tree = ET.parse(require_file(xml_path, "VOC annotation"))
        out = []
        for obj in tree.getroot().iter("object"):
            name = obj.findtext("name", "").strip()
            if name not in index:
                raise TaglessError(f"{xml_path}: object class {name!r} is not in the class list")
            bb = obj.find("bndbox")
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = int(float(obj.findtext("difficult", "0") or 0)) == 1
            out.append(([x0 - 1, y0 - 1, x1, y1, index[name]], difficult))
        return out
    except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, TaglessError):
            raise
        raise TaglessError(f"{xml_path}: not a VOC annotation ({type(exc).__name__}: {exc})") from exc


def load_voc(cfg, split: str):
    root = require_dir(cfg.root, "VOC folder")
    ids = list(dict.fromkeys(i for name in split_names(cfg, split) for i in _image_ids(root, name)))
    ids = [ids[i] for i in limit_only(len(ids), cfg)]
    classes = list(cfg.classes) or list(VOC_CLASSES)
    index = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(ids), len(classes)), np.int8)
    boxes, difficult = [], []
    for r, image_id in enumerate(ids):
        objects = _objects(root / "Annotations" / f"{image_id}.xml", index)
        for box, hard in objects:
            c = box[4]
            if not hard:
                targets[r, c] = 1
            elif targets[r, c] == 0:
                targets[r, c] = -1
        boxes.append(np.asarray([b for b, _ in objects], np.float32).reshape(-1, 5))
        difficult.append(np.asarray([h for _, h in objects], bool))
    listing = Listing(targets=targets, classes=classes, label_kind="multi", name="voc",
                      paths=[str(root / "JPEGImages" / f"{i}.jpg") for i in ids], boxes=boxes,
                      extras={"difficult": difficult})
    return materialize(cfg, listing, split)
