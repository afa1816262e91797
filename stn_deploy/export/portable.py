"""The portable grid-sample lowering: ``F.grid_sample`` in standard ONNX ops of opset 11.

:func:`grid_sample` writes a subgraph equivalent to
``torch.nn.functional.grid_sample(x, grid, mode, padding_mode, align_corners)`` for 4-D inputs
into a :class:`~stn_deploy.export.graph.GraphBuilder`, using no GridSample, no AffineGrid and no
custom op, so any runtime that reads opset-11 ONNX can run it (TFLite / ncnn / MNN converters,
CoreML, old ONNX Runtime builds). Every mode (``bilinear``, ``nearest``, ``bicubic`` with
A = -0.75), every padding (``zeros``, ``border``, ``reflection``) and both ``align_corners``.
:func:`grid_sample_model` wraps it into a standalone model ``(x, grid) -> y`` for tests and
benchmarks.

Shapes: ``x`` is ``(N, C, H, W)`` float32 with H and W static (``in_hw``), N dynamic, and C
dynamic unless ``channels`` is given; ``grid`` is ``(N, H_out, W_out, 2)`` (``grid[..., 0]``
indexes W, ``grid[..., 1]`` indexes H), H_out and W_out may be dynamic; the result is
``(N, C, H_out, W_out)``.

How it follows torch (the CPU kernel, ``aten/src/ATen/native/cpu/GridSamplerKernel.cpp``)
-----------------------------------------------------------------------------------------
* Coordinates are float32 computed in torch's operation order, so they round like torch's:
  ``(g + 1) * ((size - 1) / 2)`` with align_corners; without, torch's kernel evaluates
  ``(g + 1) * (size / 2) - 0.5`` as a fused multiply-add (one rounding: measured on torch
  2.13, and what x86 AVX2/AVX-512, ARM64 and CUDA builds compile it to). ONNX has no FMA, so
  the lowering reproduces that rounding exactly from plain float32 ops (Dekker's error-free
  product with a Veltkamp split, Knuth's TwoSum, one final rounding); it skips this when the
  size is a power of two (the product is then exact) and on request (``exact_fma=False``, two
  roundings: half an ulp of the coordinate). Without it, torch and the lowering disagree by a
  few 1e-5 at 224 pixels for bilinear and, for nearest, occasionally pick the other pixel of a
  near-tie. A runtime that fuses or reassociates float ops may undo the emulation; it then
  behaves like ``exact_fma=False``.
* ``border`` clips to ``[0, size - 1]``. ``reflection`` reflects like the CPU kernel,
  ``e = |c - low| - floor(|c - low| / 2span) * 2span; min(e, 2span - e) + low`` with
  ``low, 2span = 0, 2(size - 1)`` (align_corners) or ``-0.5, 2 size`` (not), then clips to
  ``[0, size - 1]``; a size-1 axis with align_corners reflects to 0 as torch does.
* bilinear and nearest pad the unnormalised coordinate; nearest rounds half to even (ONNX
  ``Round``, torch's ``nearbyint``). bicubic floors the unpadded coordinate and pads each of its
  taps on its own, as torch's ``get_value_bounded`` does; its weights are torch's polynomials
  (written as one ``((a x - b) x + c) x - d`` over the four taps, which rounds exactly like
  torch's two forms), summed along x first, then along y, as torch does. Bilinear weights are
  torch's ``(1 - ty)(1 - tx)``, ``(1 - ty) tx``, ... products.
* Taps outside the image read 0 with ``zeros`` padding: instead of a validity mask per tap, x is
  padded with a frame of zeros (1 pixel for nearest and bicubic, 2 for bilinear) and the integer
  tap coordinates are clipped into the frame, so an out-of-range tap lands on a zero and every
  index is in range by construction. (Bilinear clips its *floor* coordinate to ``[-2, size]``
  before forming its two taps, hence the 2-pixel frame; with border and reflection its
  right/bottom tap can be ``size`` with weight 0, so it gets a 1-pixel frame on that side.) The
  frame costs one copy of x; masks would cost several passes over the larger per-tap tensors.
* Any finite grid gives a finite result: the grid is first clipped to +-2**100 (beyond which
  nothing changes: the coordinate is out of range, clipped, or reflected from a value whose
  float32 spacing already exceeds the image), and tap coordinates are clipped before any Cast.

Layout and gathering (what makes it fast on ONNX Runtime)
---------------------------------------------------------
The grid is transposed once to ``(N, 2, P)`` (P = H_out * W_out): x and y on axis 1, output
pixels contiguous. Every per-coordinate constant then has shape ``(2, 1)`` and every broadcast
runs along long contiguous rows; taps go on their own axis ``(N, K, P)``. (Tap- or
coordinate-innermost layouts such as ``(N, P, 4)`` made ONNX Runtime's broadcasts and
reductions 5-10x slower.) All taps of a mode (1, 4 or 16) and all channels are read by ONE
``GatherElements`` on the zero-framed image as rows ``(N, C, Hp*Wp)``, with int32 indices
``(N, C, K*P)`` (one index row per image, expanded over C): no batch offsets, no NHWC
transpose, and 7x faster on ONNX Runtime than a ``Gather`` of single floats (measured:
200k taps, 48 us vs 360 us). Weights are multiplied in and summed with ``ReduceSum`` over the
tap axis; the result is already NCHW. (The onnx reference evaluator's GatherElements goes
through ``np.choose`` and fails on a gathered axis longer than 64, i.e. on images above 64
pixels; the tests run it on small images and with a corrected GatherElements.)

Index arithmetic is exact: tap coordinates are integer-valued float32, the row-major offset
``y * Wp + x`` is one ``MatMul`` against a constant ``[[1, Wp]]`` (bicubic: a Mul and an Add),
exact because integers below 2**24 add and multiply exactly in float32 whatever the order (the
builder refuses images where ``Hp * Wp`` could exceed that), then Cast to int32. Opset 11 has no
integer Min/Max/Clip, another reason to clip in float.

Opsets: Add, Sub, Mul, Div, Abs, Floor, Round, Min, Max, Clip, MatMul, Cast, Reshape,
Transpose, Pad, Slice, Concat, Shape, Expand, GatherElements and ReduceSum, all in opset 11; the
builder writes ReduceSum's ``axes`` as an input from opset 13 on, so the same lowering is valid
at every opset from 11 to the newest.

Example:
    >>> m = grid_sample_model(2, 1, 28, 28, 28, 28, "bilinear", "zeros", False)
    >>> [i.name for i in m.graph.input], [o.name for o in m.graph.output]
    (['x', 'grid'], ['y'])
"""

