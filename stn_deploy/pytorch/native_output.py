"""Keeping a native library's own prints (torch's C++ graph dumps) off the terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_native_output():
    """While inside: file descriptors 1 and 2 go to a temporary file, so text written by C++
    code (which Python's ``sys.stdout``/``sys.stderr`` redirection cannot catch: torch's
    TorchScript exporter prints its graph on a failure) does not reach the terminal; the
    caller turns a failure into one line. Restored on exit, whatever happens."""
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            fds.append(stream.fileno())
        except (AttributeError, OSError, ValueError):  # not a real file (captured): skip it
            continue
    saved = [os.dup(fd) for fd in fds]
    try:
        with tempfile.TemporaryFile() as sink:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                for fd, copy in zip(fds, saved, strict=True):
                    os.dup2(copy, fd)
    finally:
        for copy in saved:
            os.close(copy)
