"""Run a function in N gloo processes on CPU (for 1-vs-2-process equality tests)."""

from __future__ import annotations

import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    import torch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_in_processes(fn, world_size: int, *args) -> None:
    """Spawn ``world_size`` processes running ``fn(rank, world_size, *args)``."""
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size,
                       join=True, start_method="spawn")
