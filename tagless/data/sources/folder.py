"""Image folders: `root/<class>/**/*.{jpg,jpeg,png,bmp,webp}` (single label per image).

When `root/train` and `root/test` (or `root/val`) exist they are the splits; otherwise a
seeded split. With `csv_path` set, the flat form: images anywhere under `root`, labels from a
`path,labels` CSV (see csvfile.py; auto kind 'single' when every row has at most one label).
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


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    test = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test is not None else None


def load_image_folder(cfg, split: str):
    root = require_dir(cfg.root, "image folder")
    if cfg.csv_path:
        csv_path = require_file(cfg.csv_path, "CSV file")
        listing, splits = read_label_csv(csv_path, root, list(cfg.classes), cfg.label_kind,
                                         default_kind="single", name="image_folder")
        return materialize(cfg, select_split(listing, splits, cfg, split), split)
    dirs = _split_dirs(root)
    tops = [root] if dirs is None else {"train": [dirs[0]], "test": [dirs[1]]}.get(split, list(dirs))
    classes = list(cfg.classes) or sorted({d.name for top in (dirs or [root]) for d in _class_dirs(top)})
    if not classes:
        raise TaglessError(f"no class folders under {root} (expected root/<class>/<image>)")
    listing = Listing.concat([_scan(top, classes) for top in tops])
    if len(listing) == 0:
        raise TaglessError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    idx = choose(len(listing), cfg, split) if dirs is None else limit_only(len(listing), cfg)
    return materialize(cfg, listing.take(idx), split)
