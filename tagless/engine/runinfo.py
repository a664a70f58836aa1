"""What produced a run: versions, device, git commit, command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from tagless.device import device_name


def git_commit(path: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5,
                             check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def run_info(device: torch.device, world_size: int) -> dict:
    import tagless

    return {
        "tagless": tagless.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": device_name(device),
        "world_size": world_size,
        "git_commit": git_commit(Path(tagless.__file__).parent),
        "argv": sys.argv,
    }
