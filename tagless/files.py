"""File-system details shared by the checkpoint writer and the data cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read from /proc on Linux; elsewhere set and restored under a lock)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def chmod_default(path: str | Path, directory: bool = False) -> None:
    """Give a file made by ``mkstemp`` / ``mkdtemp`` (mode 0600 / 0700) the mode a plain
    ``open`` / ``mkdir`` gives under the user's umask, before it is renamed into place."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())
