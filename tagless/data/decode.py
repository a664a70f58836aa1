"""Decoding with Pillow: files or arrays -> uint8 size x size x 3, with a thread pool."""
from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

log = logging.getLogger("tagless.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def quiet_pillow_bomb_warning() -> None:
    """decode_image checks every header against data.max_image_pixels (Pillow's limit by default)
    and skips a larger file with its own message: Pillow's warning for the same file is noise.
    Called by the command line (a library user keeps Pillow's warnings as they set them)."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLarge(ValueError):
    """An image file of more pixels than ``data.max_image_pixels``: skipped, never decoded."""


def decode_image(path: str, size: int, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """One file -> (uint8 size x size x 3, original (width, height)). Raises on a bad file, and
    (:class:`ImageTooLarge`) on one of more than ``max_pixels`` pixels, read from the header
    before any pixel is decoded (a small PNG can hold a 10^4 x 10^4 image: a decompression
    bomb). A JPEG at least twice the target size is decoded at a reduced scale (``draft``:
    1/2, 1/4 or 1/8, never below ``size``), then resized as any other image."""
    with Image.open(path) as im:
        original = im.size
        if max_pixels is not None and original[0] * original[1] > max_pixels:
            raise ImageTooLarge(f"{original[0]} x {original[1]} pixels, over data.max_image_pixels={max_pixels}")
        if im.format == "JPEG" and min(original) >= 2 * size:
            im.draft("RGB", (size, size))
        rgb = im.convert("RGB")  # forces the full decode: truncated files fail here
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8), original


def resize_array(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 h x w (x 1 or 3) -> uint8 size x size x 3, bilinear; grey is replicated to RGB."""
    grey = image.ndim == 2 or image.shape[-1] == 1
    h, w = image.shape[:2]
    if (h, w) != (size, size):
        pil = Image.fromarray(image.reshape(h, w) if grey else image)
        image = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
    if grey:
        image = np.repeat(image.reshape(size, size, 1), 3, axis=2)
    return image


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 N x h x w (x C) -> uint8 N x size x size x 3."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, im in enumerate(images):
        out[i] = resize_array(im, size)
    return out


def _workers(requested: int, n: int) -> int:
    if n < 32:
        return 1
    return requested if requested > 0 else min(8, os.cpu_count() or 1)


def decode_into(out: np.ndarray, paths: list[str], size: int, workers: int = 0,
                stop_on_error: bool = False, max_pixels: int | None = None,
                ) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Decode `paths` into rows of `out`; return (original sizes int64 N x 2, errors).

    errors are (index, reason) of unreadable files (and of files over `max_pixels` pixels),
    whose rows are left as zeros and whose size is (0, 0). With stop_on_error the first error
    (in file order) stops the work."""
    sizes = np.zeros((len(paths), 2), np.int64)
    errors: list[tuple[int, str]] = []

    def one(i: int):
        try:
            out[i], sizes[i] = decode_image(paths[i], size, max_pixels)
            return None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types; any failure = unreadable file
            out[i] = 0
            return f"{type(exc).__name__}: {exc}"

    n_workers = _workers(workers, len(paths))
    if n_workers == 1:
        results = map(one, range(len(paths)))
        pool = None
    else:
        pool = ThreadPoolExecutor(n_workers)
        results = pool.map(one, range(len(paths)))
    try:
        for i, reason in enumerate(results):
            if reason is not None:
                errors.append((i, reason))
                if stop_on_error:
                    break
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return sizes, errors


def resize_into(out: np.ndarray, arrays: np.ndarray, size: int) -> np.ndarray:
    """Resize in-memory images into `out`; return original sizes (width, height) N x 2."""
    for i, im in enumerate(arrays):
        out[i] = resize_array(im, size)
    h, w = arrays.shape[1:3]
    return np.tile(np.array([[w, h]], np.int64), (len(arrays), 1))
