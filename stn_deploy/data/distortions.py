"""The distorted-MNIST variants of the STN paper (Jaderberg et al. 2015, Sec. 4.1), in numpy.

Every distortion is deterministic from a seed: all random parameters for the ``N`` images are
drawn up front from ``np.random.default_rng(seed)``, then the images are warped in chunks, so
the result does not depend on the chunk size and memory stays bounded (about 100 MB for
any ``N``). Warps are inverse-mapped: for every output pixel the source position is computed
and the source image is sampled bilinearly with zero padding (:func:`_bilinear`).

Pixel coordinates: pixel ``(row, col)`` has its centre at ``(x, y) = (col, row)``; an image of
size ``S`` spans ``[-0.5, S - 0.5]`` and has its centre at ``((S - 1) / 2, (S - 1) / 2)``.

Kinds and the exact parameters used (``CANVAS`` gives the output size):

``none`` (28)
    The input as float32 in [0, 1] (``uint8 / 255``).
``r`` (28)
    Rotation about the image centre by an angle uniform in [-90°, 90°].
``rts`` (42)
    Rotation uniform in [-45°, 45°] and isotropic scale uniform in [0.7, 1.2] about the image
    centre, then translation to a uniformly random position on a 42×42 canvas, drawn among the
    positions that keep the transformed bounding box of the digit's non-zero pixels inside the
    canvas (only bilinear blur can spill out; a box too large to fit is centred instead).
``p`` (28)
    Projective: the image square (corners at ``-0.5`` and ``27.5``) is scaled about its centre
    by a factor uniform in [0.75, 1.0], then each of its 4 corners is moved by independent
    N(0, 5 px) noise in x and y; the homography mapping the image corners to the moved corners
    is applied. Draws whose moved quadrilateral is not convex with a margin (the cross product
    of the two edges at every corner must be >= 25 px²) are redrawn, so the warp never folds;
    output pixels beyond the homography's vanishing line are zero.
``e`` (28)
    Elastic, a thin-plate-spline warp: a 4×4 regular grid of control points at pixel
    coordinates {0, 9, 18, 27}² is displaced by independent N(0, 2 px) noise in x and y; the
    inverse map is the TPS interpolant (kernel ``r² log r²``, no regularisation) sending each
    output control point to its displaced position in the source.
``tc`` (60)
    Translated and cluttered: the 28×28 digit is pasted at an integer position uniform over the
    33×33 positions that keep it fully inside a 60×60 canvas (no resampling, so pixels stay
    exact), plus 6 clutter fragments: each a 6×6 crop of a random image of ``clutter_pool``
    (default: the input images, never the image itself), taken at an offset uniform in
    [4, 18] in each axis (the central 20×20 box where MNIST strokes live, so fragments are
    rarely empty), pasted at an integer position uniform over the canvas. Digit and fragments
    are composited with ``max``.

Example::

    >>> import numpy as np
    >>> from stn_deploy.data import distort, synthetic_digits
    >>> images, labels = synthetic_digits(8, seed=0)
    >>> distort(images, "rts", seed=1).shape
    (8, 42, 42)

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stn_deploy.errors import StnDeployError

__all__ = ["CANVAS", "KINDS", "SPLITS", "distort", "make_split", "split_seed"]

#: Output canvas size per distortion kind.
CANVAS: dict[str, int] = {"none": 28, "r": 28, "rts": 42, "p": 28, "e": 28, "tc": 60}
KINDS: tuple[str, ...] = tuple(CANVAS)
#: Split name -> code mixed into the seed by :func:`make_split`.
SPLITS: dict[str, int] = {"train": 0, "test": 1, "val": 2}

INPUT_SIZE = 28
R_MAX_DEGREES = 90.0
RTS_MAX_DEGREES = 45.0
RTS_SCALE = (0.7, 1.2)
P_SCALE = (0.75, 1.0)
P_CORNER_SIGMA = 5.0
P_MIN_CORNER_CROSS = 25.0  # px²: |e1 x e2| at every corner, rejects folds and ~straight corners
E_GRID = np.array([0.0, 9.0, 18.0, 27.0])
E_SIGMA = 2.0
TC_FRAGMENTS = 6
TC_FRAGMENT_SIZE = 6
TC_CROP_RANGE = (4, 18)  # inclusive, for 28×28 pool images

#: Images per chunk: bounds the temporary arrays to ~50 MB whatever N is.
_CHUNK = 512


# --------------------------------------------------------------------------- input checks


def _kind(kind: str) -> str:
    key = kind.lower() if isinstance(kind, str) else None
    if key not in CANVAS:
        raise StnDeployError(
            f"unknown distortion {kind!r}: expected one of {', '.join(KINDS)} (any case)"
        )
    return key


def _check_images(images: np.ndarray, what: str = "images") -> np.ndarray:
    """Check ``(N, 28, 28)`` uint8/int in 0..255 or float in [0, 1]; returns the array."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        hint = "; pass images[:, 0] for (N, 1, 28, 28)" if images.ndim == 4 else ""
        raise StnDeployError(
            f"{what} must have shape (N, {INPUT_SIZE}, {INPUT_SIZE}), got {images.shape}{hint}"
        )
    _check_range(images, what)
    return images


