"""Which device a command runs on, and its name for reports and benchmarks."""

from __future__ import annotations

import platform

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; any other name is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
