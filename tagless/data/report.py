"""``tagless data``: print and write what tagless read from a data section (see summary.py),
with sample images per class, the class-count chart, and boxes drawn when there are boxes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tagless.data.summary import class_counts, data_facts
from tagless.tables import format_table


def _samples(ds, per_class: int = 8, max_classes: int = 20, seed: int = 0):
    """(images, titles, rows): up to ``per_class`` images of each of the first classes; for
    multi-label data the positives' names go under each image."""
    rng = np.random.default_rng(seed)
    t = np.asarray(ds.targets)
    picks, titles = [], []
    for c, name in list(enumerate(ds.classes))[:max_classes]:
        members = np.flatnonzero(t == c) if t.ndim == 1 else np.flatnonzero(t[:, c] == 1)
        members = rng.permutation(members)[:per_class]
        for j in range(per_class):
            i = members[j] if j < len(members) else None
            picks.append(i)
            if t.ndim == 1 or i is None:
                titles.append(name if j == 0 else "")
            else:
                titles.append(",".join(ds.classes[k] for k in np.flatnonzero(t[i] == 1))[:18])
    blank = np.zeros_like(ds.images[0])
    return np.stack([ds.images[i] if i is not None else blank for i in picks]), titles


def write_data_report(facts: dict, datasets: dict, out: Path) -> Path:
    """``out`` (an .html file) and its PNGs in ``<out stem>_files/``."""
    from tagless.report.html import render_html
    from tagless.report.plots import plot_boxes, plot_class_counts, plot_image_grid

    out = Path(out).absolute()
    files = out.with_name(out.stem + "_files")
    train = datasets["train"]
    images, titles = _samples(train)
    pngs = {"grid": plot_image_grid(images, files / "samples.png", titles=titles, nrow=8,
                                    suptitle="training images per class (labels under multi-label images)"),
            "counts": plot_class_counts({s: class_counts(ds) for s, ds in datasets.items()}, train.classes,
                                        files / "class_counts.png")}
    if train.boxes is not None:
        idx = np.random.default_rng(1).permutation(len(train))[:8]
        pngs["boxes"] = plot_boxes(train.images[idx], [train.boxes[i] for i in idx], train.classes, files / "boxes.png")
    rel = {k: Path(os.path.relpath(p, out.parent)).as_posix() for k, p in pngs.items()}
    split_rows = [{"split": s, **{k: v for k, v in f.items() if not isinstance(v, (dict, list))}}
                  for s, f in facts["splits"].items()]
    sections = [
        {"title": "What tagless read", "text": _header(facts) + "\n\n" + "\n".join(facts["notes"]),
         "table": split_rows},
        {"title": "Flags", "text": "Nothing suspicious." if not facts["flags"] else "",
         "table": facts["flags"] or None},
        {"title": "Classes", "table": _class_rows(facts), "images": [rel["counts"]]},
        {"title": "Sample images", "images": [rel["grid"]]},
    ]
    if "boxes" in rel:
        sections.append({"title": "Boxes", "images": [rel["boxes"]]})
    skipped = [{"split": s, "file": p} for s, f in facts["splits"].items() for p in f.get("skipped", [])]
    if skipped:
        sections.append({"title": "Unreadable files skipped", "table": skipped})
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render_html(f"tagless data: {facts['source']}", [{k: v for k, v in s.items() if v is not None}
                                                           for s in sections], base_dir=out.parent)
    out.write_text(page, encoding="utf-8")
    return out


def _header(facts: dict) -> str:
    root = f" at {facts['root']}" if facts["root"] else ""
    return (f"source {facts['source']}{root}; images resized to {facts['image_size']} px; label kind "
            f"{facts['label_kind']}; {len(facts['classes'])} classes")


def _class_rows(facts: dict) -> list[dict]:
    return [{"class": c, **{s: f.get("class_counts", {}).get(c) for s, f in facts["splits"].items()}}
            for c in facts["classes"]]


def print_facts(facts: dict, report: Path | None) -> None:
    print(f"tagless data: {_header(facts)}")
    rows = []
    for split, f in facts["splits"].items():
        row = {"split": split, "images": f["images"]}
        if "labels_per_image" in f:
            row["labels / image"] = f["labels_per_image"]["mean"]
            row["unknown (%)"] = 100 * f["unknown_share"]
        if "unlabelled" in f:
            row["unlabelled"] = f["unlabelled"]
        if "boxes_per_image" in f:
            row["boxes / image"] = f["boxes_per_image"]["mean"]
            row.update({f"objects {k}": v for k, v in f.get("object_sizes", {}).items()})
        row["skipped"] = len(f.get("skipped", []))
        if f.get("error"):
            row["error"] = f["error"]
        rows.append(row)
    print(format_table(rows))
    print(format_table(_class_rows(facts), title="images per class (positives for multi-label data)"))
    for split, f in facts["splits"].items():
        if "labels_per_image" in f:
            hist = ", ".join(f"{k}: {v}" for k, v in f["labels_per_image"]["histogram"].items())
            print(f"labels per image ({split}): {hist}")
        for path in f.get("skipped", []):
            print(f"skipped ({split}): {path}")
    for note in facts["notes"]:
        print(f"note: {note}")
    for fl in facts["flags"]:
        print(f"FLAG: {fl['flag']}\n      fix: {fl['fix']}")
    if not facts["flags"]:
        print("no flags: nothing suspicious found")
    cache = facts["cache"]
    if cache["entries"]:
        print(f"cache: {', '.join(cache['entries'])} ({cache['bytes'] / 2**20:.1f} MB)")
    if report is not None:
        print(f"report: {report}")


def run_data(config: str | None, overrides: list[str], out: str) -> dict:
    from tagless.config import load_config

    if config and "=" in config:  # `tagless data data.source=...`: no config, overrides only
        config, overrides = None, [config, *overrides]
    cfg = load_config(config, overrides).data
    facts, datasets = data_facts(cfg)
    report = write_data_report(facts, datasets, Path(out)) if out else None
    print_facts(facts, report)
    return facts | ({"report": str(report)} if report else {})
