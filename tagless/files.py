"""File-system details shared by the checkpoint writer, the data cache and every writer of
result files: modes, atomic writes, folder names, and a lock on a folder.

An atomic write goes to a temporary file in the same folder, is flushed and fsynced, then
renamed over the target: a reader sees the old file or the new one, never half of one, and a
crash or a full disk leaves the old file intact."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tagless.errors import TaglessError

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


def fsync_dir(path: str | Path) -> None:
    """Make a rename in folder ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str = "") -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)``: whatever the block writes to ``tmp`` (a
    fresh name in p's folder) is fsynced and renamed over ``p`` when the block ends without an
    error; on an error ``tmp`` is removed and ``p`` is left as it was. ``what`` names the file
    in the error ("checkpoint ")."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        chmod_default(tmp)  # mkstemp's 0600 would make the file private to its writer
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise TaglessError(f"could not write {what}{path}: {e.strerror or e}") from None
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring); returns ``path``."""
    return write_bytes_atomic(path, text.encode(encoding))


_FOLDER_NAME = re.compile(r"^[\w.+-]+$")


def check_folder_name(value, where: str) -> str:
    """``value`` when it can name one folder inside another (a run, a comparison, a variant):
    letters, digits and ``_ . + -``, not ``.`` or ``..``; else a TaglessError naming ``where``."""
    if not isinstance(value, str) or not _FOLDER_NAME.match(value) or value in (".", ".."):
        raise TaglessError(f"{where}: {value!r} must be letters, digits and _ . + - (it names a folder)")
    return value


class FileLock:
    """An exclusive ``fcntl.flock`` on ``path``, a file (created if missing) or a folder, held
    until :meth:`release` or the end of a ``with`` block. The kernel drops the lock with the
    file descriptor, so a killed holder never leaves a stale lock. A lock file is left in place:
    deleting it would let two processes lock two different files of the same name.

    ``busy``: None waits for the lock; a message makes a lock held elsewhere a TaglessError
    with that message instead of a wait."""

    def __init__(self, path: str | Path, busy: str | None = None):
        self.path = Path(path)
        self._fd = -1
        try:
            if self.path.is_dir():
                self._fd = os.open(self.path, os.O_RDONLY)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise TaglessError(f"cannot open {self.path} to lock it: {e.strerror or e}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if busy is None else fcntl.LOCK_NB))
        except BaseException as e:
            os.close(self._fd)
            self._fd = -1
            if isinstance(e, BlockingIOError):
                raise TaglessError(busy) from None
            raise

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the only descriptor drops the lock

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def is_locked(path: str | Path) -> bool:
    """Whether another open file description holds a :class:`FileLock` on ``path`` now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False
