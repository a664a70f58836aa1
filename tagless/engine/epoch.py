"""What a method's ``on_epoch_start`` gets: a batched, no-grad pass over every training image,
sharded by rank, and the collectives to combine the shards (SeLa's dataset-wide labelling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tagless import distributed as dist
from tagless.augment import eval_view
from tagless.methods.contract import DataInfo


def shard(num_items: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous block of ``range(num_items)`` (blocks differ by at most one row),
    so concatenating the blocks of ranks 0..W-1 gives the dataset in index order."""
    return np.array_split(np.arange(num_items), world_size)[rank]


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0] >> 1)


class EpochPass:
    """The :class:`~tagless.methods.contract.EpochContext` of one epoch."""

    def __init__(self, epoch: int, data: DataInfo, device: torch.device, eval_settings: dict, seed: int,
                 amp: bool = False, epochs: int = 0):
        self.epoch, self.epochs, self.data, self.device = epoch, epochs, data, device
        self.rank, self.world_size = dist.rank(), dist.world_size()
        self._eval, self._seed, self._amp = eval_settings, seed, amp

    def indices(self) -> np.ndarray:
        """The dataset indices this rank covers in :meth:`dataset_pass`."""
        return shard(self.data.num_images, self.rank, self.world_size)

    @torch.no_grad()
    def dataset_pass(self, fn: Callable[[Any], torch.Tensor], views: Callable | None = None, batch_size: int = 512,
                     gather: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Run ``fn`` over every training image, batched, without gradients.

        ``fn`` gets the normalised eval view (float B x C x s x s, the run's eval preprocessing)
        or, with ``views``, ``views(images_uint8, generator)`` (a Views object) with a generator
        seeded by (seed, epoch, first index of the batch): random views depend on how the
        shards are cut, so they differ between runs on different numbers of processes. It
        returns a tensor with B rows. Train/eval modes are the method's to set. Returns
        ``(index, out)``: this rank's shard, or every rank's concatenated in index order when
        ``gather`` (all ranks must call it then).
        """
        idx = self.indices()
        outs = []
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            images = self.data.read(chunk)
            if views is None:
                x = eval_view(images, **self._eval)
            else:
                g = torch.Generator(device=self.device).manual_seed(_seed(self._seed, 7, self.epoch, int(chunk[0])))
                x = views(images, g)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._amp):
                y = fn(x)
            outs.append(y.float() if y.is_floating_point() else y)
        index = torch.as_tensor(idx, device=self.device)
        out = torch.cat(outs) if outs else torch.empty(0, device=self.device)
        if gather:
            return self.gather(index), self.gather(out)
        return index, out

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Rows of every rank concatenated in rank order (shards may differ in size). No gradient."""
        return dist.gather_uneven(x)

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        return dist.all_reduce_sum(x)
