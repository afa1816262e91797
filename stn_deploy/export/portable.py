"""The portable grid-sample lowering: ``F.grid_sample`` in standard ONNX ops of opset 11.

:func:`grid_sample` writes a subgraph equivalent to
``torch.nn.functional.grid_sample(x, grid, mode, padding_mode, align_corners)`` for 4-D inputs
into a :class:`~stn_deploy.export.graph.GraphBuilder`, using no GridSample, no AffineGrid and no
custom op, so any runtime that reads opset-11 ONNX can run it (TFLite / ncnn / MNN converters,
CoreML, old ONNX Runtime builds). Every mode (``bilinear``, ``nearest``, ``bicubic`` with
A = -0.75), every padding (``zeros``, ``border``, ``reflection``) and both ``align_corners``.
:func:`grid_sample_model` wraps it into a standalone model ``(x, grid) -> y`` for tests and
benchmarks.

5-D (volumetric): with ``in_hw`` of three entries ``(D, H, W)``, x ``(N, C, D, H, W)`` and grid
``(N, D_out, H_out, W_out, 3)`` are sampled trilinearly or nearest (torch and ONNX have no 5-D
bicubic), following torch's *scalar* 3-D CPU kernel (``grid_sampler_3d_cpu_impl``), which
differs from the vectorised 2-D one: the coordinate is ``((g + 1) * size - 1) / 2`` unfused,
reflection is ``fmod``-based (:func:`~stn_deploy.export.portable_coords.reflect_scalar`), a NaN
coordinate clips to ``size - 1`` (border, reflection) and, with zeros padding, a non-finite
coordinate puts every tap outside (the pixel is 0, not NaN); weights ``(x1 - ix) * (y1 - iy) *
(z1 - iz)``. Bit-exact against torch in float64 (measured up to ``|g| = 1e30``); float32
differs only in the order of the eight-tap sum.

Shapes: ``x`` is ``(N, C, H, W)`` with H and W static (``in_hw``), N dynamic, and C dynamic
unless ``channels`` is given; ``grid`` is ``(N, H_out, W_out, 2)`` (``grid[..., 0]`` indexes W,
``grid[..., 1]`` indexes H), H_out and W_out may be dynamic; the result is ``(N, C, H_out,
W_out)`` in x's type. Empty tensors (N, H_out or W_out = 0) give an empty result of that shape
(from opset 14 in any combination; at opsets 11-13, where Reshape reads a 0 as "copy this
dimension", only one of N, H_out and W_out may be 0: two at once fail in the runtime's
Reshape).

Types: float32 and float64 are computed in their own type (every constant cast to it, the
same exact arithmetic with float64's split constants); float16 and bfloat16 are computed in
float32 (their integers above 2048 / 256 are not exact, which the pixel indices need) and the
result is cast back, so they get torch's float64 result rounded once to the half type.

How it follows torch (the CPU kernel, ``aten/src/ATen/native/cpu/GridSamplerKernel.cpp``)
-----------------------------------------------------------------------------------------
* Coordinates are computed in torch's operation order, rounding included, for every input
  float (:mod:`stn_deploy.export.portable_coords`): ``(g + 1) * ((size - 1) / 2)`` with
  align_corners; without, torch's kernel evaluates ``(g + 1) * (size / 2) - 0.5`` as a fused
  multiply-add (one rounding: measured on torch 2.13, and what x86 AVX2/AVX-512, ARM64 and CUDA
  builds compile it to). ONNX has no FMA, so the lowering reproduces that rounding exactly from
  plain ops (Dekker's error-free product, Knuth's TwoSum, one final rounding) at every size
  and magnitude; it skips this when the size is a power of two (the product is then exact)
  and on request (``exact_fma=False``, two roundings: half an ulp of the coordinate). Without
  it, torch and the lowering disagree by a few 1e-5 at 224 pixels for bilinear (5e-4 at 4097)
  and, for nearest, occasionally pick the other pixel of a near-tie. A runtime that fuses or
  reassociates float ops may undo the emulation; it then behaves like ``exact_fma=False``.
* ``border`` clips to ``[0, size - 1]``. ``reflection`` reflects like the CPU kernel,
  ``e = |c - low| - trunc(|c - low| / 2span) * 2span`` (fused: one rounding, reproduced
  exactly); ``min(e, 2span - e) + low`` with ``low, 2span = 0, 2(size - 1)`` (align_corners)
  or ``-0.5, 2 size`` (not), then clips to ``[0, size - 1]``; a size-1 axis with align_corners
  reflects to 0 as torch does.
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
* NaN and +-inf in the grid give torch's per-pixel result: the pixel is NaN where torch's is
  (bilinear and bicubic with zeros padding, bicubic with any padding), and otherwise exactly
  torch's value (border and reflection read pixel 0 for a NaN coordinate, nearest with zeros
  reads 0). The NaN stays in the weights; tap indices replace it (``Where(IsNaN)``) and are
  clipped before any Cast, so every gathered index is in range and one bad grid point never
  touches another pixel or image. Finite coordinates too large for the type overflow to +-inf
  exactly when torch's do.

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

Index arithmetic is exact: tap coordinates are integer-valued floats, the row-major offset
``y * Wp + x`` is one ``MatMul`` against a constant ``[[1, Wp]]`` (bicubic: a Mul and an Add),
exact because integers below 2**24 add and multiply exactly in float32 whatever the order (the
builder refuses images where ``Hp * Wp`` could exceed that), then Cast to int32. Opset 11 has no
integer Min/Max/Clip, another reason to clip in float.

Opsets: Add, Sub, Mul, Div, Abs, Floor, Round, Min, Max, Clip, IsNaN, Where, Less, Equal, And,
MatMul, Cast, Reshape, Flatten, Unsqueeze, Transpose, Pad, Slice, Concat, Shape, Expand,
GatherElements and ReduceSum, all in opset 11; the builder writes ReduceSum's and Unsqueeze's
``axes`` as an input from opset 13 on, and Reshape gets ``allowzero`` from opset 14 on, so the
same lowering is valid at every opset from 11 to the newest.

Example:
    >>> m = grid_sample_model(2, 1, 28, 28, 28, 28, "bilinear", "zeros", False)
    >>> [i.name for i in m.graph.input], [o.name for o in m.graph.output]
    (['x', 'grid'], ['y'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from stn_deploy.errors import StnDeployError
from stn_deploy.export.graph import GraphBuilder
from stn_deploy.export.portable_coords import (
    F32,
    F64,
    Num,
    clip,
    fconst,
    pad_coords,
    unnormalize,
    where_nan,
)

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


# ------------------------------------------------------------------ context
#: the element types the lowering takes
FLOAT_TYPES = {
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
}


def _i64(g: GraphBuilder, values, name: str) -> str:
    return g.const(np.asarray(values, dtype=np.int64), name=name)


def elem_type(dtype: object) -> int:
    """The ONNX element type of a numpy dtype (or of an ONNX element type); refuses anything but
    float16, bfloat16, float32 and float64 with a one-line error."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        elem = int(dtype)
    else:
        try:
            elem = int(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
        except (TypeError, ValueError, KeyError):
            elem = -1
    if elem not in FLOAT_TYPES:
        name = (
            onnx.TensorProto.DataType.Name(elem)
            if elem in onnx.TensorProto.DataType.values()
            else dtype
        )
        raise StnDeployError(
            f"the portable grid sample takes float16, bfloat16, float32 or float64 tensors, "
            f"got {str(name).lower()}"
        )
    return elem


@dataclass
class _Sampler:
    """What the mode functions share: the builder, the number type, the image size and
    settings, and reshape targets that survive empty tensors."""

    g: GraphBuilder
    num: Num
    h: int
    w: int
    padding_mode: str
    align_corners: bool
    channels: int | None
    d: int = 0  # the volume's depth (5-D), 0 for 4-D
    n: str = ""  # (1,) int64 N (before opset 14: -1, or 0 = "copy" when P is 0)
    c: str = ""  # (1,) int64 C, from opset 14 when C is dynamic
    p: str = ""  # (1,) int64 H_out * W_out (before opset 14: -1 where it is 0)
    shapes: dict = field(default_factory=dict)

    def f(self, values, name: str, trail: int = 1) -> str:
        return fconst(self.g, values, name, self.num, trail)

    def reshape(self, t: str, dims: tuple, name: str) -> str:
        """Reshape to ``dims`` (ints, "N", "C", "P") so that empty tensors survive: from opset
        14 with explicit sizes and ``allowzero``; before, N and P as (-1, P), or (0, -1) when P
        is 0 (valid unless N and P are both 0), C as 0 ("copy"). Both N and P stay computed:
        optimizers (ONNX Runtime's, onnxoptimizer's) rewrite a shape with a single unknown
        into a constant with -1 there, which breaks N = 0 before opset 14."""
        g, new = self.g, self.g.opset >= 14
        shape = self.shapes.get(dims)
        if shape is None:
            parts = []
            for d in dims:
                if d == "N":
                    parts.append(self.n if new or "P" in dims else _i64(g, [0], "gs_copy"))
                elif d == "C" and not self.channels:
                    parts.append(self.c if new else _i64(g, [0], "gs_copy"))
                elif d == "P":
                    parts.append(self.p)
                else:
                    parts.append(_i64(g, [self.channels if d == "C" else d], "gs_dim"))
            shape = self.shapes[dims] = g.node("Concat", parts, name="gs_shape", axis=0)
        return g.node("Reshape", [t, shape], name=name, allowzero=1 if new else None)


def _shape_slice(g: GraphBuilder, shape: str, start: int, stop: int, name: str) -> str:
    return g.node("Slice", [shape, _i64(g, [start], "gs_s"), _i64(g, [stop], "gs_s")], name=name)


def _prepare_shapes(s: _Sampler, x: str, grid: str) -> tuple[str, str]:
    """Fill in N, C and P; returns H_out and W_out."""
    g = s.g
    gshape = g.node("Shape", [grid], name="gs_gshape")
    ho, wo = _shape_slice(g, gshape, 1, 2, "gs_ho"), _shape_slice(g, gshape, 2, 3, "gs_wo")
    p = g.node("Mul", [ho, wo], name="gs_p")
    if g.opset >= 14:
        s.n = _shape_slice(g, gshape, 0, 1, "gs_n")
        if not s.channels:
            s.c = _shape_slice(g, g.node("Shape", [x], name="gs_xshape"), 1, 2, "gs_c")
    else:  # a 0 would mean "copy": N is -1 ("the rest"), or P is when P is 0
        empty = g.node("Equal", [p, _i64(g, [0], "gs_zero_i")], name="gs_p0")
        rest, copy = _i64(g, [-1], "gs_rest"), _i64(g, [0], "gs_copy")
        s.n = g.node("Where", [empty, copy, rest], name="gs_nsafe")
        p = g.node("Where", [empty, rest, p], name="gs_psafe")
    s.p = p
    return ho, wo


# -------------------------------------------------------------------- gather
def _row_major(s: _Sampler, coords: str, wp: int, hp: int = 0) -> str:
    """``x + wp * y`` of integer-valued float coordinates ``(N, 2, P)`` as ``(N, 1, P)``
    (5-D, ``hp`` given: ``x + wp * y + wp * hp * z`` of ``(N, 3, P)``): one MatMul against a
    constant, exact (integers below 2**24 add and multiply exactly)."""
    row = [1.0, wp] + ([wp * hp] if hp else [])
    rowmajor = s.g.const(np.array([row]), s.num.dtype, name="gs_rowmajor")
    return s.g.node("MatMul", [rowmajor, coords], name="gs_base")


def _sample(s: _Sampler, x: str, index: str, lo: int, hi: int) -> str:
    """Read the zero-framed x at the float row-major ``index`` ``(N, ...)``: ``(N, C, K)`` with
    K the number of index entries per image, one GatherElements for every tap and channel
    (several times faster on ONNX Runtime than a Gather of single floats)."""
    g = s.g
    if lo or hi:
        axes = 3 if s.d else 2
        pads = _i64(g, [0, 0] + [lo] * axes + [0, 0] + [hi] * axes, "gs_pads")
        # constant_value left out: it defaults to 0, and onnx2tf cannot convert the Pad with it
        x = g.node("Pad", [x, pads], name="gs_xpad", mode="constant")
    plane = (s.h + lo + hi) * (s.w + lo + hi) * ((s.d + lo + hi) if s.d else 1)
    table = s.reshape(x, ("N", "C", plane), "gs_table")
    idx = g.node("Cast", [index], name="gs_idx_i", to=onnx.TensorProto.INT32)
    idx = g.node("Flatten", [idx], name="gs_idx_f", axis=1)  # (N, K): safe when empty
    idx = g.with_axes("Unsqueeze", idx, [1], name="gs_idx")  # (N, 1, K)
    if s.channels is None:
        one = _i64(g, [1], "gs_one1")
        c = _shape_slice(g, g.node("Shape", [x], name="gs_xshape"), 1, 2, "gs_c")
        reps = g.node("Concat", [one, c, one], name="gs_expand_c", axis=0)
        idx = g.node("Expand", [idx, reps], name="gs_idx_c")
    elif s.channels != 1:
        idx = g.node("Expand", [idx, _i64(g, [1, s.channels, 1], "gs_expand_c")], name="gs_idx_c")
    return g.node("GatherElements", [table, idx], name="gs_vals", axis=2)  # (N, C, K)


def _check_plane(h: int, w: int, frame: int, d: int = 0) -> None:
    depth = d + 2 * frame if d else 1
    if (h + 2 * frame) * (w + 2 * frame) * depth > _F32_EXACT_INT:
        size = f"{d}x{h}x{w}" if d else f"{h}x{w}"
        raise StnDeployError(
            f"input {size} is too large for the portable grid sample: pixel indices must stay "
            f"below 2**24 to be exact in float32"
        )


# --------------------------------------------------------------------- modes
# Each takes u (N, 2, P) and returns (N, C, P).
def _bilinear(s: _Sampler, x: str, u: str) -> str:
    g, h, w = s.g, s.h, s.w
    u = pad_coords(g, u, (w, h), s.padding_mode, s.align_corners, s.num)  # NaN-free if padded
    f = g.node("Floor", [u], name="gs_f")
    t = g.node("Sub", [u, f], name="gs_t")  # NaN when u is NaN or +-inf (zeros): as torch
    # weights (N, 1, 4, P), tap k = 2 * ty + tx: torch's (1 - ty)(1 - tx), (1 - ty) tx, ...
    t4 = s.reshape(t, ("N", 2, 1, "P"), "gs_t4")
    sign, offset = s.f([[-1], [1]], "gs_wsign"), s.f([[1], [0]], "gs_woff")
    factors = g.node("Add", [g.node("Mul", [t4, sign], name="gs_wm"), offset], name="gs_wf")
    axis1 = _i64(g, [1], "gs_axis1")
    s0, s1, s2 = _i64(g, [0], "gs_s0"), _i64(g, [1], "gs_s1"), _i64(g, [2], "gs_s2")
    wx = g.node("Slice", [factors, s0, s1, axis1], name="gs_wx")  # (N, 1, 2, P)
    wy = g.node("Slice", [factors, s1, s2, axis1], name="gs_wy")
    wy = s.reshape(wy, ("N", 2, 1, "P"), "gs_wyc")  # (N, 2, 1, P)
    weights = g.node("Mul", [wy, wx], name="gs_w22")  # (N, 2, 2, P)
    weights = s.reshape(weights, ("N", 1, 4, "P"), "gs_w")
    # indices (N, 4, P)
    if s.padding_mode == "zeros":
        lo = hi = 2
        f = where_nan(g, f, -2.0, s.num, "gs_fn")  # +-inf is clipped, NaN would not be
        f = clip(g, f, [-2.0, -2.0], [float(w), float(h)], "gs_fc", s.num)
    else:  # f already in [0, size - 1]; the +1 tap may be `size` (weight 0): frame it
        lo, hi = 0, 1
    wp = w + lo + hi
    taps = lo * (wp + 1) + np.array([[0], [1], [wp], [wp + 1]])
    index = g.node("Add", [_row_major(s, f, wp), s.f(taps, "gs_taps")], name="gs_index")
    vals = _sample(s, x, index, lo, hi)  # (N, C, 4 P)
    vals = s.reshape(vals, ("N", "C", 4, "P"), "gs_vals4")
    weighted = g.node("Mul", [vals, weights], name="gs_wv")
    return g.with_axes("ReduceSum", weighted, [2], name="gs_sum", keepdims=0)


def _nearest(s: _Sampler, x: str, u: str) -> str:
    g, h, w = s.g, s.h, s.w
    u = pad_coords(g, u, (w, h), s.padding_mode, s.align_corners, s.num)
    r = g.node("Round", [u], name="gs_r")  # half to even, as torch's nearbyint
    if s.padding_mode == "zeros":
        lo = 1
        r = where_nan(g, r, -1.0, s.num, "gs_rn")  # NaN reads 0, as torch
        r = clip(g, r, [-1.0, -1.0], [float(w), float(h)], "gs_rc", s.num)
    else:  # already in [0, size - 1]
        lo = 0
    wp = w + 2 * lo
    index = _row_major(s, r, wp)
    if lo:
        index = g.node("Add", [index, s.f(lo * (wp + 1), "gs_shift")], name="gs_index")
    return _sample(s, x, index, lo, lo)


def _cubic_coefficients(s: _Sampler, t: str) -> str:
    """torch's cubic convolution weights of the four taps, ``(N, 2, 4, P)``."""
    g, a = s.g, CUBIC_A
    # distances t+1, t, 1-t, 2-t
    t4 = s.reshape(t, ("N", 2, 1, "P"), "gs_t4")
    dist = g.node(
        "Add",
        [
            g.node("Mul", [t4, s.f([[1], [1], [-1], [-1]], "gs_dsign")], name="gs_dm"),
            s.f([[1], [0], [1], [2]], "gs_doff"),
        ],
        name="gs_d",
    )
    # ((a x - b) x + c) x - d: torch's outer-tap cubic; the inner taps' ((A+2) x - (A+3)) x x + 1
    # is the same with c = 0, d = -1 (adding 0 and subtracting -1 round exactly the same).
    pa = s.f([[a], [a + 2], [a + 2], [a]], "gs_ca")
    pb = s.f([[5 * a], [a + 3], [a + 3], [5 * a]], "gs_cb")
    pc = s.f([[8 * a], [0], [0], [8 * a]], "gs_cc")
    pd = s.f([[4 * a], [-1], [-1], [4 * a]], "gs_cd")
    c = g.node("Sub", [g.node("Mul", [dist, pa], name="gs_c1"), pb], name="gs_c2")
    c = g.node("Add", [g.node("Mul", [c, dist], name="gs_c3"), pc], name="gs_c4")
    return g.node("Sub", [g.node("Mul", [c, dist], name="gs_c5"), pd], name="gs_coef")


def _bicubic(s: _Sampler, x: str, u: str) -> str:
    g, h, w = s.g, s.h, s.w
    f = g.node("Floor", [u], name="gs_f")
    t = g.node("Sub", [u, f], name="gs_t")  # NaN when u is NaN or +-inf: a NaN pixel, as torch
    c = _cubic_coefficients(s, t)
    f = g.node("Where", [g.node("IsNaN", [t], name="gs_tn"), s.f(0.0, "gs_f0"), f], name="gs_fs")
    axis1 = _i64(g, [1], "gs_axis1")
    s0, s1, s2 = _i64(g, [0], "gs_s0"), _i64(g, [1], "gs_s1"), _i64(g, [2], "gs_s2")
    cx = g.node("Slice", [c, s0, s1, axis1], name="gs_cx")  # (N, 1, 4, P): x tap j
    cx = s.reshape(cx, ("N", 1, 1, 4, "P"), "gs_cx5")
    cy = g.node("Slice", [c, s1, s2, axis1], name="gs_cy")  # (N, 1, 4, P): y tap i
    # tap coordinates (N, 2, 4, P), finite, padded one by one as torch's get_value_bounded
    f4 = s.reshape(f, ("N", 2, 1, "P"), "gs_f4")
    taps = g.node("Add", [f4, s.f([[-1], [0], [1], [2]], "gs_tapoff")], name="gs_taps")
    if s.padding_mode == "zeros":
        lo = 1
        taps = clip(g, taps, [-1.0, -1.0], [float(w), float(h)], "gs_tc", s.num, trail=2)
    else:
        lo = 0
        taps = pad_coords(
            g, taps, (w, h), s.padding_mode, s.align_corners, s.num, trail=2, finite=True
        )
        if s.padding_mode == "reflection" and not s.align_corners:
            # past 2**23 a tap's |tap + 0.5| rounds, and it reflects to a half-integer:
            # torch truncates each coordinate to int (>= 0 here: floor) before indexing
            taps = g.node("Floor", [taps], name="gs_tfloor")
    wp = w + 2 * lo
    # row-major index of tap (i, j) = y_i * wp + x_j (+ the frame): (N, 4, 4, P), exact
    tx = g.node("Slice", [taps, s0, s1, axis1], name="gs_tx")  # (N, 1, 4, P)
    ty = g.node("Slice", [taps, s1, s2, axis1], name="gs_ty")
    ty = s.reshape(ty, ("N", 4, 1, "P"), "gs_tyc")  # (N, 4, 1, P)
    if lo:
        tx = g.node("Add", [tx, s.f(lo * (wp + 1), "gs_shift")], name="gs_txs")
    rows = g.node("Mul", [ty, s.f(wp, "gs_wp")], name="gs_rowoff")
    index = g.node("Add", [rows, tx], name="gs_index")
    vals = _sample(s, x, index, lo, lo)  # (N, C, 16 P)
    vals = s.reshape(vals, ("N", "C", 4, 4, "P"), "gs_vals44")
    rows = g.with_axes(
        "ReduceSum", g.node("Mul", [vals, cx], name="gs_vx"), [3], name="gs_rows", keepdims=0
    )  # (N, C, 4, P): x first, as torch
    return g.with_axes(
        "ReduceSum", g.node("Mul", [rows, cy], name="gs_vy"), [2], name="gs_sum", keepdims=0
    )


# ------------------------------------------------------------- 5-D modes
# torch's 3-D CPU kernel (``grid_sampler_3d_cpu_impl``, scalar code): coordinates
# ``((g + 1) * size - 1) / 2`` unfused, NaN clipped to ``size - 1`` (border, reflection), taps
# outside the volume skipped (zeros: a NaN or infinite coordinate puts every tap outside, so
# the pixel is 0, not NaN), weights ``(x1 - ix) * (y1 - iy) * (z1 - iz)``.
def _trilinear(s: _Sampler, x: str, u: str) -> str:
    g, d, h, w = s.g, s.d, s.h, s.w
    sizes = (w, h, d)
    u = pad_coords(g, u, sizes, s.padding_mode, s.align_corners, s.num, nan_to_last=True)
    f = g.node("Floor", [u], name="gs_f")
    f1 = g.node("Add", [f, s.f(1.0, "gs_one")], name="gs_f1")
    lo_w = g.with_axes("Unsqueeze", g.node("Sub", [f1, u], name="gs_wlo"), [2], name="gs_wlo2")
    hi_w = g.with_axes("Unsqueeze", g.node("Sub", [u, f], name="gs_whi"), [2], name="gs_whi2")
    factors = g.node("Concat", [lo_w, hi_w], name="gs_wf", axis=2)  # (N, 3, 2, P)
    axis1 = _i64(g, [1], "gs_axis1")
    s0, s1 = _i64(g, [0], "gs_s0"), _i64(g, [1], "gs_s1")
    s2, s3 = _i64(g, [2], "gs_s2"), _i64(g, [3], "gs_s3")
    wx = g.node("Slice", [factors, s0, s1, axis1], name="gs_wx")  # (N, 1, 2, P)
    wy = g.node("Slice", [factors, s1, s2, axis1], name="gs_wy")
    wy = s.reshape(wy, ("N", 2, 1, "P"), "gs_wyc")  # (N, 2, 1, P)
    wz = g.node("Slice", [factors, s2, s3, axis1], name="gs_wz")
    wz = s.reshape(wz, ("N", 2, 1, "P"), "gs_wzc")  # (N, 2, 1, P)
    wxy = s.reshape(g.node("Mul", [wx, wy], name="gs_wxy"), ("N", 1, 4, "P"), "gs_wxy4")
    weights = s.reshape(g.node("Mul", [wxy, wz], name="gs_w24"), ("N", 1, 8, "P"), "gs_w")
    if s.padding_mode == "zeros":  # a non-finite coordinate: every tap outside, pixel 0
        weights = where_nan(g, weights, 0.0, s.num, "gs_wn")
        lo = hi = 2
        f = where_nan(g, f, -2.0, s.num, "gs_fn")
        f = clip(g, f, [-2.0] * 3, [float(w), float(h), float(d)], "gs_fc", s.num)
    else:  # f in [0, size - 1]; the +1 tap may be `size` (weight 0): frame it
        lo, hi = 0, 1
    wp, hp = w + lo + hi, h + lo + hi
    k = np.arange(8)
    taps = lo * (1 + wp + wp * hp) + (k & 1) + ((k >> 1) & 1) * wp + (k >> 2) * wp * hp
    index = g.node(
        "Add", [_row_major(s, f, wp, hp), s.f(taps.reshape(8, 1), "gs_taps")], name="gs_index"
    )
    vals = _sample(s, x, index, lo, hi)  # (N, C, 8 P)
    vals = s.reshape(vals, ("N", "C", 8, "P"), "gs_vals8")
    weighted = g.node("Mul", [vals, weights], name="gs_wv")
    return g.with_axes("ReduceSum", weighted, [2], name="gs_sum", keepdims=0)


def _nearest3d(s: _Sampler, x: str, u: str) -> str:
    g, d, h, w = s.g, s.d, s.h, s.w
    sizes = (w, h, d)
    u = pad_coords(g, u, sizes, s.padding_mode, s.align_corners, s.num, nan_to_last=True)
    r = g.node("Round", [u], name="gs_r")  # half to even, as torch's nearbyint
    if s.padding_mode == "zeros":
        lo = 1
        r = where_nan(g, r, -1.0, s.num, "gs_rn")  # NaN reads 0, as torch
        r = clip(g, r, [-1.0] * 3, [float(w), float(h), float(d)], "gs_rc", s.num)
    else:
        lo = 0
    wp, hp = w + 2 * lo, h + 2 * lo
    index = _row_major(s, r, wp, hp)
    if lo:
        index = g.node("Add", [index, s.f(lo * (1 + wp + wp * hp), "gs_shift")], name="gs_index")
    return _sample(s, x, index, lo, lo)


_MODE_FUNCS_3D = {"bilinear": _trilinear, "nearest": _nearest3d}

_MODE_FUNCS = {"bilinear": _bilinear, "nearest": _nearest, "bicubic": _bicubic}
_FRAME = {"bilinear": 2, "nearest": 1, "bicubic": 1}


# ------------------------------------------------------------------- public
def _cast_inputs(
    g: GraphBuilder, x: str, grid: str, x_type: int, grid_type: int
) -> tuple[Num, str, str]:
    """float64 when either input is, float32 otherwise (float16 and bfloat16 included)."""
    double = onnx.TensorProto.DOUBLE
    compute = double if double in (x_type, grid_type) else onnx.TensorProto.FLOAT
    if x_type != compute:
        x = g.node("Cast", [x], name="gs_x_cast", to=compute)
    if grid_type != compute:
        grid = g.node("Cast", [grid], name="gs_grid_cast", to=compute)
    return (F64 if compute == double else F32), x, grid


def _output(s: _Sampler, out: str, ho: str, wo: str) -> str:
    """``(N, C, P)`` -> ``(N, C, H_out, W_out)``, empty dimensions included."""
    g = s.g
    if g.opset >= 14:
        c = s.c or _i64(g, [s.channels], "gs_dim")
        shape = g.node("Concat", [s.n, c, ho, wo], name="gs_yshape", axis=0)
        return g.node("Reshape", [out, shape], name="gs_y", allowzero=1)
    # a 0 means "copy": H_out = 0 copies P = 0; W_out = 0 becomes -1 ("the rest", 0 here)
    empty = g.node("Equal", [wo, _i64(g, [0], "gs_zero_i")], name="gs_wo0")
    wo = g.node("Where", [empty, _i64(g, [-1], "gs_rest"), wo], name="gs_wosafe")
    shape = g.node("Concat", [_i64(g, [0, 0], "gs_copy2"), ho, wo], name="gs_yshape", axis=0)
    return g.node("Reshape", [out, shape], name="gs_y")


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
    dtype: object = np.float32,
    grid_dtype: object = None,
) -> str:
    """Write ``F.grid_sample(x, grid, mode, padding_mode, align_corners)`` into ``g``.

    Args:
        g: the builder (its opset may be anything from 11 on).
        x: name of a ``(N, C, H, W)`` tensor.
        grid: name of a ``(N, H_out, W_out, 2)`` tensor of normalised ``(x, y)``.
        in_hw: the static ``(H, W)`` of x.
        mode: ``bilinear``, ``nearest`` or ``bicubic``.
        padding_mode: ``zeros``, ``border`` or ``reflection``.
        align_corners: as in torch.
        channels: C when static (C = 1 saves the index broadcast), None when dynamic.
        exact_fma: with align_corners False, reproduce the single rounding of torch's fused
            ``(g + 1) * (size / 2) - 0.5`` exactly (about 20 extra elementwise ops on the
            grid, ~25 % of the run time at 64x1x28x28); False rounds twice, which moves a
            coordinate by at most half an ulp (a bilinear error up to ~2**-24 * size * |dx|,
            and, rarely, the other pixel for a nearest-mode tie).
        dtype: x's type (a numpy dtype or an ONNX element type): float16, bfloat16, float32 or
            float64; the result has it.
        grid_dtype: the grid's type, x's when None.

    Returns:
        the name of the ``(N, C, H_out, W_out)`` result.

    Raises:
        StnDeployError: an unknown mode or padding, a bad size, an unsupported type.
    """
    _check_settings(mode, padding_mode, align_corners)
    if g.opset < 11:
        raise StnDeployError(
            f"the portable grid sample needs opset 11 or newer, the graph is at opset {g.opset}"
        )
    if isinstance(in_hw, (tuple, list)) and len(in_hw) == 3:
        return _grid_sample_3d(
            g, x, grid, in_hw, mode, padding_mode, bool(align_corners), channels, dtype, grid_dtype
        )
    if not isinstance(in_hw, (tuple, list)) or len(in_hw) != 2:
        raise StnDeployError(f"in_hw must be (H, W) or (D, H, W), got {in_hw!r}")
    h = _check_dim(in_hw[0], "input height")
    w = _check_dim(in_hw[1], "input width")
    channels = _check_dim(channels, "channels", allow_none=True)
    _check_plane(h, w, _FRAME[mode])
    x_type = elem_type(dtype)
    grid_type = x_type if grid_dtype is None else elem_type(grid_dtype)
    num, x, grid = _cast_inputs(g, x, grid, x_type, grid_type)
    s = _Sampler(g, num, h, w, padding_mode, bool(align_corners), channels)
    ho, wo = _prepare_shapes(s, x, grid)
    # (N, H_out, W_out, 2) -> (N, 2, P): coordinates on axis 1, output pixels contiguous
    coords = g.node("Transpose", [grid], name="gs_grid_t", perm=[0, 3, 1, 2])
    coords = s.reshape(coords, ("N", 2, "P"), "gs_coords")
    u = unnormalize(g, coords, (w, h), bool(align_corners), bool(exact_fma), padding_mode, num)
    y = _output(s, _MODE_FUNCS[mode](s, x, u), ho, wo)
    compute = onnx.TensorProto.DOUBLE if num is F64 else onnx.TensorProto.FLOAT
    return y if x_type == compute else g.node("Cast", [y], name="gs_y_cast", to=x_type)


