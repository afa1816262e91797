"""Parsing an image shape given on the command line (no torch)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from stn_deploy.errors import StnDeployError


def parse_shape(
    text: str | Sequence[int] | None, *, ndim: int | None = 3, drop_batch: bool = True
) -> tuple[int, ...] | None:
    """``"1,28,28"``, ``"1x28x28"`` or ``(1, 28, 28)`` -> ``(C, H, W)``; a leading batch
    dimension (``N,C,H,W``) is dropped unless ``drop_batch`` is False. ``ndim=None`` accepts
    any number of dimensions.

    >>> parse_shape("1x42x42"), parse_shape("8,3,224,224")
    ((1, 42, 42), (3, 224, 224))
    """
    if text is None:
        return None
    if isinstance(text, str):
        parts = [p for p in re.split(r"[,x× ]+", text.strip()) if p]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError as exc:
            raise StnDeployError(
                f"input shape must be integers like 1,28,28, got {text!r}"
            ) from exc
    else:
        dims = tuple(int(v) for v in text)
    if drop_batch and len(dims) == (ndim or 3) + 1:
        dims = dims[1:]
    if not dims or (ndim is not None and len(dims) != ndim) or any(d <= 0 for d in dims):
        raise StnDeployError(
            f"input shape must be C,H,W (or N,C,H,W) with positive sizes, got {text!r}"
        )
    return dims
