"""What tagless read from a data section: facts per split, and the suspicious patterns that
usually mean a format mistake, each with its fix (``tagless data``, and the one-line summary
a run prints when it starts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagless.data.config import DataConfig
from tagless.data.dataset import ImageDataset
from tagless.data.object_sizes import object_size_buckets
from tagless.errors import TaglessError

SEPARATORS = {";": "';'", ",": "','", " ": "spaces"}
SPLIT_NAMES = ("train", "test", "val")


def class_counts(ds: ImageDataset) -> np.ndarray:
    """Images per class: single labels by their label, multi-label data by its positives."""
    t = np.asarray(ds.targets)
    if t.ndim == 1:
        return np.bincount(t[t >= 0], minlength=len(ds.classes))
    return (t == 1).sum(0)


def _histogram(values: np.ndarray) -> dict[str, int]:
    counts = np.bincount(values)
    return {str(i): int(c) for i, c in enumerate(counts) if c}


def split_facts(ds: ImageDataset, image_size: int, size_thresholds: tuple[float, float] = (1024.0, 9216.0)) -> dict:
    """Counts of one split (numbers stay numbers, for ``--json``); objects are counted as
    small / medium / large by their area in original pixels (``size_thresholds``)."""
    t = np.asarray(ds.targets)
    facts = {"images": len(ds), "label_kind": ds.label_kind,
             "class_counts": dict(zip(ds.classes, class_counts(ds).tolist()))}
    if t.ndim == 1:
        facts["unlabelled"] = int((t < 0).sum())
    else:
        per_image = (t == 1).sum(1)
        facts["labels_per_image"] = {"mean": float(per_image.mean()), "histogram": _histogram(per_image)}
        facts["unknown_share"] = float((t == -1).mean())
    if ds.boxes is not None:
        per_image = np.array([len(b) for b in ds.boxes])
        facts["boxes_per_image"] = {"mean": float(per_image.mean()), "histogram": _histogram(per_image)}
        if t.ndim == 2:
            bucket, names, _ = object_size_buckets(t, ds.boxes, image_size, thresholds=size_thresholds,
                                                   areas=ds.extras.get("area"))
            facts["object_sizes"] = {n: int((bucket == i).sum()) for i, n in enumerate(names)}
    if ds.source_sizes is not None and len(ds.source_sizes):
        w, h = ds.source_sizes[:, 0], ds.source_sizes[:, 1]
        facts["source_sizes"] = {"min": [int(w.min()), int(h.min())], "max": [int(w.max()), int(h.max())],
                                 "aspect_min": float((w / h).min()), "aspect_max": float((w / h).max())}
    facts["skipped"] = list(ds.skipped)
    facts["cache"] = ds.cache_path
    return facts


def _cache_size(path: str) -> int:
    folder = Path(path)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if path and folder.is_dir() else 0


def flags(splits: dict[str, dict], classes: list[str], source: str, image_size: int) -> list[dict]:
    """The suspicious patterns, each {flag, fix}."""
    out = []

    def flag(what: str, fix: str):
        out.append({"flag": what, "fix": fix})

    for name, facts in splits.items():
        if facts.get("error") or facts["images"] == 0:
            flag(f"the {name} split is empty ({facts.get('error', 'no images')})",
                 f"add the {name} split, or check data.root and the split names "
                 f"(data.train_split_name / test_split_name)")
    train = splits.get("train", {})
    n_train = train.get("images", 0)
    if n_train and len(classes) > max(1, n_train // 10):
        flag(f"{len(classes)} classes for {n_train} training images (more than a tenth of the images)",
             "labels may be read as combinations: check data.label_separator for a CSV, or the folder layout")
    odd = sorted({SEPARATORS[ch] for c in classes for ch in SEPARATORS if ch in c})
    if odd:
        example = next(c for c in classes if any(ch in c for ch in SEPARATORS))
        flag(f"class names contain {' and '.join(odd)} (e.g. {example!r}): the separator of another convention",
             "set data.label_separator to the character that separates labels in your file")
    if len(classes) == 1:
        if classes[0].lower() in SPLIT_NAMES:
            flag(f"a single class, named {classes[0]!r}: the split folder was read as a class",
                 "point data.root one level down, or add the missing split folder (test/ or val/)")
        else:
            flag(f"a single class ({classes[0]!r}): nothing to tell apart", "check data.root and the labels")
    for name, facts in splits.items():
        for cls, count in facts.get("class_counts", {}).items():
            if count == 1:
                flag(f"class {cls!r} has a single image in the {name} split",
                     "check its label (a typo makes a class of its own), or add images")
    sizes = train.get("source_sizes")
    if sizes:
        spread = (sizes["max"][0] * sizes["max"][1]) / max(1, sizes["min"][0] * sizes["min"][1])
        aspect = sizes["aspect_max"] / sizes["aspect_min"]
        if spread > 4 or aspect > 1.5:
            flag(f"images of very different sizes ({sizes['min'][0]}x{sizes['min'][1]} to "
                 f"{sizes['max'][0]}x{sizes['max'][1]}, aspect {sizes['aspect_min']:.2f} to "
                 f"{sizes['aspect_max']:.2f}) are all squished to {image_size}x{image_size}",
                 "crop or pad them to one aspect first, or raise data.image_size if small objects matter")
    return out


def data_facts(cfg: DataConfig) -> tuple[dict, dict[str, ImageDataset]]:
    """Both splits through the cache, their facts, the notes and the flags."""
    from tagless.data import build_dataset

    datasets, splits = {}, {}
    for split in ("train", "test"):
        try:
            datasets[split] = build_dataset(cfg, split)
            splits[split] = split_facts(datasets[split], cfg.image_size, tuple(cfg.object_size_thresholds))
        except TaglessError as e:
            if split == "train":
                raise
            splits[split] = {"images": 0, "error": str(e)}
    train = datasets["train"]
    notes = list(dict.fromkeys(n for ds in datasets.values() for n in ds.notes))
    caches = sorted({f["cache"] for f in splits.values() if f.get("cache")})
    facts = {
        "source": cfg.source, "root": cfg.root, "image_size": cfg.image_size, "label_kind": train.label_kind,
        "classes": list(train.classes), "splits": splits, "notes": notes,
        "cache": {"dir": cfg.cache_dir, "entries": caches, "bytes": sum(_cache_size(c) for c in caches)},
        "flags": flags(splits, list(train.classes), cfg.source, cfg.image_size),
    }
    return facts, datasets


def facts_header(facts: dict) -> str:
    """One sentence: the source, its root, image size, label kind and number of classes."""
    root = f" at {facts['root']}" if facts["root"] else ""
    return (f"source {facts['source']}{root}; images resized to {facts['image_size']} px; label kind "
            f"{facts['label_kind']}; {len(facts['classes'])} classes")


def class_rows(facts: dict) -> list[dict]:
    """Per class, its image count in each split."""
    return [{"class": c, **{s: f.get("class_counts", {}).get(c) for s, f in facts["splits"].items()}}
            for c in facts["classes"]]


def one_line(cfg: DataConfig, train: ImageDataset, test: ImageDataset | None,
             val: ImageDataset | None = None) -> str:
    """``data: digits, 1438 train / 359 test images at 16 px, single-label, 10 classes`` (with
    ``val``: ``640 train / 160 val / 200 test``)."""
    where = f" ({cfg.root})" if cfg.root else ""
    sizes = (f"{len(train)} train" + (f" / {len(val)} val" if val is not None else "")
             + (f" / {len(test)} test" if test is not None else ""))
    kind = {"single": "single-label", "multi": "multi-label"}.get(train.label_kind, train.label_kind)
    extra = f"; {len(train.skipped)} unreadable files skipped" if train.skipped else ""
    return (f"data: {cfg.source}{where}, {sizes} images at {cfg.image_size} px, {kind}, "
            f"{len(train.classes)} classes{extra}")
