"""The report of ``tagless data``: what tagless read from a data section
(:func:`tagless.data.summary.data_facts`) as HTML, with sample images per class, the
class-count chart, and boxes drawn when there are boxes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tagless.data.summary import class_counts, class_rows, facts_header
from tagless.files import write_text_atomic
from tagless.report.html import render_html
from tagless.report.plots import plot_boxes, plot_class_counts, plot_image_grid


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
        {"title": "What tagless read", "text": facts_header(facts) + "\n\n" + "\n".join(facts["notes"]),
         "table": split_rows},
        {"title": "Flags", "text": "Nothing suspicious." if not facts["flags"] else "",
         "table": facts["flags"] or None},
        {"title": "Classes", "table": class_rows(facts), "images": [rel["counts"]]},
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
    return write_text_atomic(out, page)
