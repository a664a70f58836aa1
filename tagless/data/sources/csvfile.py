"""Labels from a CSV file: `path,labels[,negatives][,split]` (header required).

Convention (documented in tagless/data/__init__.py):
- `path`: image path, relative to the base folder (the CSV's folder unless given) or absolute.
- `labels`: positive labels, separated by `data.label_separator`; empty = no positives.
- `negatives` (optional column): known negatives (same separator), or `*` = every class not in
  `labels`. When the column exists, classes in neither column are unknown (-1). Without it,
  every class not in `labels` is negative (fully annotated).
- `split` (optional): `train` or `test` (`val` counts as test); else a seeded split.
label_kind 'auto' reads the kind from the content: no `negatives` column -> 'multi' (or
'single' when `default_kind` is 'single' and no row has two labels); with it -> 'multi' if
no label is unknown, 'single_positive' if every row has exactly one positive and nothing
else known, else 'partial'. An explicit kind is checked against the rows.

Label separator (`data.label_separator`, for both `labels` and `negatives`): `;`, `,` (only
inside a quoted field), `whitespace` (any run of spaces/tabs), or `auto` (default). Tokens are
stripped; explicit separators just split. `auto` looks at every labels/negatives cell; a
candidate is present when it occurs inside some stripped cell (whitespace only counts between
two label characters, so `cat ; dog` is `;` with padding, not whitespace):
- none present (one label per cell): no split (`;`).
- exactly `;` or exactly `,` present: that one.
- only whitespace present: whitespace competes with no split (`;`), since names such as
  `traffic light` contain spaces; then as below.
- several: each candidate's class vocabulary (distinct tokens over all cells, `*` aside) is
  counted; the smallest wins when it is at most half the next smallest (spaces inside
  `traffic light;person` make many more tokens than `;` does). Otherwise a one-line error
  names the file, the candidates and their vocabulary sizes, and asks for data.label_separator.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from tagless.data.listing import Listing
from tagless.data.materialize import materialize
from tagless.data.splits import choose, limit_only, require_file
from tagless.errors import TaglessError

SEPARATORS = (";", ",", "whitespace")
_INNER_SPACE = re.compile(r"[^\s;,]\s+[^\s;,]")  # whitespace between two label characters


def _names(cell: str | None, sep: str = ";") -> list[str]:
    text = (cell or "").strip()
    parts = text.split() if sep == "whitespace" else text.split(sep)
    return [t.strip() for t in parts if t.strip()]


def _shown(sep: str) -> str:
    return sep if sep == "whitespace" else repr(sep)


def _present(text: str, sep: str) -> bool:
    return bool(_INNER_SPACE.search(text)) if sep == "whitespace" else sep in text


def _separator(rows, has_neg: bool, csv_path) -> str:
    """The `auto` label separator (rule in the module docstring)."""
    cells = [row["labels"] for _, row in rows] + ([row["negatives"] for _, row in rows] if has_neg else [])
    cells = [c.strip() for c in cells if c and c.strip()]
    present = [s for s in SEPARATORS if any(_present(c, s) for c in cells)]
    if not present:
        return ";"
    if present == ["whitespace"]:
        present = [";", "whitespace"]  # one label per cell, or space-separated labels
    elif len(present) == 1:
        return present[0]
    sizes = {s: len({t for c in cells for t in _names(c, s)} - {"*"}) for s in present}
    order = sorted(present, key=lambda s: sizes[s])
    if 2 * sizes[order[0]] <= sizes[order[1]]:
        return order[0]
    gives = ", ".join(f"{_shown(s)} gives {sizes[s]} classes" for s in present)
    raise TaglessError(f"{csv_path}: ambiguous label separator: {gives}; set data.label_separator")


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(lower-case header, [(line number, row dict)]) with the column count checked per row."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        for col in ("path", "labels"):
            if col not in header:
                raise TaglessError(f"{csv_path}:1: missing column {col!r} "
                                   f"(the header must name 'path' and 'labels')")
        rows = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise TaglessError(f"{csv_path}:{reader.line_num}: expected {len(header)} "
                                   f"columns ({','.join(header)}), got {len(row)}")
            rows.append((reader.line_num, dict(zip(header, (c.strip() for c in row)))))
    return header, rows


def _class_index(classes: list[str], csv_path, line: int):
    index = {c: i for i, c in enumerate(classes)}

    def lookup(name: str) -> int:
        if name not in index:
            raise TaglessError(f"{csv_path}:{line}: label {name!r} is not in the class list")
        return index[name]

    return lookup


def _matrix(rows, classes, has_neg: bool, csv_path, sep: str) -> np.ndarray:
    out = np.full((len(rows), len(classes)), -1 if has_neg else 0, np.int8)
    for r, (line, row) in enumerate(rows):
        lookup = _class_index(classes, csv_path, line)
        neg = _names(row.get("negatives"), sep)
        if neg == ["*"]:
            out[r] = 0
        else:
            for name in neg:
                out[r, lookup(name)] = 0
        for name in _names(row["labels"], sep):
            if name in neg:
                raise TaglessError(f"{csv_path}:{line}: label {name!r} is both positive and negative")
            out[r, lookup(name)] = 1
    return out


def _kind(matrix: np.ndarray, rows, requested: str, default_kind: str, has_neg: bool, csv_path) -> str:
    n_pos = (matrix == 1).sum(1)
    single_positive = bool((n_pos == 1).all() and (matrix != 0).all())
    if requested == "auto":
        if not has_neg:
            return "single" if default_kind == "single" and (n_pos <= 1).all() else "multi"
        if not (matrix == -1).any():
            return "multi"
        return "single_positive" if single_positive else "partial"
    bad = None
    if requested == "single":
        bad = np.flatnonzero(n_pos > 1)
    elif requested == "multi":
        bad = np.flatnonzero((matrix == -1).any(1))
    elif requested == "single_positive":
        bad = np.flatnonzero((n_pos != 1) | ((matrix == 0).any(1) if has_neg else False))
    if bad is not None and len(bad):
        raise TaglessError(f"{csv_path}:{rows[bad[0]][0]}: row does not fit label_kind {requested!r}")
    return requested


def read_label_csv(csv_path: Path, base: Path, classes: list[str], requested_kind: str = "auto",
                   default_kind: str = "multi", name: str = "csv",
                   separator: str = "auto") -> tuple[Listing, list[str] | None]:
    """Parse the CSV into a Listing (all rows) and the per-row split names (None without column).
    `separator`: ';', ',', 'whitespace' or 'auto' (see the module docstring)."""
    header, rows = _read_rows(csv_path)
    has_neg = "negatives" in header
    if not rows:
        raise TaglessError(f"{csv_path}: no rows below the header")
    for line, row in rows:
        if not row["path"]:
            raise TaglessError(f"{csv_path}:{line}: empty path")
    if separator != "auto" and separator not in SEPARATORS:
        raise TaglessError(f"label separator must be 'auto' or one of {SEPARATORS}, got {separator!r}")
    sep = _separator(rows, has_neg, csv_path) if separator == "auto" else separator
    if not classes:
        found = {n for _, row in rows for n in _names(row["labels"], sep) + _names(row.get("negatives"), sep)}
        classes = sorted(found - {"*"})
    matrix = _matrix(rows, classes, has_neg, csv_path, sep)
    kind = _kind(matrix, rows, requested_kind, default_kind, has_neg, csv_path)
    if kind == "single":
        targets = np.where((matrix == 1).any(1), (matrix == 1).argmax(1), -1).astype(np.int64)
    else:
        targets = matrix if kind != "single_positive" else np.where(matrix == 1, 1, -1).astype(np.int8)
    paths = [os.path.join(base, row["path"]) for _, row in rows]
    listing = Listing(targets=targets, classes=list(classes), label_kind=kind, name=name,
                      paths=paths, key_files=[str(csv_path)])
    splits = None
    if "split" in header:
        splits = []
        for line, row in rows:
            value = {"train": "train", "test": "test", "val": "test"}.get(row["split"].lower())
            if value is None:
                raise TaglessError(f"{csv_path}:{line}: split must be train or test, got {row['split']!r}")
            splits.append(value)
    return listing, splits


def select_split(listing: Listing, splits: list[str] | None, cfg, split: str) -> Listing:
    """Rows of `split`: by the split column when there is one, else a seeded split."""
    if splits is None:
        return listing.take(choose(len(listing), cfg, split))
    rows = np.array([i for i, s in enumerate(splits) if split in ("all", s)], np.int64)
    return listing.take(rows[limit_only(len(rows), cfg)])


def load_csv(cfg, split: str):
    """CSV source: `csv_path` (or `root` when it is a file); paths relative to `root` when it
    is a folder and `csv_path` is set, else to the CSV's folder."""
    csv_file = cfg.csv_path or cfg.root
    if not csv_file:
        raise TaglessError("data.csv_path (or data.root) must name the CSV file for source 'csv'")
    csv_path = require_file(csv_file, "CSV file")
    base = Path(cfg.root).absolute() if cfg.csv_path and cfg.root and Path(cfg.root).is_dir() else csv_path.parent
    listing, splits = read_label_csv(csv_path, base, list(cfg.classes), cfg.label_kind,
                                     separator=cfg.label_separator)
    return materialize(cfg, select_split(listing, splits, cfg, split), split)
