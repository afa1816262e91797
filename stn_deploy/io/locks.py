"""One writer per destination: an exclusive ``flock`` on ``.NAME.lock`` beside the destination.

A second writer of the same destination fails at once with one line naming the lock file and
the pid holding it (no waiting). The lock is the kernel's: it goes with the holder's process, so
a killed writer never leaves a destination locked; the file itself is removed on release (a
left-over one from a killed writer is simply taken over).

Example:
    >>> with destination_lock("out/model.onnx"):  # doctest: +SKIP
    ...     ...  # write out/model.onnx and out/model.io.npz
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from stn_deploy.errors import StnDeployError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None


def lock_path(destination: str | os.PathLike) -> Path:
    """``dir/NAME`` -> ``dir/.NAME.lock``."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.lock")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


def _same_file(fd: int, path: Path) -> bool:
    try:
        st, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _acquire(lock: Path, destination: Path) -> int:
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise StnDeployError(
                f"cannot write to directory {lock.parent}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = _holder(fd)
            os.close(fd)
            raise StnDeployError(
                f"{destination} is being written by {holder} (it holds {lock}): wait for it "
                "to finish, or write somewhere else"
            ) from exc
        if _same_file(fd, lock):  # else the holder removed it as we opened it: take the new one
            with contextlib.suppress(OSError):  # the pid is for the message only (full disk)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            return fd
        os.close(fd)


@contextlib.contextmanager
def destination_lock(destination: str | os.PathLike) -> Iterator[Path]:
    """Hold the writer's lock of ``destination`` (a file or a folder) for the block; yields the
    lock file's path. Raises :class:`StnDeployError` at once when another process holds it."""
    destination = Path(destination)
    lock = lock_path(destination)
    if fcntl is None:  # pragma: no cover
        yield lock
        return
    fd = _acquire(lock, destination)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still held: a waiter that opened it sees it is gone
        os.close(fd)
