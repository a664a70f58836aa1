"""Index sampling and batches of uint8 images on the device.

Data lives on the device when it fits (airbench style): uint8 is 4x smaller than float and the
augmentation converts it once per batch, so no worker processes are needed. Larger datasets
are gathered per batch from the memory-mapped cache by a background thread.
"""

from __future__ import annotations

import threading
from queue import Queue

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

    def indices(self, epoch: int, step_in_epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            self._epoch = epoch
        start = step_in_epoch * self.global_batch + self.rank * self.local_batch
        return self._perm[start : start + self.local_batch]


class DeviceImages:
    """uint8 N x H x W x C images served as uint8 B x C x H x W batches on ``device``."""

    def __init__(self, images: np.ndarray, device: torch.device, preload_max_mb: int = 4096):
        self.images = images
        self.device = device
        self.resident = None
        if images.nbytes <= preload_max_mb * 2**20:
            t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
            self.resident = t.to(device)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        if self.resident is not None:
            return self.resident[torch.as_tensor(idx, device=self.device)]
        arr = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
        if self.device.type == "cuda":
            arr = arr.pin_memory()
        return arr.to(self.device, non_blocking=True).permute(0, 3, 1, 2)


class Prefetcher:
    """Runs ``fetch(step)`` for the next steps in a background thread (a few ahead)."""

    def __init__(self, fetch, steps: range, depth: int = 2):
        self._queue: Queue = Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, args=(fetch, steps), daemon=True)
        self._thread.start()

    def _run(self, fetch, steps):
        for s in steps:
            try:
                self._queue.put((s, fetch(s), None))
            except BaseException as e:  # surface the error in the consumer
                self._queue.put((s, None, e))
                return

    def get(self):
        s, value, err = self._queue.get()
        if err is not None:
            raise err
        return s, value
