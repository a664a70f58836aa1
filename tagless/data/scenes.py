"""Digit scenes: several small digits pasted on a black canvas (multi-label, with boxes)."""
from __future__ import annotations

import numpy as np

from tagless.data.dataset import ImageDataset


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Intersection of two squares (x, y, side) over the area of the smaller one."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0) / min(a[2], b[2]) ** 2


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in weights of a bilinear (triangle filter, area-widened when shrinking) resize."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    w = np.clip(1.0 - np.abs(np.arange(n_in) + 0.5 - centers[:, None]) / support, 0.0, None)
    return w / w.sum(1, keepdims=True)


def digit_scenes(digits: np.ndarray, labels: np.ndarray, count: int, image_size: int = 64,
                 digits_per_scene: tuple[int, int] = (1, 4),
                 digit_size: tuple[int, int] = (12, 28), max_overlap: float = 0.2,
                 noise_std: float = 0.0, seed=0, num_classes: int = 10) -> ImageDataset:
    """Compose `count` scenes of image_size x image_size from grey digits (uint8 N x h x w).

    Each scene gets k ~ U{digits_per_scene} digits drawn from `digits`, each resized
    (bilinear) to a side ~ U{digit_size} (clipped to the canvas) and pasted (pixel-wise max)
    at a random place where it covers at most `max_overlap` of any smaller placed digit (or
    is dropped after 30 tries; the first digit always fits). targets: int8 count x
    num_classes, 1 for each digit class present, else 0; boxes: the tight box of each
    digit's non-zero pixels, class index; extras['area']: each box's area in pixels (the
    scene is drawn at image_size, so these are original pixels). `seed` is anything
    np.random.default_rng takes; scene i depends only on the seed and the scenes before it,
    so a smaller count gives a prefix of a larger one."""
    rng = np.random.default_rng(seed)
    s_img = int(image_size)
    lo, hi = min(digit_size[0], s_img), min(digit_size[1], s_img)
    canvas = np.zeros((count, s_img, s_img), np.uint8)
    targets = np.zeros((count, num_classes), np.int8)
    boxes: list[np.ndarray] = []
    mats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    digits_f = np.asarray(digits, np.float64)
    for i in range(count):
        placed: list[tuple[int, int, int]] = []
        scene_boxes = []
        for _ in range(int(rng.integers(digits_per_scene[0], digits_per_scene[1] + 1))):
            j, side = int(rng.integers(len(digits))), int(rng.integers(lo, hi + 1))
            for _attempt in range(30):
                x, y = (int(v) for v in rng.integers(0, s_img - side + 1, size=2))
                if all(_overlap((x, y, side), q) <= max_overlap for q in placed):
                    break
            else:
                continue
            if side not in mats:
                mats[side] = (_bilinear_matrix(digits.shape[1], side),
                              _bilinear_matrix(digits.shape[2], side).T)
            rows_m, cols_m = mats[side]
            patch = np.clip(np.rint(rows_m @ digits_f[j] @ cols_m), 0, 255).astype(np.uint8)
            rows, cols = np.flatnonzero(patch.any(1)), np.flatnonzero(patch.any(0))
            if len(rows) == 0:
                continue
            region = canvas[i, y: y + side, x: x + side]
            np.maximum(region, patch, out=region)
            c = int(labels[j])
            targets[i, c] = 1
            scene_boxes.append([x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1, c])
            placed.append((x, y, side))
        if noise_std > 0:
            noisy = canvas[i] + rng.normal(0.0, noise_std, (s_img, s_img))
            canvas[i] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        boxes.append(np.asarray(scene_boxes, np.float32).reshape(-1, 5))
    images = np.repeat(canvas[..., None], 3, axis=3)
    area = [((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float32) for b in boxes]
    return ImageDataset(images=images, targets=targets, classes=[str(d) for d in range(num_classes)],
                        label_kind="multi", boxes=boxes, name="digit_scenes", extras={"area": area})