def _check_range(images: np.ndarray, what: str) -> None:
    if images.size == 0:
        return
    kind = images.dtype.kind
    if kind in "iu":
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise StnDeployError(f"integer {what} must be in 0..255, got {lo}..{hi}")
    elif kind == "f":
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= 0.0 and hi <= 1.0):
            raise StnDeployError(
                f"float {what} must be in [0, 1], got {lo}..{hi}; pass uint8 or divide by 255"
            )
    else:
        raise StnDeployError(f"{what} must be uint8 or float in [0, 1], got dtype {images.dtype}")


def _unit_float(images: np.ndarray) -> np.ndarray:
    """uint8/int 0..255 -> ``/ 255`` float32; float -> float32 copy."""
    if images.dtype.kind in "iu":
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=True)


def _check_seed(seed: int, what: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StnDeployError(f"{what} must be a non-negative integer, got {seed!r}")
    return int(seed)


# --------------------------------------------------------------------------- sampling


def _bilinear(images: np.ndarray, src_x: np.ndarray, src_y: np.ndarray) -> np.ndarray:
    """Sample ``images`` at source positions, bilinear, zero outside.

    Args:
        images: ``(B, H, W)`` float32.
        src_x, src_y: ``(B, Ho, Wo)`` source x (column) and y (row) for every output pixel
            (float32 or float64); non-finite entries give 0.

    Returns:
        ``(B, Ho, Wo)`` float32.
    """
    b, h, w = images.shape
    padded = np.zeros((b, h + 2, w + 2), np.float32)
    padded[:, 1:-1, 1:-1] = images
    # In [-1, W] every neighbour lies in the padded image; further out is all padding anyway.
    # NaN (an invalid position) becomes -1, i.e. 0: np.fmax ignores NaN where clip would not.
    sx = np.fmin(np.fmax(src_x, -1.0), float(w)).astype(np.float32, copy=False)
    sy = np.fmin(np.fmax(src_y, -1.0), float(h)).astype(np.float32, copy=False)
    x0 = np.minimum(np.floor(sx), np.float32(w - 1))
    y0 = np.minimum(np.floor(sy), np.float32(h - 1))
    fx = sx - x0
    fy = sy - y0
    wp = w + 2
    base = (np.arange(b, dtype=np.int64) * ((h + 2) * wp))[:, None, None]
    idx = base + ((y0.astype(np.int64) + 1) * wp + (x0.astype(np.int64) + 1))
    flat = padded.ravel()
    v00 = flat.take(idx)
    v01 = flat.take(idx + 1)
    v10 = flat.take(idx + wp)
    v11 = flat.take(idx + (wp + 1))
    top = v00 + fx * (v01 - v00)
    bottom = v10 + fx * (v11 - v10)
    return top + fy * (bottom - top)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each ``(1, size, size)`` float32."""
    r = np.arange(size, dtype=np.float32)
    y, x = np.meshgrid(r, r, indexing="ij")
    return x[None], y[None]


def _affine_sample(images: np.ndarray, inv: np.ndarray, size: int) -> np.ndarray:
    """Warp with the inverse affine maps ``inv (B, 2, 3)`` (output xy1 -> source xy)."""
    x, y = _grid(size)
    a = inv.astype(np.float32)[:, :, :, None, None]
    src_x = a[:, 0, 0] * x + a[:, 0, 1] * y + a[:, 0, 2]
    src_y = a[:, 1, 0] * x + a[:, 1, 1] * y + a[:, 1, 2]
    return _bilinear(images, src_x, src_y)


def _rotation(theta: np.ndarray) -> np.ndarray:
    """``(B,)`` radians -> ``(B, 2, 2)`` rotation matrices."""
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


# --------------------------------------------------------------------------- kinds
# Each kind has a parameter drawer ``(rng, n) -> dict of (n, ...) arrays`` (called once for
# all images) and a chunk warper ``(images (B,28,28) f32, params chunk, pool) -> (B,S,S)``.


def _draw_r(rng: np.random.Generator, n: int, pool_size: int | None) -> dict[str, np.ndarray]:
    return {"theta": np.deg2rad(rng.uniform(-R_MAX_DEGREES, R_MAX_DEGREES, n))}


def _warp_r(images: np.ndarray, p: dict[str, np.ndarray], pool: np.ndarray | None) -> np.ndarray:
    c = (INPUT_SIZE - 1) / 2.0
    rot_inv = _rotation(-p["theta"])  # output -> source
    offset = c - rot_inv @ np.array([c, c])
    inv = np.concatenate([rot_inv, offset[:, :, None]], axis=2)
    return _affine_sample(images, inv, CANVAS["r"])


def _draw_rts(rng: np.random.Generator, n: int, pool_size: int | None) -> dict[str, np.ndarray]:
    return {
        "theta": np.deg2rad(rng.uniform(-RTS_MAX_DEGREES, RTS_MAX_DEGREES, n)),
        "scale": rng.uniform(RTS_SCALE[0], RTS_SCALE[1], n),
        "pos": rng.uniform(0.0, 1.0, (n, 2)),
    }


def _bbox_corners(images: np.ndarray) -> np.ndarray:
    """Pixel-edge corners of the non-zero bounding box, ``(B, 4, 2)`` xy; centre if blank."""
    size = images.shape[-1]
    on = images > 0
    rows, cols = on.any(axis=2), on.any(axis=1)
    blank = ~rows.any(axis=1)
    r0 = rows.argmax(axis=1) - 0.5
    r1 = size - 1 - rows[:, ::-1].argmax(axis=1) + 0.5
    c0 = cols.argmax(axis=1) - 0.5
    c1 = size - 1 - cols[:, ::-1].argmax(axis=1) + 0.5
    mid = (size - 1) / 2.0
    r0, r1, c0, c1 = (np.where(blank, mid, v) for v in (r0, r1, c0, c1))
    xs = np.stack([c0, c1, c1, c0], axis=1)
    ys = np.stack([r0, r0, r1, r1], axis=1)
    return np.stack([xs, ys], axis=2)


def _warp_rts(images: np.ndarray, p: dict[str, np.ndarray], pool: np.ndarray | None) -> np.ndarray:
    size, c = CANVAS["rts"], (INPUT_SIZE - 1) / 2.0
    fwd = _rotation(p["theta"]) * p["scale"][:, None, None]  # source offsets -> output offsets
    corners = (_bbox_corners(images) - c) @ np.swapaxes(fwd, 1, 2)  # (B, 4, 2)
    lo = -0.5 - corners.min(axis=1)  # smallest allowed position of the centre, (B, 2)
    hi = size - 0.5 - corners.max(axis=1)
    centre = np.where(hi >= lo, lo + p["pos"] * (hi - lo), (size - 1) / 2.0)
    rot_inv = _rotation(-p["theta"]) / p["scale"][:, None, None]
    offset = c - (rot_inv @ centre[:, :, None])[:, :, 0]
    inv = np.concatenate([rot_inv, offset[:, :, None]], axis=2)
    return _affine_sample(images, inv, size)


def _square_corners(size: int) -> np.ndarray:
    lo, hi = -0.5, size - 0.5
    return np.array([[lo, lo], [hi, lo], [hi, hi], [lo, hi]])


def _min_corner_cross(quad: np.ndarray) -> np.ndarray:
    """``(n, 4, 2)`` -> ``(n,)`` smallest turn cross product (all > 0: convex, consistent order)."""
    e = np.roll(quad, -1, axis=1) - quad
    e_next = np.roll(e, -1, axis=1)
    return (e[..., 0] * e_next[..., 1] - e[..., 1] * e_next[..., 0]).min(axis=1)


def _draw_p(rng: np.random.Generator, n: int, pool_size: int | None) -> dict[str, np.ndarray]:
    scale = rng.uniform(P_SCALE[0], P_SCALE[1], n)
    noise = rng.normal(0.0, P_CORNER_SIGMA, (n, 4, 2))
    square = _square_corners(INPUT_SIZE)
    c = (INPUT_SIZE - 1) / 2.0
    base = c + scale[:, None, None] * (square - c)
    bad = _min_corner_cross(base + noise) < P_MIN_CORNER_CROSS
    while bad.any():  # redraw folded quadrilaterals; deterministic given the generator
        noise[bad] = rng.normal(0.0, P_CORNER_SIGMA, (int(bad.sum()), 4, 2))
        bad = _min_corner_cross(base + noise) < P_MIN_CORNER_CROSS
    return {"dst": base + noise}


def _homographies(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(B, 3, 3)`` H with ``H @ [src, 1] ~ [dst, 1]`` for the 4 point pairs ``(B, 4, 2)``."""
    b = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows_u = np.stack([x, y, one, zero, zero, zero, -u * x, -u * y], axis=-1)
    rows_v = np.stack([zero, zero, zero, x, y, one, -v * x, -v * y], axis=-1)
    a = np.concatenate([rows_u, rows_v], axis=1)  # (B, 8, 8)
    rhs = np.concatenate([u, v], axis=1)[..., None]  # (B, 8, 1)
    h = np.linalg.solve(a, rhs)[..., 0]
    return np.concatenate([h, np.ones((b, 1))], axis=1).reshape(b, 3, 3)


def _warp_p(images: np.ndarray, p: dict[str, np.ndarray], pool: np.ndarray | None) -> np.ndarray:
    size = CANVAS["p"]
    dst = p["dst"]
    square = np.broadcast_to(_square_corners(INPUT_SIZE), dst.shape)
    h = _homographies(dst, square)  # output -> source
    # Make the denominator positive inside the quadrilateral; <= 0 is beyond the vanishing line.
    centroid = dst.mean(axis=1)
    w_c = h[:, 2, 0] * centroid[:, 0] + h[:, 2, 1] * centroid[:, 1] + h[:, 2, 2]
    h = h * np.sign(w_c)[:, None, None]
    x, y = _grid(size)
    m = h.astype(np.float32)[:, :, :, None, None]
    w = m[:, 2, 0] * x + m[:, 2, 1] * y + m[:, 2, 2]
    valid = w > 1e-6
    w[~valid] = np.nan  # beyond the vanishing line: NaN source position, sampled as 0
    src_x = (m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2]) / w
    src_y = (m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2]) / w
    return _bilinear(images, src_x, src_y)


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    """``U = r² log r²`` with ``U(0) = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r2 > 0, r2 * np.log(np.where(r2 > 0, r2, 1.0)), 0.0)


_TPS_BASIS: np.ndarray | None = None


def _tps_basis() -> np.ndarray:
    """``(S*S, K)`` matrix B: TPS displacement at every output pixel = B @ control displacement."""
    global _TPS_BASIS
    if _TPS_BASIS is None:
        gy, gx = np.meshgrid(E_GRID, E_GRID, indexing="ij")
        ctrl = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (K, 2) xy
        k = ctrl.shape[0]
        poly = np.concatenate([np.ones((k, 1)), ctrl], axis=1)  # (K, 3)
        d2 = ((ctrl[:, None] - ctrl[None]) ** 2).sum(-1)
        system = np.zeros((k + 3, k + 3))
        system[:k, :k] = _tps_kernel(d2)
        system[:k, k:] = poly
        system[k:, :k] = poly.T
        x, y = _grid(CANVAS["e"])
        pts = np.stack([x.ravel(), y.ravel()], axis=1)  # (P, 2)
        phi = np.concatenate(
            [
                _tps_kernel(((pts[:, None] - ctrl[None]) ** 2).sum(-1)),
                np.ones((pts.shape[0], 1)),
                pts,
            ],
            axis=1,
        )  # (P, K + 3)
        _TPS_BASIS = (phi @ np.linalg.inv(system)[:, :k]).astype(np.float32)
    return _TPS_BASIS


def _draw_e(rng: np.random.Generator, n: int, pool_size: int | None) -> dict[str, np.ndarray]:
    return {"disp": rng.normal(0.0, E_SIGMA, (n, E_GRID.size**2, 2)).astype(np.float32)}


def _warp_e(images: np.ndarray, p: dict[str, np.ndarray], pool: np.ndarray | None) -> np.ndarray:
    size = CANVAS["e"]
    basis = _tps_basis()  # (P, K)
    ctrl = np.swapaxes(p["disp"], 1, 2)  # (B, 2, K)
    # The sum over the K control points is spelled out as elementwise float32 multiply-adds in
    # a fixed order, not a matmul: a BLAS gemm's blocking (and so its rounding) depends on the
    # number of columns, i.e. on the chunk size, and on the CPU's kernel, and the result must
    # be bit-identical whatever the chunking.
    disp = np.zeros((ctrl.shape[0], 2, basis.shape[0]), np.float32)
    for k in range(basis.shape[1]):
        disp += ctrl[:, :, k, None] * basis[None, None, :, k]
    disp = disp.reshape(-1, 2, size, size)  # (B, 2, S, S)
    x, y = _grid(size)
    src_x = x + disp[:, 0]
    src_y = y + disp[:, 1]
    return _bilinear(images, src_x, src_y)


def _draw_tc(rng: np.random.Generator, n: int, pool_size: int | None) -> dict[str, np.ndarray]:
    canvas, f = CANVAS["tc"], TC_FRAGMENT_SIZE
    pos = rng.integers(0, canvas - INPUT_SIZE + 1, (n, 2))
    if pool_size is None:  # the inputs themselves: never the image itself
        source = rng.integers(0, n - 1, (n, TC_FRAGMENTS))
        source += source >= np.arange(n)[:, None]
    else:
        source = rng.integers(0, pool_size, (n, TC_FRAGMENTS))
    crop = rng.integers(TC_CROP_RANGE[0], TC_CROP_RANGE[1] + 1, (n, TC_FRAGMENTS, 2))
    paste = rng.integers(0, canvas - f + 1, (n, TC_FRAGMENTS, 2))
    return {"pos": pos, "source": source, "crop": crop, "paste": paste}


def _warp_tc(images: np.ndarray, p: dict[str, np.ndarray], pool: np.ndarray | None) -> np.ndarray:
    assert pool is not None
    b, size, f = images.shape[0], CANVAS["tc"], TC_FRAGMENT_SIZE
    out = np.zeros((b, size, size), np.float32)
    bi = np.arange(b)[:, None, None]
    r28 = np.arange(INPUT_SIZE)
    rows = (p["pos"][:, 1, None] + r28)[:, :, None]
    cols = (p["pos"][:, 0, None] + r28)[:, None, :]
    out[bi, rows, cols] = images
    rf = np.arange(f)
    for k in range(TC_FRAGMENTS):
        src = p["source"][:, k, None, None]
        crop_r = (p["crop"][:, k, 1, None] + rf)[:, :, None]
        crop_c = (p["crop"][:, k, 0, None] + rf)[:, None, :]
        fragment = _unit_float(pool[src, crop_r, crop_c])  # (B, f, f)
        dst_r = (p["paste"][:, k, 1, None] + rf)[:, :, None]
        dst_c = (p["paste"][:, k, 0, None] + rf)[:, None, :]
        out[bi, dst_r, dst_c] = np.maximum(out[bi, dst_r, dst_c], fragment)
    return out


_Drawer = Callable[[np.random.Generator, int, "int | None"], dict[str, np.ndarray]]
_Warper = Callable[[np.ndarray, dict[str, np.ndarray], "np.ndarray | None"], np.ndarray]
_KINDS: dict[str, tuple[_Drawer, _Warper]] = {
    "r": (_draw_r, _warp_r),
    "rts": (_draw_rts, _warp_rts),
    "p": (_draw_p, _warp_p),
    "e": (_draw_e, _warp_e),
    "tc": (_draw_tc, _warp_tc),
}


# --------------------------------------------------------------------------- public API


def distort(
    images: np.ndarray,
    kind: str,
    seed: int,
    clutter_pool: np.ndarray | None = None,
) -> np.ndarray:
    """Apply one of the paper's distortions to every image.

    Args:
        images: ``(N, 28, 28)``, ``uint8`` in 0..255 or float in [0, 1].
        kind: one of ``none, r, rts, p, e, tc`` (any case); see the module docstring.
        seed: non-negative integer; the same ``(images, kind, seed)`` gives bit-identical output.
        clutter_pool: ``(M, 28, 28)`` images (``uint8`` or float in [0, 1]) the ``tc``
            fragments are cut from; default the input images (never an image's own).
            Ignored by the other kinds.

    Returns:
        ``(N, S, S)`` float32 in [0, 1] with ``S = CANVAS[kind]``.

    Raises:
        StnDeployError: unknown kind, wrong shape or value range, bad seed, or ``tc`` on a
            single image without a ``clutter_pool``.

    Example::

        >>> x = distort(np.zeros((4, 28, 28), np.uint8), "tc", seed=0)
        >>> x.shape, x.dtype
        ((4, 60, 60), dtype('float32'))
    """
    key = _kind(kind)
    images = _check_images(images)
    seed = _check_seed(seed)
    n, size = images.shape[0], CANVAS[key]
    if key == "none":
        return _unit_float(images)
    pool: np.ndarray | None = None
    pool_size: int | None = None
    if key == "tc":
        if clutter_pool is None or clutter_pool is images:
            if n == 1:
                raise StnDeployError(
                    "tc needs clutter from other images: got 1 image and no clutter_pool; pass "
                    "clutter_pool=<(M, 28, 28) images>"
                )
            pool = images
        else:
            pool = np.asarray(clutter_pool)
            if pool.ndim != 3 or pool.shape[0] == 0 or pool.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
                raise StnDeployError(
                    f"clutter_pool must have shape (M, {INPUT_SIZE}, {INPUT_SIZE}) with M >= 1, "
                    f"got {pool.shape}"
                )
            _check_range(pool, "clutter_pool")
            pool_size = pool.shape[0]
    out = np.empty((n, size, size), np.float32)
    if n == 0:
        return out
    drawer, warper = _KINDS[key]
    params = drawer(np.random.default_rng(seed), n, pool_size)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        chunk = _unit_float(images[start:stop])
        part = {name: value[start:stop] for name, value in params.items()}
        out[start:stop] = warper(chunk, part, pool)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def split_seed(seed: int, split: str = "train", epoch: int = 0) -> int:
    """The distortion seed :func:`make_split` uses for ``(seed, split, epoch)``.

    ``epoch`` only matters for ``split="train"``: the test and val splits are fixed per seed.
    """
    seed = _check_seed(seed)
    epoch = _check_seed(epoch, "epoch")
    if split not in SPLITS:
        raise StnDeployError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if split != "train":
        epoch = 0
    state = np.random.SeedSequence([seed, SPLITS[split], epoch]).generate_state(1, np.uint64)
    return int(state[0])


def make_split(
    images: np.ndarray,
    labels: np.ndarray,
    kind: str,
    seed: int,
    *,
    split: str = "train",
    epoch: int = 0,
    clutter_pool: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distort a whole split into model-ready arrays.

    The distortion seed is ``split_seed(seed, split, epoch)``: the test split is the same for a
    given seed whatever the epoch, the training split can be re-drawn every epoch.

    Args:
        images: ``(N, 28, 28)`` ``uint8`` or float in [0, 1].
        labels: ``(N,)`` integers; returned unchanged, in order.
        kind: distortion kind, see :data:`CANVAS`.
        seed: the experiment seed (non-negative).
        split: ``"train"``, ``"test"`` or ``"val"``.
        epoch: the training epoch (ignored unless ``split == "train"``).
        clutter_pool: passed to :func:`distort` (``tc`` only).

    Returns:
        ``x (N, 1, S, S)`` float32 in [0, 1] and ``y (N,)`` int64.
    """
    images = _check_images(images)
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
        raise StnDeployError(
            f"labels must be ({images.shape[0]},) integers to match the images, got "
            f"{labels.shape} {labels.dtype}"
        )
    x = distort(images, kind, split_seed(seed, split, epoch), clutter_pool=clutter_pool)
    return x[:, None], labels.astype(np.int64)
