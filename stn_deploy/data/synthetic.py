"""Synthetic digit-like images, for fast tests and CI that never download MNIST.

Each class 0..9 is drawn as its seven-segment pattern (segments a..g) in a box about the
size of an MNIST digit (13-17 px tall, 7.5-11.5 px wide on 28×28), with random box size, position, slant, stroke thickness, per-endpoint
jitter and ink intensity, anti-aliased (1 px linear edge). Classes are distinct stroke sets,
so a tiny CNN (or even a nearest-class-mean classifier) learns them quickly; the layout is
MNIST's: ``uint8`` images, strokes roughly inside the central 20×20 of a 28×28 image.

Example::

    >>> images, labels = synthetic_digits(4, seed=0)
    >>> images.shape, images.dtype, labels.dtype
    ((4, 28, 28), dtype('uint8'), dtype('int64'))

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import numpy as np

from stn_deploy.data.mnist import MnistArrays
from stn_deploy.errors import StnDeployError

__all__ = ["SEGMENTS", "synthetic_digits", "synthetic_mnist"]

#: Seven-segment strokes in a unit box (x right, y down): name -> ((x0, y0), (x1, y1)).
SEGMENTS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "a": ((0.0, 0.0), (1.0, 0.0)),
    "b": ((1.0, 0.0), (1.0, 0.5)),
    "c": ((1.0, 0.5), (1.0, 1.0)),
    "d": ((0.0, 1.0), (1.0, 1.0)),
    "e": ((0.0, 0.5), (0.0, 1.0)),
    "f": ((0.0, 0.0), (0.0, 0.5)),
    "g": ((0.0, 0.5), (1.0, 0.5)),
}
_DIGIT_SEGMENTS = (
    "abcdef",
    "bc",
    "abged",
    "abgcd",
    "fgbc",
    "afgcd",
    "afgedc",
    "abc",
    "abcdefg",
    "abcdfg",
)
_NAMES = tuple(SEGMENTS)
_ACTIVE = np.array([[name in segs for name in _NAMES] for segs in _DIGIT_SEGMENTS])  # (10, 7)
_ENDS = np.array([SEGMENTS[name] for name in _NAMES])  # (7, 2, 2): segment, end, xy

_CHUNK = 512


def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Draw ``labels (n,)`` as ``(n, size, size)`` uint8 seven-segment digits."""
    n = labels.shape[0]
    u = size / 28.0  # all lengths below are for a 28×28 image, scaled with the size
    height = rng.uniform(13.0, 17.0, n) * u
    width = rng.uniform(7.5, 11.5, n) * u
    centre = (size - 1) / 2.0 + rng.uniform(-1.0, 1.0, (n, 2)) * u
    slant = rng.uniform(-0.25, 0.25, n)
    thickness = rng.uniform(1.5, 3.0, n) * u
    ink = rng.uniform(0.85, 1.0, n)
    jitter = np.clip(rng.normal(0.0, 0.04, (n, 7, 2, 2)), -0.1, 0.1)

    unit = _ENDS[None] + jitter  # (n, 7, 2, 2) in the unit box
    ux, uy = unit[..., 0], unit[..., 1]
    x = centre[:, 0, None, None] + (ux - 0.5) * width[:, None, None]
    y = centre[:, 1, None, None] + (uy - 0.5) * height[:, None, None]
    x = x + slant[:, None, None] * (0.5 - uy) * height[:, None, None]  # lean right at the top

    r = np.arange(size, dtype=np.float64)
    py, px = np.meshgrid(r, r, indexing="ij")
    out = np.empty((n, size, size), np.uint8)
    for start in range(0, n, _CHUNK):
        s = slice(start, min(start + _CHUNK, n))
        x0, y0 = x[s, :, 0, None, None], y[s, :, 0, None, None]  # (b, 7, 1, 1)
        dx, dy = x[s, :, 1, None, None] - x0, y[s, :, 1, None, None] - y0
        length2 = np.maximum(dx * dx + dy * dy, 1e-9)
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0.0, 1.0)
        dist = np.hypot(px - (x0 + t * dx), py - (y0 + t * dy))  # (b, 7, size, size)
        level = np.clip(thickness[s, None, None, None] / 2.0 + 0.5 - dist, 0.0, 1.0)
        level *= _ACTIVE[labels[s]][:, :, None, None]
        value = level.max(axis=1) * ink[s, None, None]
        out[s] = np.rint(value * 255.0).astype(np.uint8)
    return out


def synthetic_digits(n: int, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic digit-like images and their labels.

    Args:
        n: number of images (>= 0). Labels are balanced: every class appears ``n // 10`` or
            ``n // 10 + 1`` times, in a random order.
        seed: non-negative integer; the same ``(n, seed, size)`` gives identical arrays.
        size: image side in pixels (>= 8); the digit scales with it.

    Returns:
        ``images (n, size, size)`` ``uint8`` in 0..255 and ``labels (n,)`` ``int64`` in 0..9.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise StnDeployError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StnDeployError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise StnDeployError(f"size must be an integer >= 8, got {size!r}")
    rng = np.random.default_rng(int(seed))
    labels = rng.permutation(np.arange(int(n)) % 10).astype(np.int64)
    return _render(rng, labels, int(size)), labels


def synthetic_mnist(n_train: int = 512, n_test: int = 256, seed: int = 0) -> MnistArrays:
    """A small MNIST stand-in made of :func:`synthetic_digits` (train and test drawn apart).

    Returns:
        :class:`~stn_deploy.data.mnist.MnistArrays` with ``(n_train, 28, 28)`` /
        ``(n_test, 28, 28)`` ``uint8`` images and ``int64`` labels.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StnDeployError(f"seed must be a non-negative integer, got {seed!r}")
    train_seed, test_seed = (
        int(s) for s in np.random.SeedSequence([int(seed), 7]).generate_state(2, np.uint32)
    )
    train_images, train_labels = synthetic_digits(n_train, seed=train_seed)
    test_images, test_labels = synthetic_digits(n_test, seed=test_seed)
    return MnistArrays(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        source=f"synthetic seven-segment digits (seed={seed})",
    )
