"""Data: sources -> uint8 images (N x H x W x 3) with labels, decoded once into a disk cache.

    ds = build_dataset(DataConfig(source="image_folder", root="photos", image_size=64), "train")

Sources (`SOURCES`, `DataConfig.source`):
- `digits`: scikit-learn's 1797 8x8 digits, upscaled; seeded split; single label.
- `digit_scenes`: 1-4 digits per canvas (`digit_scenes(...)`); multi-label with boxes.
- `image_folder`: `root/<class>/*.jpg|png|...`, splits from `root/train` + `root/test|val`
  when present; or the flat form with `csv_path`.
- `csv`: `path,labels[,negatives][,split]`. `labels` are positives separated by `;`, `,`
  or spaces (`label_separator`, detected from the file by default). Partial labels: an
  optional `negatives` column lists known negatives (`*` = all other classes); when that
  column exists every class in neither column is unknown (-1). label_kind is read from the
  content ('multi' / 'partial' / 'single_positive') unless `label_kind` is set.
- `cifar10` / `cifar100`: the python pickle batches, through a restricted unpickler (no code runs).
- `coco`: instances JSON + image folder; multi-label, boxes, `extras['crowd']`.
- `voc`: VOC XML (defusedxml); VOC07 targets (1 / -1 only difficult / 0), boxes, `extras['difficult']`.

Splits are 'train', 'test' and 'all'. Unreadable images, and images of more pixels than
`max_image_pixels` (never decoded), are skipped with a warning on the `tagless.data` logger
(or raise with `on_corrupt='fail'`). See cache.py for the cache.
"""
from tagless.data.config import DataConfig
from tagless.data.dataset import ImageDataset
from tagless.data.registry import SOURCES, build_dataset
from tagless.data.scenes import digit_scenes

__all__ = ["SOURCES", "DataConfig", "ImageDataset", "build_dataset", "digit_scenes"]
