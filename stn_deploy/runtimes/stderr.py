"""Capturing what a native library prints on file descriptor 2 (ncnn's load errors)."""

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
def captured_stderr() -> Iterator[Captured]:
    """Redirect fd 2 into a temporary file for the block."""
    sys.stderr.flush()
    captured = Captured()
    with tempfile.TemporaryFile() as fh:
        saved = os.dup(2)
        try:
            os.dup2(fh.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            fh.seek(0)
            captured.text = fh.read().decode("utf-8", "replace")
