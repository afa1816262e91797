"""Work files and folders named after the process that made them, and the removal of those whose
process is gone (a killed run's leftovers), on the next write to the same place.

A work name carries the owner's pid: ``.NAME.<pid>-<random>.tmp`` beside a file being written,
``.NAME.tmp-<pid>-<random>`` beside a ``run`` report folder. Only entries whose pid is no longer
a live process on this host are touched; anything else (another user's, a live process's, a name
without a pid) is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this host (a process of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True  # PermissionError: another user's live process; else cannot tell: keep it
    return True


def stale_entries(directory: Path, pattern: re.Pattern) -> list[Path]:
    """Entries of ``directory`` whose name matches ``pattern`` (group ``pid``) with a dead pid."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        m = pattern.fullmatch(name)
        if m and not pid_alive(int(m.group("pid"))):
            found.append(directory / name)
    return found


def remove_entry(path: Path) -> None:
    """Remove a file or a folder tree; a missing or unremovable one is left as it is."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        pass


def file_work_pattern(name: str) -> re.Pattern:
    """``.NAME.<pid>-<random>.tmp``: the temporary file :func:`~stn_deploy.io.atomic.atomic_path`
    writes beside ``NAME``."""
    return re.compile(rf"\.{re.escape(name)}\.(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp")


def remove_stale_work_files(path: Path) -> None:
    """Remove the temporary files of writes to ``path`` whose process is gone."""
    for entry in stale_entries(path.parent, file_work_pattern(path.name)):
        if not entry.is_dir():
            remove_entry(entry)
