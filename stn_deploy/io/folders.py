"""A folder built beside its place and put there at the end (``stn-deploy run``'s report).

The work folder is ``.NAME.tmp-<pid>-<random>`` beside ``NAME``, made with the umask's mode.
:func:`place_folder` renames it into place without ever removing what this process did not make:

- without ``replace``, a folder that appeared at ``NAME`` meanwhile is left untouched and the
  work folder is removed, with one error line;
- with ``replace``, the old folder is first renamed aside to ``.NAME.old-<pid>-<random>``, the new
  one renamed in, and only then the old one removed: a kill in between leaves the old folder
  aside, and the next :func:`new_work_folder` for ``NAME`` puts it back.

Callers hold :func:`stn_deploy.io.locks.destination_lock` on ``NAME`` around all of it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import inspect
import os
import re
import secrets
import tempfile
from pathlib import Path

from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import current_umask, missing_dirs, remove_empty_dirs
from stn_deploy.io.stale import remove_entry, stale_entries


def _pattern(name: str, kind: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.{kind}-(?P<pid>\d+)-[A-Za-z0-9_]+")


def clean_stale(out: Path) -> list[str]:
    """Undo what killed writers of ``out`` left beside it; returns what was done, one line each.

    A work folder of a dead pid is removed; an old folder set aside by a dead pid goes back to
    ``out`` when nothing is there (the kill came before the new one was renamed in), else it is
    removed (the kill came after)."""
    done = []
    for entry in stale_entries(out.parent, _pattern(out.name, "tmp")):
        remove_entry(entry)
        done.append(f"removed {entry}, left by a killed run")
    for entry in stale_entries(out.parent, _pattern(out.name, "old")):
        if not os.path.lexists(out):
            try:
                os.rename(entry, out)
            except OSError:
                continue  # left where it is: nothing is lost
            done.append(f"put {out} back from {entry.name}, where a killed run had set it aside")
        else:
            remove_entry(entry)
            done.append(f"removed {entry}, the old folder a killed run had replaced")
    return done


def new_work_folder(out: Path) -> Path:
    """``.NAME.tmp-<pid>-<random>`` beside ``out``, with the mode the umask gives a new folder."""
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
        os.chmod(work, 0o777 & ~current_umask())  # mkdtemp makes 0700
    except OSError as exc:
        raise StnDeployError(f"cannot write to directory {out.parent}: {exc.strerror}") from exc
    return work


_RENAME_NOREPLACE = 1  # linux/fs.h


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, raising FileExistsError when ``dst`` exists (an empty folder
    included), atomically where the kernel offers renameat2 (Linux), else checked just before."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd = -100
        rc = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # else not supported here: fall back
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def place_folder(work: Path, out: Path, *, replace: bool) -> None:
    """Rename ``work`` to ``out`` (see the module docstring); on failure ``work`` is left for the
    caller to remove and ``out`` is as it was."""
    if not replace:
        try:
            rename_noreplace(work, out)
        except FileExistsError as exc:
            raise StnDeployError(
                f"{out} appeared while this run worked: it was left untouched and this run's "
                "work removed; pass {force=True} to replace it",
                param="force",
            ) from exc
        return
    aside = None
    if os.path.lexists(out):
        aside = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(out, aside)
    try:
        rename_noreplace(work, out)
    except BaseException:
        if aside is not None:
            os.rename(aside, out)
        raise
    if aside is not None:
        remove_entry(aside)


def removes_new_folder(argument: str):
    """Decorate a function that writes into the folder its ``argument`` names: when it raises,
    that folder (and parents) are removed again if this call made them and they are empty."""

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            folder = signature.bind_partial(*args, **kwargs).arguments.get(argument)
            made = missing_dirs(folder) if folder is not None else []
            try:
                return fn(*args, **kwargs)
            except BaseException:
                remove_empty_dirs(made)
                raise

        return wrapper

    return decorate
