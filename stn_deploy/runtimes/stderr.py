"""Capturing what a native library prints on file descriptors 1 and 2 (ncnn's load errors,
torch's TorchScript graph dumps)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


class Captured:
    """What was printed on fd 2 inside :func:`captured_stderr` (read when the block ends)."""

    def __init__(self) -> None:
        self.text = ""

    def last_line(self, default: str) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if ln.strip()]
        return lines[-1] if lines else default


@contextlib.contextmanager
def captured_fds(fds: tuple[int, ...] = (2,)) -> Iterator[Captured]:
    """Redirect file descriptors ``fds`` (2: stderr; 1: stdout) into one temporary file for
    the block: what native code prints there, which Python's stream redirection cannot catch,
    ends up in the :class:`Captured` text instead of on the terminal."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    captured = Captured()
    with tempfile.TemporaryFile() as fh:
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(fh.fileno(), fd)
            yield captured
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in zip(fds, saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            fh.seek(0)
            captured.text = fh.read().decode("utf-8", "replace")


def captured_stderr() -> contextlib.AbstractContextManager[Captured]:
    """Redirect fd 2 into a temporary file for the block."""
    return captured_fds((2,))
