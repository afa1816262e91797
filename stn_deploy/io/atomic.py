"""Atomic file writes: a temporary file in the target directory, renamed into place on success.

Every failure to write (a full disk, a read-only or vanished folder) becomes one
:class:`WriteError` line naming the final path and the reason; no temporary file and no folder
made for the write is left behind. Temporary names carry the writer's pid
(``.NAME.<pid>-<random>.tmp``) so a killed writer's leftovers are removed by the next write of
``NAME`` (:mod:`stn_deploy.io.stale`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.io.locks import destination_lock
from stn_deploy.io.stale import remove_stale_work_files


class WriteError(StnDeployError):
    """A file could not be written: ``path`` (the final name) and ``reason`` (strerror)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = Path(path), reason


def write_error(path: str | os.PathLike, exc: BaseException, *names) -> WriteError | None:
    """``exc`` as a :class:`WriteError` for ``path`` when it is a failure to write ``path`` (or
    one of ``names``, its temporary files), else None: an ``OSError`` with an errno about no file
    or one of those, or torch.save's ``inline_container`` RuntimeError (which drops the errno)."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        mine = {str(path), *map(str, names)}
        if exc.filename is None or str(exc.filename) in mine:
            return WriteError(path, exc.strerror or os.strerror(exc.errno))
    if isinstance(exc, RuntimeError) and "inline_container" in str(exc):
        return WriteError(path, _torch_reason(Path(path).parent, exc))
    return None


def _torch_reason(directory: Path, exc: BaseException) -> str:
    try:
        full = os.statvfs(directory).f_bavail == 0
    except OSError:
        full = False
    return os.strerror(errno.ENOSPC) if full else f"torch.save failed ({one_line(exc)})"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    On any exception the temporary file (and any folder made for it) is removed and ``path`` is
    left as it was; a failure to write (see :func:`write_error`) is raised as a
    :class:`WriteError` naming ``path``.

    Example:
        >>> with atomic_path("out.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = Path(path)
    made = missing_dirs(path.parent)
    try:
        tmp = work_file(path)
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            error = write_error(path, exc, tmp)
            if error is None or error is exc:
                raise
            raise error from exc
    except BaseException:
        remove_empty_dirs(made)
        raise


def work_file(path: Path) -> Path:
    """A new empty ``.NAME.<pid>-<random>.tmp`` beside ``path`` with the usual file mode (the
    folder is made when missing; stale ones of dead writers are removed first)."""
    ensure_writable_dir(path.parent)
    remove_stale_work_files(path)
    try:
        prefix = f".{path.name}.{os.getpid()}-"
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(name, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual mode
    except OSError as exc:
        raise WriteError(path, exc.strerror or str(exc)) from exc
    return Path(name)


def replace_together(files: Sequence[tuple[str | os.PathLike, bytes]]) -> None:
    """Write every ``(path, data)`` to its temporary file first, then rename them into place in
    the given order: a failure while writing changes none of them; only a kill between two
    renames can leave the earlier ones new and the later ones old (callers order them so that
    such a mix is detected by its readers)."""
    tmps: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            path = Path(path)
            tmps.append((work_file(path), path))
            try:
                tmps[-1][0].write_bytes(data)
            except OSError as exc:
                error = write_error(path, exc, tmps[-1][0])
                if error is None:
                    raise
                raise error from exc
        for tmp, path in tmps:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                error = write_error(path, exc, tmp)
                if error is None:
                    raise
                raise error from exc
    finally:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)


def missing_dirs(directory: str | os.PathLike) -> list[Path]:
    """``directory`` and its parents that do not exist yet, deepest first."""
    missing, d = [], Path(directory)
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    return missing


def remove_empty_dirs(dirs: Sequence[Path]) -> None:
    """Remove the folders of :func:`missing_dirs` again where they are still empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_locked(path: str | os.PathLike, data: bytes) -> None:
    """:func:`write_bytes_atomic` under ``path``'s writer lock
    (:func:`~stn_deploy.io.locks.destination_lock`): a second writer fails at once."""
    path = Path(path)
    made = missing_dirs(path.parent)
    try:
        ensure_writable_dir(path.parent)
        with destination_lock(path):
            write_bytes_atomic(path, data)
    except BaseException:
        remove_empty_dirs(made)
        raise


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and check a file can be written there, or raise a clear error."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StnDeployError(f"cannot write to directory {directory}: {reason}") from exc
    return directory
