"""ImageNet's ReaL labels (Beyer et al., "Are we done with ImageNet?", 2020; paper 003, Table K.1
reports the ImageNet-1k validation set both with its original labels and with ReaL's).

``real.json`` is one JSON list with an entry per validation image in file order
(``ILSVRC2012_val_00000001.JPEG`` first): the list of class ids (0..999, the standard order: the
sorted WordNet ids, as an ImageNet image folder's sorted class folders give them) that raters
judged correct for that image. An empty list means no label fits; those images are left out of
every ReaL number, as the authors do (46,837 of 50,000 remain).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tagless.errors import TaglessError

VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


def read_real_labels(path: str | Path) -> list[list[int]]:
    """The lists of ``real.json``, checked: a list of lists of class ids >= 0."""
    path = Path(path)
    if not path.is_file():
        raise TaglessError(f"ReaL labels file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise TaglessError(f"{path}: not a JSON file ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, list) or not data:
        raise TaglessError(f"{path}: expected a non-empty JSON list with one list of class ids per validation image")
    for i, labels in enumerate(data):
        ok = isinstance(labels, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                              for c in labels)
        if not ok:
            raise TaglessError(f"{path}: entry {i} (image {i + 1}) must be a list of class ids >= 0, "
                               f"got {str(labels)[:80]}")
    return data


def real_labels_for(paths: list[str], real: list[list[int]], source: str = "real.json") -> list[list[int]]:
    """The ReaL list of each image of a dataset, matched by file name: ``ILSVRC2012_val_%08d``
    is entry ``%d - 1``, so any order and any subset of the validation images (an image folder
    sorted by class, ``data.limit``) gets its own labels."""
    out = []
    for p in paths:
        m = VAL_NAME.search(Path(p).name)
        if m is None:
            raise TaglessError(f"{p}: not an ImageNet validation file name (ILSVRC2012_val_NNNNNNNN.JPEG), so its "
                               f"ReaL labels cannot be found")
        index = int(m[1]) - 1
        if not 0 <= index < len(real):
            raise TaglessError(f"{p}: image {index + 1} is beyond the {len(real)} entries of {source}")
        out.append(real[index])
    return out
