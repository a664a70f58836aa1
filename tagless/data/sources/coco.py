"""COCO instances JSON (`images`, `annotations` with `bbox` [x, y, w, h], `categories`).

`annotations` is the JSON path and `root` the image folder; both may contain `{split}`,
replaced by `train_split_name` / `test_split_name`, which default to COCO's names `train` and
`val` (e.g. `instances_{split}2017.json` reads instances_train2017.json and, as the test
split, instances_val2017.json, since COCO's test images have no public labels; noted). When
the file or folder for a split does not exist, the error lists those that match the pattern
(`{split}` as `*`) and names the setting to change.

Classes are the category names in category-id order (or `classes`). Targets: int8 N x C, 1
for every category with an annotation in the image, crowd (`iscrowd`) annotations included
since the class is present; 0 otherwise (images without annotations are kept, all 0).
Boxes: every annotation, with `extras['crowd']` (bool per box) to leave crowd boxes out
where detection-style metrics need it, and `extras['area']` (float32 per box) the
annotation's `area` in original image pixels (COCO's mask area, which its small / medium /
large sizes use; the box's w * h when the field is absent). Images are in image-id order.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np

from tagless.data.listing import Listing
from tagless.data.materialize import materialize
from tagless.data.splits import limit_only, require_dir, require_file, split_names
from tagless.errors import TaglessError


def _class_map(data: dict, classes: list[str], ann_path) -> tuple[list[str], dict[int, int]]:
    cats = sorted(data["categories"], key=lambda c: c["id"])
    classes = classes or [c["name"] for c in cats]
    index = {name: i for i, name in enumerate(classes)}
    mapping = {}
    for c in cats:
        if c["name"] not in index:
            raise TaglessError(f"{ann_path}: category {c['name']!r} (id {c['id']}) is not in the class list")
        mapping[c["id"]] = index[c["name"]]
    return classes, mapping


DEFAULT_SPLITS = ("train", "val")
FIELDS = ("train_split_name", "test_split_name")


def _split_path(pattern: str, name: str, field_name: str, what: str, folder: bool) -> Path:
    """`pattern` with `{split}` = `name`, checked to exist; when it does not and the pattern has
    `{split}`, the error lists what matches the pattern with `*` in its place."""
    given = pattern.replace("{split}", name)
    path = Path(given).expanduser().absolute()
    if "{split}" not in pattern or (path.is_dir() if folder else path.is_file()):
        return require_dir(given, what) if folder else require_file(given, what)
    pieces = str(Path(pattern).expanduser().absolute()).split("{split}")
    head = pieces[0]
    base = head if head.endswith(os.sep) else os.path.dirname(head)  # the folder above `{split}`
    wild = "*".join(pieces)
    matches = sorted(m for m in glob.glob("*".join(glob.escape(x) for x in pieces))
                     if (os.path.isdir(m) if folder else os.path.isfile(m)))
    shown = os.path.relpath(wild, base)
    listed = (f"matching {shown}: {', '.join(os.path.relpath(m, base) for m in matches)}" if matches
              else f"nothing matches {shown}")
    raise TaglessError(f"{what} not found: {path} ({listed}); set data.{field_name}")


def _listing(cfg, name: str, field_name: str) -> Listing:
    if not cfg.annotations:
        raise TaglessError("data.annotations must name the COCO instances JSON")
    ann_path = _split_path(cfg.annotations, name, field_name, "COCO annotations", folder=False)
    image_root = _split_path(cfg.root, name, field_name, "COCO image folder", folder=True)
    try:
        with open(ann_path) as f:
            data = json.load(f)
        classes, cat_map = _class_map(data, list(cfg.classes), ann_path)
        images = sorted(data["images"], key=lambda im: im["id"])
        row = {im["id"]: r for r, im in enumerate(images)}
        targets = np.zeros((len(images), len(classes)), np.int8)
        boxes = [[] for _ in images]
        crowd = [[] for _ in images]
        area = [[] for _ in images]
        for a in data.get("annotations", []):
            if a["image_id"] not in row or a["category_id"] not in cat_map:
                raise TaglessError(f"{ann_path}: annotation {a.get('id')} has unknown image_id "
                                   f"{a['image_id']} or category_id {a['category_id']}")
            r, c = row[a["image_id"]], cat_map[a["category_id"]]
            x, y, w, h = (float(v) for v in a["bbox"])
            targets[r, c] = 1
            boxes[r].append([x, y, x + w, y + h, c])
            crowd[r].append(bool(a.get("iscrowd", 0)))
            area[r].append(float(a["area"]) if a.get("area") is not None else w * h)
        paths = [str(image_root / im["file_name"]) for im in images]
    except TaglessError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise TaglessError(f"{ann_path}: not a COCO instances file ({type(exc).__name__}: {exc})") from exc
    return Listing(targets=targets, classes=classes, label_kind="multi", name="coco", paths=paths,
                   boxes=[np.asarray(b, np.float32).reshape(-1, 5) for b in boxes],
                   extras={"crowd": [np.asarray(c, bool) for c in crowd],
                           "area": [np.asarray(a, np.float32) for a in area]}, key_files=[str(ann_path)])


def load_coco(cfg, split: str):
    names = split_names(cfg, "all", DEFAULT_SPLITS)
    wanted = {"train": [0], "test": [1]}.get(split, [0, 1])
    parts = [_listing(cfg, names[k], FIELDS[k]) for k in wanted]
    if any(p.classes != parts[0].classes for p in parts):
        raise TaglessError("COCO train and test annotations have different categories; set data.classes")
    listing = Listing.concat(parts)
    if not cfg.test_split_name and "{split}" in cfg.annotations:
        note = (f"data.test_split_name unset: the test split is COCO's '{DEFAULT_SPLITS[1]}' "
                "files (COCO's test images have no public labels)")
        listing.notes = [note]
    return materialize(cfg, listing.take(limit_only(len(listing), cfg)), split)
