"""Image folders: `root/<class>/**/*.{jpg,jpeg,png,bmp,webp}` (single label per image).

Split folders: a root with a `train/` folder is read as splits, each holding the class
folders (`root/train/<class>/...`), when it also has `test/` or `val/`, or when every
top-level folder is one of `train/`, `val/`, `test/` (so a root with only `train/` is not one
class named "train"). The test split is `test/`, else `val/` (noted), else it is carved out of
`train/` with the seeded `data.test_fraction` / `data.split_seed` (noted; train is the rest).
The classes are the class folders found in the split folders used (or `data.classes`).
Any other root: `root/<class>/...` with a seeded split. With `csv_path` set, the flat form:
images anywhere under `root`, labels from a `path,labels` CSV (see csvfile.py; auto kind
'single' when every row has at most one label).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tagless.data.decode import IMAGE_EXTENSIONS
from tagless.data.listing import Listing
from tagless.data.materialize import materialize
from tagless.data.sources.csvfile import read_label_csv, select_split
from tagless.data.splits import choose, limit_only, require_dir, require_file
from tagless.errors import TaglessError


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path, classes: list[str]) -> Listing:
    index = {c: i for i, c in enumerate(classes)}
    paths, targets = [], []
    for d in _class_dirs(folder):
        if d.name not in index:
            raise TaglessError(f"class folder {d} is not in the class list {classes}")
        files = sorted(str(p) for p in d.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        paths += files
        targets += [index[d.name]] * len(files)
    return Listing(targets=np.array(targets, np.int64), classes=list(classes), label_kind="single",
                   name="image_folder", paths=paths)


SPLIT_FOLDERS = ("train", "val", "test")


def _split_dirs(root: Path) -> tuple[Path, Path | None] | None:
    """(train, test) split folders, test None when it is to be carved out of train; None when
    the root is not split (its folders are the classes)."""
    train = root / "train"
    if not train.is_dir():
        return None
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if test is not None or all(d.name in SPLIT_FOLDERS for d in _class_dirs(root)):
        return train, test
    return None  # train/ next to other folders, no test/ or val/: a class named "train"


def _split_notes(dirs: tuple[Path, Path | None] | None, cfg) -> list[str]:
    if dirs is None or (dirs[1] is not None and dirs[1].name == "test"):
        return []
    if dirs[1] is not None:
        return ["no test/ folder: val/ is the test split"]
    return [(f"no test/ or val/ folder: the test split is carved out of train/ with "
             f"data.test_fraction={cfg.test_fraction} (seed data.split_seed={cfg.split_seed})")]


def load_image_folder(cfg, split: str):
    root = require_dir(cfg.root, "image folder")
    if cfg.csv_path:
        csv_path = require_file(cfg.csv_path, "CSV file")
        listing, splits = read_label_csv(csv_path, root, list(cfg.classes), cfg.label_kind,
                                         default_kind="single", name="image_folder",
                                         separator=cfg.label_separator)
        return materialize(cfg, select_split(listing, splits, cfg, split), split)
    dirs = _split_dirs(root)
    given = dirs is not None and dirs[1] is not None  # the test split is a folder
    every = [root] if dirs is None else [d for d in dirs if d is not None]
    tops = {"train": every[:1], "test": every[1:]}.get(split, every) if given else every
    classes = list(cfg.classes) or sorted({d.name for top in every for d in _class_dirs(top)})
    if not classes:
        where = root if dirs is None else " and ".join(str(d) for d in every)
        layout = "root/<class>/<image>" if dirs is None else "root/train/<class>/<image>"
        raise TaglessError(f"no class folders under {where} (expected {layout})")
    listing = Listing.concat([_scan(top, classes) for top in tops])
    if len(listing) == 0:
        raise TaglessError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    listing.notes = _split_notes(dirs, cfg)
    idx = limit_only(len(listing), cfg) if given else choose(len(listing), cfg, split)
    return materialize(cfg, listing.take(idx), split)
