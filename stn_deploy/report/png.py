"""A dependency-free PNG writer for image grids (numpy + zlib), so pictures need no matplotlib."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from stn_deploy.io.atomic import write_bytes_atomic


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 pixels as PNG bytes."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        color_type = 0
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        color_type = 2
    else:
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {pixels.shape}")
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def image_grid(
    images: np.ndarray, ncols: int = 8, pad: int = 2, scale: int = 2, pad_value: float = 0.5
) -> np.ndarray:
    """Tile ``(N, H, W)`` images with values in [0, 1] into one ``(rows*H', cols*W')`` uint8 picture.

    Each image is enlarged ``scale`` times (nearest) and framed by ``pad`` pixels of ``pad_value``.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n, h, w = images.shape
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = img
    return np.rint(grid * 255).astype(np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 12, bg: int = 255) -> np.ndarray:
    """Place two uint8 grey pictures next to each other, top-aligned, on a ``bg`` background."""
    h = max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + gap + right.shape[1]), bg, np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + gap :] = right
    return out


def save_rectification_png(
    inputs: np.ndarray, rectified: np.ndarray, path: str | Path, ncols: int = 8
) -> Path:
    """The PyTorch tutorial's picture: a grid of inputs (left) next to the STN's outputs (right).

    ``inputs`` ``(N, H, W)`` and ``rectified`` ``(N, H', W')`` hold display values in [0, 1]; the
    rectified images are enlarged so both grids have about the same height.
    """
    scale_in = 2
    scale_out = max(1, round(scale_in * inputs.shape[1] / rectified.shape[1]))
    picture = side_by_side(
        image_grid(inputs, ncols=ncols, scale=scale_in),
        image_grid(rectified, ncols=ncols, scale=scale_out),
    )
    write_bytes_atomic(path, encode_png(picture))
    return Path(path)
