"""Index sampling and batches of uint8 images (with their labels) on the device.

Data lives on the device when it fits (airbench style): uint8 is 4x smaller than float and the
augmentation converts it once per batch, so no worker processes are needed. Larger datasets
are gathered per batch from the memory-mapped cache by a background thread. Labels are small
and always live on the device.
"""

from __future__ import annotations

import threading
import warnings
from queue import Full, Queue

import numpy as np
import torch


class EpochSampler:
    """Seeded per-epoch permutation, cut into global batches and sharded over ranks.

    The order depends only on (seed, epoch), so a resumed run sees the same batches; each rank
    takes a contiguous slice of every global batch, so 2 processes see exactly the images one
    process would see in one batch. The last incomplete batch is dropped.
    """

    def __init__(self, num_items: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"train.batch_size {global_batch} is not divisible by {world_size} processes")
        if num_items < global_batch:
            raise ValueError(f"train.batch_size {global_batch} is larger than the dataset ({num_items} images)")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = global_batch // world_size
        self.steps_per_epoch = num_items // global_batch
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            self._epoch = epoch
        return self._perm

    def slice(self, step_in_epoch: int) -> slice:
        """This rank's positions in the epoch's permutation for one step."""
        start = step_in_epoch * self.global_batch + self.rank * self.local_batch
        return slice(start, start + self.local_batch)

    def indices(self, epoch: int, step_in_epoch: int) -> np.ndarray:
        return self.permutation(epoch)[self.slice(step_in_epoch)]


def readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` of an array tagless only reads (the read-only memory-mapped cache):
    torch warns that writing to it would be undefined, which never happens here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def targets_tensor(targets: np.ndarray, device: torch.device) -> torch.Tensor:
    """Stored labels on the device: int64 N (single) or int8 N x C (multi-label / partial)."""
    t = np.asarray(targets)
    return torch.as_tensor(t.astype(np.int64) if t.ndim == 1 else t.astype(np.int8), device=device)


class DeviceData:
    """uint8 N x H x W x C images and their labels, served as on-device batches.

    ``resident`` holds the whole set as uint8 N x C x H x W on the device when it is at most
    ``preload_max_mb``; otherwise ``read`` gathers rows from the (memory-mapped) array.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, device: torch.device, preload_max_mb: int = 4096):
        self.images = images
        self.device = device
        self.targets = targets_tensor(targets, device)
        self.resident = None
        if images.nbytes <= preload_max_mb * 2**20:
            t = readonly_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
            self.resident = t.to(device)

    def __len__(self) -> int:
        return len(self.images)

    def read(self, idx) -> torch.Tensor:
        """uint8 B x C x H x W on the device for dataset indices ``idx`` (numpy or tensor)."""
        if self.resident is not None:
            return self.resident[torch.as_tensor(idx, device=self.device)]
        idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        order = np.argsort(idx, kind="stable")  # memmap rows read in file order
        rows = np.empty((len(idx), *self.images.shape[1:]), dtype=self.images.dtype)
        rows[order] = self.images[idx[order]]
        arr = torch.from_numpy(rows)
        if self.device.type == "cuda":
            arr = arr.pin_memory()
        return arr.to(self.device, non_blocking=True).permute(0, 3, 1, 2)


class Prefetcher:
    """Runs ``fetch(step)`` for the next steps in a background thread (a few ahead).

    ``close()`` stops the thread when the loop ends early (an error, a NaN), so a long-lived
    process does not keep a blocked thread and the trainer it references."""

    def __init__(self, fetch, steps: range, depth: int = 2):
        self._queue: Queue = Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fetch, steps), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def _run(self, fetch, steps):
        for s in steps:
            try:
                item = (s, fetch(s), None)
            except BaseException as e:  # noqa: BLE001 - surface the error in the consumer, which re-raises it
                self._put((s, None, e))
                return
            if not self._put(item):
                return

    def get(self):
        s, value, err = self._queue.get()
        if err is not None:
            raise err
        return s, value

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