def _grid_sample_3d(
    g: GraphBuilder,
    x: str,
    grid: str,
    in_dhw,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    channels: int | None,
    dtype: object,
    grid_dtype: object,
) -> str:
    """The 5-D (volumetric) form of :func:`grid_sample`: x ``(N, C, D, H, W)``, grid ``(N,
    D_out, H_out, W_out, 3)`` of normalised ``(x, y, z)``; bilinear (trilinear) and nearest
    only, as torch and ONNX. Follows torch's scalar 3-D CPU kernel (see ``_trilinear``). Empty
    outputs: any combination from opset 14; before, H_out = 0 fails in the runtime's
    Reshape."""
    if mode not in _MODE_FUNCS_3D:
        raise StnDeployError(
            f"mode {mode!r} has no 5-D (volumetric) form: torch and ONNX offer bilinear and "
            "nearest for 5-D inputs"
        )
    d = _check_dim(in_dhw[0], "input depth")
    h = _check_dim(in_dhw[1], "input height")
    w = _check_dim(in_dhw[2], "input width")
    channels = _check_dim(channels, "channels", allow_none=True)
    _check_plane(h, w, _FRAME[mode], d)
    x_type = elem_type(dtype)
    grid_type = x_type if grid_dtype is None else elem_type(grid_dtype)
    num, x, grid = _cast_inputs(g, x, grid, x_type, grid_type)
    s = _Sampler(g, num, h, w, padding_mode, align_corners, channels, d=d)
    gshape = g.node("Shape", [grid], name="gs_gshape")
    do = _shape_slice(g, gshape, 1, 2, "gs_do")
    ho, wo = _shape_slice(g, gshape, 2, 3, "gs_ho"), _shape_slice(g, gshape, 3, 4, "gs_wo")
    p = g.node("Mul", [g.node("Mul", [do, ho], name="gs_dh"), wo], name="gs_p")
    if g.opset >= 14:
        s.n = _shape_slice(g, gshape, 0, 1, "gs_n")
        if not channels:
            s.c = _shape_slice(g, g.node("Shape", [x], name="gs_xshape"), 1, 2, "gs_c")
    else:
        empty = g.node("Equal", [p, _i64(g, [0], "gs_zero_i")], name="gs_p0")
        rest, copy = _i64(g, [-1], "gs_rest"), _i64(g, [0], "gs_copy")
        s.n = g.node("Where", [empty, copy, rest], name="gs_nsafe")
        p = g.node("Where", [empty, rest, p], name="gs_psafe")
    s.p = p
    # (N, D_out, H_out, W_out, 3) -> (N, 3, P)
    coords = g.node("Transpose", [grid], name="gs_grid_t", perm=[0, 4, 1, 2, 3])
    coords = s.reshape(coords, ("N", 3, "P"), "gs_coords")
    u = unnormalize(g, coords, (w, h, d), align_corners, False, padding_mode, num, fused=False)
    out = _MODE_FUNCS_3D[mode](s, x, u)  # (N, C, P)
    if g.opset >= 14:
        c = s.c or _i64(g, [channels], "gs_dim")
        shape = g.node("Concat", [s.n, c, do, ho, wo], name="gs_yshape", axis=0)
        y = g.node("Reshape", [out, shape], name="gs_y", allowzero=1)
    else:
        empty = g.node("Equal", [wo, _i64(g, [0], "gs_zero_i")], name="gs_wo0")
        wo = g.node("Where", [empty, _i64(g, [-1], "gs_rest"), wo], name="gs_wosafe")
        shape = g.node(
            "Concat", [_i64(g, [0, 0], "gs_copy2"), do, ho, wo], name="gs_yshape", axis=0
        )
        y = g.node("Reshape", [out, shape], name="gs_y")
    compute = onnx.TensorProto.DOUBLE if num is F64 else onnx.TensorProto.FLOAT
    return y if x_type == compute else g.node("Cast", [y], name="gs_y_cast", to=x_type)


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
    dtype: object = np.float32,
) -> onnx.ModelProto:
    """A standalone model ``y = grid_sample(x, grid)`` with inputs ``x`` ``(N, C, H, W)``,
    ``grid`` ``(N, H_out, W_out, 2)`` and output ``y`` ``(N, C, H_out, W_out)``, all of type
    ``dtype`` (float32 unless told: float16, bfloat16 or float64).

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
        dtype=dtype,
    )
    g.rename(y, "y")
    settings = f"mode={mode} padding_mode={padding_mode} align_corners={bool(align_corners)}"
    elem = elem_type(dtype)
    return g.make_model(
        [
            helper.make_tensor_value_info("x", elem, [batch, c_dim, h, w]),
            helper.make_tensor_value_info("grid", elem, [batch, ho_dim, wo_dim, 2]),
        ],
        [helper.make_tensor_value_info("y", elem, [batch, c_dim, ho_dim, wo_dim])],
        name="stn_deploy_portable_grid_sample",
        doc_string=f"portable (opset-11 ops) lowering of torch grid_sample: {settings}",
    )