from __future__ import annotations

import numpy as np
import onnx

from stn_deploy.errors import StnDeployError
from stn_deploy.export.graph import GraphBuilder, value_info

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")
#: torch's bicubic convolution constant
CUBIC_A = -0.75
#: integers up to this magnitude are exact in float32
_F32_EXACT_INT = 2**24


def _check_settings(mode: str, padding_mode: str, align_corners: bool) -> None:
    if mode not in MODES:
        raise StnDeployError(
            f"unknown grid-sample mode {mode!r}: expected one of {', '.join(MODES)}"
        )
    if padding_mode not in PADDING_MODES:
        raise StnDeployError(
            f"unknown padding mode {padding_mode!r}: expected one of {', '.join(PADDING_MODES)}"
        )
    if not isinstance(align_corners, (bool, np.bool_)):
        raise StnDeployError(f"align_corners must be True or False, got {align_corners!r}")


def _check_dim(value: object, what: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise StnDeployError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------- constants
# Coordinate tensors are laid out (N, 2, ...) with x (W) then y (H) on axis 1; a per-coordinate
# constant therefore has shape (2, 1, ...) and broadcasts over long contiguous rows.
def _f32(g: GraphBuilder, values, name: str, trail: int = 1) -> str:
    """A float32 constant. A per-coordinate pair becomes shape ``(2,) + (1,) * trail``, or a
    scalar when both entries agree."""
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[:1].reshape(()) if arr[0] == arr[1] else arr.reshape((2,) + (1,) * trail)
    return g.const(arr, name=name)


def _i64(g: GraphBuilder, values, name: str) -> str:
    return g.const(np.asarray(values, dtype=np.int64), name=name)


def _significant_bits(v: int) -> int:
    while v and v % 2 == 0:
        v //= 2
    return v.bit_length()


# -------------------------------------------------------------- coordinates
def _unnormalize(
    g: GraphBuilder, coords: str, sizes: tuple[int, int], align_corners: bool, exact_fma: bool
) -> str:
    """``(g + 1) * ((size - 1) / 2)`` or ``fma(g + 1, size / 2, -0.5)`` on ``(N, 2, P)``."""
    big = 2.0**100  # keeps every later step finite, even for +-inf; beyond it nothing changes
    coords = g.node(
        "Clip", [coords, _f32(g, -big, "gs_gmin"), _f32(g, big, "gs_gmax")], name="gs_gc"
    )
    a = g.node("Add", [coords, _f32(g, 1.0, "one")], name="gs_g1")
    if align_corners:
        return g.node("Mul", [a, _f32(g, [(s - 1) / 2 for s in sizes], "gs_scale")], name="gs_u")
    scale = _f32(g, [s / 2 for s in sizes], "gs_scale")
    p = g.node("Mul", [a, scale], name="gs_p")
    bits = [_significant_bits(s) for s in sizes]
    # a power-of-two size makes p exact and one rounding is left anyway; the exact split below
    # needs sizes of at most 12 significant bits (all sizes up to 4096)
    if not exact_fma or max(bits) == 1 or max(bits) > 12:
        return g.node("Sub", [p, _f32(g, 0.5, "half")], name="gs_u")
    # torch's CPU kernel computes (g + 1) * scale - 0.5 with a fused multiply-add (one rounding).
    # Emulate it exactly in float32: Dekker's error-free product gives p + err == a * scale
    # (Veltkamp split of a into 12-bit halves; scale has <= 12 significant bits), Knuth's
    # TwoSum gives s1 + r1 == p - 0.5, and the last Add rounds s1 + (r1 + err) once.
    c = g.node("Mul", [a, _f32(g, 4097.0, "gs_split")], name="gs_vc")
    a_hi = g.node("Sub", [c, g.node("Sub", [c, a], name="gs_vd")], name="gs_ahi")
    a_lo = g.node("Sub", [a, a_hi], name="gs_alo")
    err = g.node(
        "Add",
        [
            g.node("Sub", [g.node("Mul", [a_hi, scale], name="gs_ph"), p], name="gs_pe"),
            g.node("Mul", [a_lo, scale], name="gs_pl"),
        ],
        name="gs_perr",
    )
    neg_half = _f32(g, -0.5, "gs_mhalf")
    s1 = g.node("Add", [p, neg_half], name="gs_s1")
    bb = g.node("Sub", [s1, p], name="gs_bb")
    r1 = g.node(
        "Add",
        [
            g.node("Sub", [p, g.node("Sub", [s1, bb], name="gs_sa")], name="gs_sb"),
            g.node("Sub", [neg_half, bb], name="gs_sc"),
        ],
        name="gs_r1",
    )
    return g.node("Add", [s1, g.node("Add", [r1, err], name="gs_lo")], name="gs_u")


def _clip(g: GraphBuilder, t: str, lo, hi, name: str, trail: int = 1) -> str:
    lo_c, hi_c = _f32(g, lo, "gs_lo", trail), _f32(g, hi, "gs_hi", trail)
    if lo[0] == lo[1] and hi[0] == hi[1]:
        return g.node("Clip", [t, lo_c, hi_c], name=name)  # scalar bounds (opset 11 Clip)
    return g.node("Min", [g.node("Max", [t, lo_c], name=f"{name}_lo"), hi_c], name=name)


def _reflect(
    g: GraphBuilder, t: str, sizes: tuple[int, int], align_corners: bool, trail: int
) -> str:
    """torch's vectorised ``reflect_coordinates`` (before its clip)."""
    if align_corners:
        low = 0.0
        # a size-1 axis reflects to 0; any nonzero span keeps the arithmetic finite and the
        # clip to [0, 0] that follows gives torch's 0.
        span2 = [2 * (s - 1) if s > 1 else 1 for s in sizes]
    else:
        low = -0.5
        span2 = [2 * s for s in sizes]
    span2_c = _f32(g, span2, "gs_span2", trail)
    if low:
        t = g.node("Sub", [t, _f32(g, low, "gs_low")], name="gs_rs")
    a = g.node("Abs", [t], name="gs_ra")
    flips = g.node("Floor", [g.node("Div", [a, span2_c], name="gs_rq")], name="gs_rf")
    extra = g.node("Sub", [a, g.node("Mul", [flips, span2_c], name="gs_rm")], name="gs_re")
    other = g.node("Sub", [span2_c, extra], name="gs_ro")
    r = g.node("Min", [extra, other], name="gs_rmin")
    if low:
        r = g.node("Add", [r, _f32(g, low, "gs_low")], name="gs_rr")
    return r


def _pad_coords(
    g: GraphBuilder,
    t: str,
    sizes: tuple[int, int],
    padding_mode: str,
    align_corners: bool,
    trail: int = 1,
) -> str:
    """torch's ``compute_coordinates``: border clips, reflection reflects then clips."""
    if padding_mode == "zeros":
        return t
    if padding_mode == "reflection":
        t = _reflect(g, t, sizes, align_corners, trail)
    return _clip(g, t, [0.0, 0.0], [s - 1.0 for s in sizes], "gs_pc", trail)


# -------------------------------------------------------------------- gather
def _row_major(g: GraphBuilder, coords: str, wp: int) -> str:
    """``x + wp * y`` of integer-valued float coordinates ``(N, 2, P)`` as ``(N, 1, P)``: one
    MatMul against a constant, exact (integers below 2**24 add and multiply exactly)."""
    rowmajor = g.const(np.array([[1.0, wp]], np.float32), name="gs_rowmajor")
    return g.node("MatMul", [rowmajor, coords], name="gs_base")


def _sample(g: GraphBuilder, x: str, index: str, lo: int, hi: int, channels: int | None) -> str:
    """Read the zero-framed x at the float row-major ``index`` ``(N, ...)``: ``(N, C, K)`` with
    K the number of index entries per image, one GatherElements for every tap and channel
    (several times faster on ONNX Runtime than a Gather of single floats)."""
    if lo or hi:
        pads = _i64(g, [0, 0, lo, lo, 0, 0, hi, hi], "gs_pads")
        x = g.node("Pad", [x, pads, _f32(g, 0.0, "zero")], name="gs_xpad", mode="constant")
    table = g.node("Reshape", [x, _i64(g, [0, 0, -1], "gs_nc_flat")], name="gs_table")
    idx = g.node("Cast", [index], name="gs_idx_i", to=onnx.TensorProto.INT32)
    idx = g.node("Reshape", [idx, _i64(g, [0, 1, -1], "gs_n1_flat")], name="gs_idx")  # (N, 1, K)
    if channels is None:
        c = g.node(
            "Slice",
            [g.node("Shape", [x], name="gs_xshape"), _i64(g, [1], "gs_s1"), _i64(g, [2], "gs_s2")],
            name="gs_c",
        )
        one = _i64(g, [1], "gs_one1")
        reps = g.node("Concat", [one, c, one], name="gs_expand_c", axis=0)
        idx = g.node("Expand", [idx, reps], name="gs_idx_c")
    elif channels != 1:
        idx = g.node("Expand", [idx, _i64(g, [1, channels, 1], "gs_expand_c")], name="gs_idx_c")
    return g.node("GatherElements", [table, idx], name="gs_vals", axis=2)  # (N, C, K)


def _check_plane(h: int, w: int, frame: int) -> None:
    if (h + 2 * frame) * (w + 2 * frame) > _F32_EXACT_INT:
        raise StnDeployError(
            f"input {h}x{w} is too large for the portable grid sample: pixel indices must stay "
            f"below 2**24 to be exact in float32"
        )


# --------------------------------------------------------------------- modes
# Each takes u (N, 2, P) and returns (N, C, P).
def _bilinear(g, x, u, h, w, padding_mode, align_corners, channels) -> str:
    sizes = (w, h)
    u = _pad_coords(g, u, sizes, padding_mode, align_corners)
    f = g.node("Floor", [u], name="gs_f")
    t = g.node("Sub", [u, f], name="gs_t")
    # weights (N, 1, 4, P), tap k = 2 * ty + tx: torch's (1 - ty)(1 - tx), (1 - ty) tx, ...
    c1p = _i64(g, [0, 2, 1, -1], "gs_c1p")
    t4 = g.node("Reshape", [t, c1p], name="gs_t4")
    sign, offset = _f32(g, [[-1], [1]], "gs_wsign"), _f32(g, [[1], [0]], "gs_woff")
    factors = g.node("Add", [g.node("Mul", [t4, sign], name="gs_wm"), offset], name="gs_wf")
    axis1 = _i64(g, [1], "gs_axis1")
    s0, s1, s2 = _i64(g, [0], "gs_s0"), _i64(g, [1], "gs_s1"), _i64(g, [2], "gs_s2")
    wx = g.node("Slice", [factors, s0, s1, axis1], name="gs_wx")  # (N, 1, 2, P)
    wy = g.node("Slice", [factors, s1, s2, axis1], name="gs_wy")
    wy = g.node("Reshape", [wy, c1p], name="gs_wyc")  # (N, 2, 1, P)
    weights = g.node("Mul", [wy, wx], name="gs_w22")  # (N, 2, 2, P)
    weights = g.node("Reshape", [weights, _i64(g, [0, 1, 4, -1], "gs_1k4")], name="gs_w")
    # indices (N, 4, P)
    if padding_mode == "zeros":
        lo = hi = 2
        f = _clip(g, f, [-2.0, -2.0], [float(w), float(h)], "gs_fc")
    else:  # f already in [0, size - 1]; the +1 tap may be `size` (weight 0): frame it
        lo, hi = 0, 1
    wp = w + lo + hi
    taps = lo * (wp + 1) + np.array([[0], [1], [wp], [wp + 1]])
    index = g.node("Add", [_row_major(g, f, wp), _f32(g, taps, "gs_taps")], name="gs_index")
    vals = _sample(g, x, index, lo, hi, channels)  # (N, C, 4 P)
    vals = g.node("Reshape", [vals, _i64(g, [0, 0, 4, -1], "gs_ck4")], name="gs_vals4")
    weighted = g.node("Mul", [vals, weights], name="gs_wv")
    return g.with_axes("ReduceSum", weighted, [2], name="gs_sum", keepdims=0)


def _nearest(g, x, u, h, w, padding_mode, align_corners, channels) -> str:
    u = _pad_coords(g, u, (w, h), padding_mode, align_corners)
    r = g.node("Round", [u], name="gs_r")  # half to even, as torch's nearbyint
    if padding_mode == "zeros":
        lo = 1
        r = _clip(g, r, [-1.0, -1.0], [float(w), float(h)], "gs_rc")
    else:  # already in [0, size - 1]
        lo = 0
    wp = w + 2 * lo
    index = _row_major(g, r, wp)
    if lo:
        index = g.node("Add", [index, _f32(g, lo * (wp + 1), "gs_shift")], name="gs_index")
    return _sample(g, x, index, lo, lo, channels)


def _bicubic(g, x, u, h, w, padding_mode, align_corners, channels) -> str:
    a = CUBIC_A
    f = g.node("Floor", [u], name="gs_f")
    t = g.node("Sub", [u, f], name="gs_t")
    c1p = _i64(g, [0, 2, 1, -1], "gs_c1p")
    # coefficients (N, 2, 4 taps, P): distances t+1, t, 1-t, 2-t
    t4 = g.node("Reshape", [t, c1p], name="gs_t4")
    dist = g.node(
        "Add",
        [
            g.node("Mul", [t4, _f32(g, [[1], [1], [-1], [-1]], "gs_dsign")], name="gs_dm"),
            _f32(g, [[1], [0], [1], [2]], "gs_doff"),
        ],
        name="gs_d",
    )
    # ((a x - b) x + c) x - d: torch's outer-tap cubic; the inner taps' ((A+2) x - (A+3)) x x + 1
    # is the same with c = 0, d = -1 (adding 0 and subtracting -1 round exactly the same).
    pa = _f32(g, [[a], [a + 2], [a + 2], [a]], "gs_ca")
    pb = _f32(g, [[5 * a], [a + 3], [a + 3], [5 * a]], "gs_cb")
    pc = _f32(g, [[8 * a], [0], [0], [8 * a]], "gs_cc")
    pd = _f32(g, [[4 * a], [-1], [-1], [4 * a]], "gs_cd")
    c = g.node("Sub", [g.node("Mul", [dist, pa], name="gs_c1"), pb], name="gs_c2")
    c = g.node("Add", [g.node("Mul", [c, dist], name="gs_c3"), pc], name="gs_c4")
    c = g.node("Sub", [g.node("Mul", [c, dist], name="gs_c5"), pd], name="gs_coef")
    axis1 = _i64(g, [1], "gs_axis1")
    s0, s1, s2 = _i64(g, [0], "gs_s0"), _i64(g, [1], "gs_s1"), _i64(g, [2], "gs_s2")
    cx = g.node("Slice", [c, s0, s1, axis1], name="gs_cx")  # (N, 1, 4, P): x tap j
    cx = g.node("Reshape", [cx, _i64(g, [0, 1, 1, 4, -1], "gs_11k4")], name="gs_cx5")
    cy = g.node("Slice", [c, s1, s2, axis1], name="gs_cy")  # (N, 1, 4, P): y tap i
    # tap coordinates (N, 2, 4, P), padded one by one as torch's get_value_bounded
    f4 = g.node("Reshape", [f, c1p], name="gs_f4")
    taps = g.node("Add", [f4, _f32(g, [[-1], [0], [1], [2]], "gs_tapoff")], name="gs_taps")
    if padding_mode == "zeros":
        lo = 1
        taps = _clip(g, taps, [-1.0, -1.0], [float(w), float(h)], "gs_tc", trail=2)
    else:
        lo = 0
        taps = _pad_coords(g, taps, (w, h), padding_mode, align_corners, trail=2)
    wp = w + 2 * lo
    # row-major index of tap (i, j) = y_i * wp + x_j (+ the frame): (N, 4, 4, P), exact
    tx = g.node("Slice", [taps, s0, s1, axis1], name="gs_tx")  # (N, 1, 4, P)
    ty = g.node("Slice", [taps, s1, s2, axis1], name="gs_ty")
    ty = g.node("Reshape", [ty, _i64(g, [0, 4, 1, -1], "gs_k41")], name="gs_tyc")  # (N, 4, 1, P)
    if lo:
        tx = g.node("Add", [tx, _f32(g, lo * (wp + 1), "gs_shift")], name="gs_txs")
    rows = g.node("Mul", [ty, _f32(g, wp, "gs_wp")], name="gs_rowoff")
    index = g.node("Add", [rows, tx], name="gs_index")
    vals = _sample(g, x, index, lo, lo, channels)  # (N, C, 16 P)
    vals = g.node("Reshape", [vals, _i64(g, [0, 0, 4, 4, -1], "gs_ck44")], name="gs_vals44")
    rows = g.with_axes(
        "ReduceSum", g.node("Mul", [vals, cx], name="gs_vx"), [3], name="gs_rows", keepdims=0
    )  # (N, C, 4, P): x first, as torch
    return g.with_axes(
        "ReduceSum", g.node("Mul", [rows, cy], name="gs_vy"), [2], name="gs_sum", keepdims=0
    )


_MODE_FUNCS = {"bilinear": _bilinear, "nearest": _nearest, "bicubic": _bicubic}
_FRAME = {"bilinear": 2, "nearest": 1, "bicubic": 1}


# ------------------------------------------------------------------- public
def grid_sample(
    g: GraphBuilder,
    x: str,
    grid: str,
    *,
    in_hw: tuple[int, int],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    channels: int | None = None,
    exact_fma: bool = True,
) -> str:
    """Write ``F.grid_sample(x, grid, mode, padding_mode, align_corners)`` into ``g``.

    Args:
        g: the builder (its opset may be anything from 11 on).
        x: name of a ``(N, C, H, W)`` float32 tensor.
        grid: name of a ``(N, H_out, W_out, 2)`` float32 tensor of normalised ``(x, y)``.
        in_hw: the static ``(H, W)`` of x.
        mode: ``bilinear``, ``nearest`` or ``bicubic``.
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: as in torch.
        channels: C when static (C = 1 saves the index broadcast), None when dynamic.
        exact_fma: with align_corners False, reproduce the single rounding of torch's fused
            ``(g + 1) * (size / 2) - 0.5`` exactly (about 15 extra elementwise ops on the
            grid, ~25 % of the run time at 64x1x28x28); False rounds twice, which moves a
            coordinate by at most half an ulp (a bilinear error up to ~2**-24 * size * |dx|,
            and, rarely, the other pixel for a nearest-mode tie).

    Returns:
        the name of the ``(N, C, H_out, W_out)`` float32 result.

    Raises:
        StnDeployError: an unknown mode or padding, a bad size.
    """
    _check_settings(mode, padding_mode, align_corners)
    if g.opset < 11:
        raise StnDeployError(
            f"the portable grid sample needs opset 11 or newer, the graph is at opset {g.opset}"
        )
    if not isinstance(in_hw, (tuple, list)) or len(in_hw) != 2:
        raise StnDeployError(f"in_hw must be (H, W), got {in_hw!r}")
    h = _check_dim(in_hw[0], "input height")
    w = _check_dim(in_hw[1], "input width")
    channels = _check_dim(channels, "channels", allow_none=True)
    _check_plane(h, w, _FRAME[mode])
    # (N, H_out, W_out, 2) -> (N, 2, P): coordinates on axis 1, output pixels contiguous
    coords = g.node("Transpose", [grid], name="gs_grid_t", perm=[0, 3, 1, 2])
    coords = g.node("Reshape", [coords, _i64(g, [0, 2, -1], "gs_c2")], name="gs_coords")
    u = _unnormalize(g, coords, (w, h), bool(align_corners), bool(exact_fma))
    out = _MODE_FUNCS[mode](g, x, u, h, w, padding_mode, bool(align_corners), channels)
    nc = g.node(
        "Slice",
        [g.node("Shape", [x], name="gs_xshape"), _i64(g, [0], "gs_s0"), _i64(g, [2], "gs_s2")],
        name="gs_nc",
    )
    hw = g.node(
        "Slice",
        [g.node("Shape", [grid], name="gs_gshape"), _i64(g, [1], "gs_s1"), _i64(g, [3], "gs_s3")],
        name="gs_hw",
    )
    shape = g.node("Concat", [nc, hw], name="gs_yshape", axis=0)
    return g.node("Reshape", [out, shape], name="gs_y")


def grid_sample_model(
    n: int | None,
    c: int | None,
    h: int,
    w: int,
    h_out: int | None,
    w_out: int | None,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    opset: int = 11,
    dynamic_batch: bool = True,
    *,
    exact_fma: bool = True,
) -> onnx.ModelProto:
    """A standalone model ``y = grid_sample(x, grid)`` with inputs ``x`` ``(N, C, H, W)``,
    ``grid`` ``(N, H_out, W_out, 2)`` and output ``y`` ``(N, C, H_out, W_out)``, all float32.

    ``n`` is only recorded when ``dynamic_batch`` is False; ``c``, ``h_out`` or ``w_out`` None
    make that dimension dynamic.

    Example:
        >>> m = grid_sample_model(1, 3, 8, 6, 5, 7, "bicubic", "reflection", True, opset=17)
        >>> m.opset_import[0].version
        17
    """
    _check_settings(mode, padding_mode, align_corners)
    if not isinstance(opset, int) or not 11 <= opset <= onnx.defs.onnx_opset_version():
        raise StnDeployError(
            f"opset must be between 11 and {onnx.defs.onnx_opset_version()}, got {opset!r}"
        )
    batch = "N" if dynamic_batch or n is None else _check_dim(n, "batch")
    c = _check_dim(c, "channels", allow_none=True)
    h_out = _check_dim(h_out, "output height", allow_none=True)
    w_out = _check_dim(w_out, "output width", allow_none=True)
    c_dim = "C" if c is None else c
    ho_dim = "H_out" if h_out is None else h_out
    wo_dim = "W_out" if w_out is None else w_out
    g = GraphBuilder(opset, taken=("x", "grid", "y"))
    y = grid_sample(
        g,
        "x",
        "grid",
        in_hw=(h, w),
        mode=mode,
        padding_mode=padding_mode,
        align_corners=align_corners,
        channels=c,
        exact_fma=exact_fma,
    )
    g.rename(y, "y")
    settings = f"mode={mode} padding_mode={padding_mode} align_corners={bool(align_corners)}"
    return g.make_model(
        [
            value_info("x", np.float32, [batch, c_dim, h, w]),
            value_info("grid", np.float32, [batch, ho_dim, wo_dim, 2]),
        ],
        [value_info("y", np.float32, [batch, c_dim, ho_dim, wo_dim])],
        name="stn_deploy_portable_grid_sample",
        doc_string=f"portable (opset-11 ops) lowering of torch grid_sample: {settings}",
    )
