"""Coordinate arithmetic of the portable grid sample, rounded exactly like torch's CPU kernel.

:mod:`stn_deploy.export.portable` gathers and weights the pixels; this module computes the
source coordinates, on ``(N, 2, ...)`` tensors (x then y on axis 1), in float32 or float64
(:class:`Num`), with plain ONNX ops of opset 11. What it reproduces, bit for bit, for every
float input (NaN, +-inf and values up to the largest finite float included):

* **Unnormalisation.** align_corners: ``(g + 1) * ((size - 1) / 2)``, one product as torch.
  Otherwise torch's kernel computes ``(g + 1) * (size / 2) - 0.5`` as a fused multiply-add (one
  rounding; float32 and float64, measured on torch 2.13). ONNX has no FMA: :func:`unnormalize`
  gets the exact product ``p + err`` (Dekker's product, Veltkamp splits of both factors) and
  rounds ``p + err - 0.5`` once: for ``|g + 1| < 2**24`` (float64: ``2**53``) with Knuth's
  TwoSum (exact there, the sizes being below 2**23), above it, where the product is an integer,
  by keeping ``p`` except on an exact tie that rounded up (``p + 2 err`` then, as the FMA
  does). The reflection path works on the values scaled by ``2**-16`` (float64: ``2**-32``)
  so no intermediate overflows unless torch's result does; zeros and border padding only need
  the exact value below ``2**24``: above it the coordinate is out of the image either way, and
  ``p`` overflows exactly when torch does (one tie, ``(g + 1) * size / 2 == 2**128 - 2**103``,
  is mapped to torch's ``FLT_MAX``). Skipped for power-of-two sizes (``p`` is exact) and on
  request (``exact_fma=False``: two roundings, half an ulp of the coordinate).
* **Reflection.** torch's vectorised ``reflect_coordinates``: ``a = |c - low|``, ``flips =
  trunc(a / 2span)``, ``extra = a - flips * 2span`` *fused* (one rounding: measured, float32
  and float64), ``min(extra, 2span - extra) + low``. The product ``flips * 2span`` is split
  exactly (Dekker), so ``extra`` rounds once at every magnitude (a plain Mul + Sub diverges
  from torch once ``|c|`` passes ~2**24, by up to 128 px at ``|g| = 1e7``).
* **Non-finite coordinates.** torch's clip turns NaN into 0 (border, reflection; a reflected
  +-inf is NaN, hence 0); with zeros padding a NaN or infinite coordinate gives NaN weights
  (bilinear, bicubic: a NaN pixel) or an out-of-range tap (nearest: 0). The lowering keeps the
  NaN in the weights and replaces it in the *tap indices* (``Where(IsNaN)``) so that every
  gathered index is in range: one bad grid point spoils its own output pixel only, exactly as
  in torch, instead of failing the whole batch (ONNX Runtime rejects an out-of-range
  GatherElements index).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from stn_deploy.export.graph import GraphBuilder


@dataclass(frozen=True)
class Num:
    """The float type the coordinates are computed in, and its exactness constants."""

    dtype: type
    #: significand bits (24, 53)
    bits: int
    #: exponent of the overflow-safe pre-scale of the reflection path
    shift: int

    @property
    def split(self) -> float:
        """Veltkamp's constant ``2**ceil(bits / 2) + 1``: halves of at most bits/2 bits."""
        return float(2 ** ((self.bits + 1) // 2) + 1)

    @property
    def lim(self) -> float:
        """``2**bits``: from here on every float is an even integer."""
        return float(2**self.bits)


F32 = Num(np.float32, 24, 16)
F64 = Num(np.float64, 53, 32)


def fconst(g: GraphBuilder, values, name: str, num: Num, trail: int = 1) -> str:
    """A float constant of ``num``'s type; a per-coordinate pair (or triple, 5-D) becomes shape
    ``(k,) + (1,) * trail``, or a scalar when all entries agree."""
    arr = np.asarray(values, dtype=num.dtype)
    if arr.ndim == 1 and arr.size in (2, 3):
        same = bool(np.all(arr == arr[0]))
        arr = arr[:1].reshape(()) if same else arr.reshape((arr.size,) + (1,) * trail)
    return g.const(arr, num.dtype, name=name)


def where_nan(g: GraphBuilder, t: str, value: float, num: Num, name: str) -> str:
    """``t`` with its NaNs replaced by ``value``."""
    bad = g.node("IsNaN", [t], name=f"{name}_isnan")
    return g.node("Where", [bad, fconst(g, value, f"{name}_v", num), t], name=name)


# ------------------------------------------------------------ error-free steps
def _veltkamp(values, num: Num) -> tuple[np.ndarray, np.ndarray]:
    """The exact split ``v = hi + lo`` of constants, each half of at most bits/2 bits."""
    v = np.asarray(values, dtype=num.dtype)
    c = (v * num.dtype(num.split)).astype(num.dtype)
    hi = (c - (c - v)).astype(num.dtype)
    return hi, (v - hi).astype(num.dtype)


def two_product(g: GraphBuilder, x: str, c, num: Num, tag: str, trail: int = 1) -> tuple[str, str]:
    """Dekker's product of a tensor and a (per-coordinate) constant: ``p = fl(x * c)`` and the
    exact ``err = x * c - p`` (Shewchuk's Two-Product; no overflow: the caller keeps ``|x|``
    small enough, and no underflow: ``|x|`` is 0 or far above the subnormals)."""
    c = np.asarray(c, dtype=num.dtype)
    ch, cl = _veltkamp(c, num)
    p = g.node("Mul", [x, fconst(g, c, f"{tag}_c", num, trail)], name=f"{tag}_p")
    xs = g.node("Mul", [x, fconst(g, num.split, "gs_split", num)], name=f"{tag}_xs")
    xh = g.node("Sub", [xs, g.node("Sub", [xs, x], name=f"{tag}_xd")], name=f"{tag}_xh")
    xl = g.node("Sub", [x, xh], name=f"{tag}_xl")
    ch_c = fconst(g, ch, f"{tag}_ch", num, trail)
    hh = g.node("Mul", [xh, ch_c], name=f"{tag}_hh")
    lh = g.node("Mul", [xl, ch_c], name=f"{tag}_lh")
    if not np.any(cl):  # c has at most bits/2 bits: x_hi * c and x_lo * c are exact
        t = g.node("Sub", [hh, p], name=f"{tag}_t1")
        return p, g.node("Add", [t, lh], name=f"{tag}_err")
    cl_c = fconst(g, cl, f"{tag}_cl", num, trail)
    t = g.node("Sub", [g.node("Sub", [p, hh], name=f"{tag}_t1"), lh], name=f"{tag}_t2")
    t = g.node("Sub", [t, g.node("Mul", [xh, cl_c], name=f"{tag}_hl")], name=f"{tag}_t3")
    return p, g.node("Sub", [g.node("Mul", [xl, cl_c], name=f"{tag}_ll"), t], name=f"{tag}_err")


def _round_small(g: GraphBuilder, p: str, err: str, c: str, tag: str) -> str:
    """``fl(p + err + c)`` with ``c`` a constant: TwoSum ``s + r = p + c``, then ``s + (r +
    err)``. Exact while ``r + err`` is (``|p| < 2**(bits + 22)``, i.e. ``|g + 1| < 2**bits``
    here)."""
    s = g.node("Add", [p, c], name=f"{tag}_s")
    bb = g.node("Sub", [s, p], name=f"{tag}_bb")
    r = g.node(
        "Add",
        [
            g.node("Sub", [p, g.node("Sub", [s, bb], name=f"{tag}_sa")], name=f"{tag}_sb"),
            g.node("Sub", [c, bb], name=f"{tag}_sc"),
        ],
        name=f"{tag}_r",
    )
    return g.node("Add", [s, g.node("Add", [r, err], name=f"{tag}_lo")], name=f"{tag}_u")


def _round_large(g: GraphBuilder, p: str, err: str, num: Num, tag: str) -> str:
    """``fl(p + err - d)`` where ``p + err`` is a multiple of a unit ``e``, the floats around
    it are at least ``2e`` apart, and ``0 < d < e`` (``e = 2**-k``: ``|g + 1| >= 2**bits``
    scaled by ``2**-k``): ``d`` crosses no rounding boundary, so the result is ``p``, except
    on an exact tie that rounded up (``err`` is minus half the spacing below ``p``), where it
    is the float below, ``p + 2 err``."""
    two_err = g.node("Mul", [err, fconst(g, 2.0, "gs_two", num)], name=f"{tag}_2e")
    q = g.node("Add", [p, two_err], name=f"{tag}_q")
    tie = g.node("Equal", [g.node("Sub", [q, p], name=f"{tag}_qp"), two_err], name=f"{tag}_tie")
    down = g.node("Less", [err, fconst(g, 0.0, "gs_zero", num)], name=f"{tag}_neg")
    return g.node("Where", [g.node("And", [tie, down], name=f"{tag}_fix"), q, p], name=f"{tag}_B")


def _overflow_tie(scale, num: Num) -> np.ndarray | None:
    """Per axis, the ``a`` with ``a * scale`` exactly the overflow threshold (``fl`` gives
    inf, torch's FMA the largest float), or NaN; None when no axis has one."""
    info = np.finfo(num.dtype)
    threshold = Fraction(float(info.max)) + Fraction(2) ** (int(info.maxexp) - num.bits - 1)
    out = []
    for s in np.atleast_1d(scale):
        a = threshold / Fraction(float(s))
        exact = a <= Fraction(float(info.max)) and Fraction(float(num.dtype(a))) == a
        out.append(float(a) if exact else np.nan)
    return None if np.all(np.isnan(out)) else np.asarray(out, num.dtype)


# -------------------------------------------------------------- unnormalise
def unnormalize(
    g: GraphBuilder,
    coords: str,
    sizes: tuple[int, ...],
    align_corners: bool,
    exact_fma: bool,
    padding_mode: str,
    num: Num,
    fused: bool = True,
) -> str:
    """torch's unnormalised source coordinate of ``(N, k, P)`` grid values (x, y[, z]).

    ``fused``: the 2-D vectorised kernel's ``fma(g + 1, size / 2, -0.5)``; False: the 3-D
    kernel's (``grid_sampler_unnormalize``, not contracted) ``((g + 1) * size - 1) / 2``, three
    plain roundings reproduced as they are. With align_corners both are ``(g + 1) * (size - 1)
    / 2`` rounded once."""
    a = g.node("Add", [coords, fconst(g, 1.0, "one", num)], name="gs_g1")
    if align_corners:
        scale = fconst(g, [(s - 1) / 2 for s in sizes], "gs_scale", num)
        return g.node("Mul", [a, scale], name="gs_u")
    if not fused:
        p = g.node("Mul", [a, fconst(g, list(sizes), "gs_size", num)], name="gs_p")
        p = g.node("Sub", [p, fconst(g, 1.0, "one", num)], name="gs_pm")
        return g.node("Mul", [p, fconst(g, 0.5, "half", num)], name="gs_u")
    scale = [s / 2 for s in sizes]
    odd = [s // (s & -s) for s in sizes]  # a power-of-two size makes the product exact
    if not exact_fma or max(odd) == 1:
        p = g.node("Mul", [a, fconst(g, scale, "gs_scale", num)], name="gs_p")
        return g.node("Sub", [p, fconst(g, 0.5, "half", num)], name="gs_u")
    small = g.node(
        "Less", [g.node("Abs", [a], name="gs_ga"), fconst(g, num.lim, "gs_lim", num)], name="gs_gs"
    )
    if padding_mode != "reflection":
        return _unnormalize_clamped(g, a, small, scale, num)
    # reflection needs the exact value at every magnitude: work on a * 2**-k (no overflow
    # unless the result overflows), round like the FMA, scale back (overflows as torch does)
    down, up = 2.0**-num.shift, 2.0**num.shift
    a_s = g.node("Mul", [a, fconst(g, down, "gs_down", num)], name="gs_gd")
    p, err = two_product(g, a_s, scale, num, "gs_fp")
    u_small = _round_small(g, p, err, fconst(g, -0.5 * down, "gs_mhalf", num), "gs_fa")
    u = g.node("Where", [small, u_small, _round_large(g, p, err, num, "gs_fb")], name="gs_us")
    return g.node("Mul", [u, fconst(g, up, "gs_up", num)], name="gs_u")


def _unnormalize_clamped(g: GraphBuilder, a: str, small: str, scale, num: Num) -> str:
    """Zeros and border padding: the exact FMA below ``2**bits``; above it ``fl(a * scale)``,
    out of the image like torch's value, and infinite exactly when torch's is."""
    p, err = two_product(g, a, scale, num, "gs_fp")
    u = _round_small(g, p, err, fconst(g, -0.5, "gs_mhalf", num), "gs_fa")
    tie = _overflow_tie(scale, num)
    if tie is not None:
        at_tie = g.node("Equal", [a, fconst(g, tie, "gs_tie", num)], name="gs_attie")
        top = fconst(g, np.finfo(num.dtype).max, "gs_max", num)
        p = g.node("Where", [at_tie, top, p], name="gs_pt")
    return g.node("Where", [small, u, p], name="gs_u")


# ------------------------------------------------------------------ padding
def clip(g: GraphBuilder, t: str, lo, hi, name: str, num: Num, trail: int = 1) -> str:
    """Clip to per-coordinate bounds (``t`` must hold no NaN: runtimes differ on them)."""
    lo_c, hi_c = fconst(g, lo, "gs_lo", num, trail), fconst(g, hi, "gs_hi", num, trail)
    if len(set(lo)) == 1 and len(set(hi)) == 1:
        return g.node("Clip", [t, lo_c, hi_c], name=name)  # scalar bounds (opset 11 Clip)
    return g.node("Min", [g.node("Max", [t, lo_c], name=f"{name}_lo"), hi_c], name=name)


def reflect(
    g: GraphBuilder, t: str, sizes: tuple[int, ...], align_corners: bool, num: Num, trail: int
) -> str:
    """torch's vectorised ``reflect_coordinates`` (before its clip), its fused ``abs - flips *
    2span`` rounded once. Works on values scaled by ``2**-k`` (exact: the coordinates are 0 or
    at least ``2**-(bits + 2)``), so that the split of ``flips`` cannot overflow."""
    if align_corners:
        low = 0.0
        # a size-1 axis reflects to 0 (torch); any span keeps the arithmetic finite and the
        # clip to [0, 0] that follows gives it
        span2 = [2 * (s - 1) if s > 1 else 1 for s in sizes]
    else:
        low = -0.5
        span2 = [2 * s for s in sizes]
    down = 2.0**-num.shift
    if low:
        t = g.node("Sub", [t, fconst(g, low, "gs_low", num)], name="gs_rs")
    a = g.node("Abs", [t], name="gs_ra")
    a = g.node("Mul", [a, fconst(g, down, "gs_down", num)], name="gs_rad")
    span2_s = fconst(g, [s * down for s in span2], "gs_span2", num, trail)
    flips = g.node("Floor", [g.node("Div", [a, span2_s], name="gs_rq")], name="gs_rf")
    flips = g.node("Mul", [flips, fconst(g, down, "gs_down", num)], name="gs_rfd")
    p, err = two_product(g, flips, span2, num, "gs_rp", trail)
    extra = g.node("Sub", [g.node("Sub", [a, p], name="gs_rd"), err], name="gs_re")
    other = g.node("Sub", [span2_s, extra], name="gs_ro")
    r = g.node("Min", [extra, other], name="gs_rmin")
    r = g.node("Mul", [r, fconst(g, 2.0**num.shift, "gs_up", num)], name="gs_rup")
    if low:
        r = g.node("Add", [r, fconst(g, low, "gs_low", num)], name="gs_rr")
    return r


def reflect_scalar(
    g: GraphBuilder, t: str, sizes: tuple[int, ...], align_corners: bool, num: Num
) -> str:
    """torch's scalar ``reflect_coordinates`` (the 3-D CPU kernel, before its clip), exactly:
    ``in = |t - min|``, ``extra = fmod(in, span)`` (exact), ``flips = (int) floor(in / span)``
    (the rounded quotient, as torch; from 2**31 on, x86's int conversion gives INT_MIN, which
    is even), then ``extra + min`` for even flips, ``span - extra + min`` for odd. A size-1
    axis with align_corners reflects to 0 (its span is 0 in torch)."""
    if align_corners:
        low, span = 0.0, [s - 1 if s > 1 else 1 for s in sizes]
    else:
        low, span = -0.5, list(sizes)
    if low:
        t = g.node("Sub", [t, fconst(g, low, "gs_low", num)], name="gs_rs")
    a = g.node("Abs", [t], name="gs_ra")
    span_c = fconst(g, span, "gs_span", num)
    extra = g.node("Mod", [a, span_c], name="gs_rx", fmod=1)
    flips = g.node("Floor", [g.node("Div", [a, span_c], name="gs_rq")], name="gs_rf")
    odd = g.node(
        "Equal",
        [
            g.node("Mod", [flips, fconst(g, 2.0, "gs_two", num)], name="gs_rm", fmod=1),
            fconst(g, 1.0, "one", num),
        ],
        name="gs_rodd",
    )
    small = g.node("Less", [flips, fconst(g, 2.0**31, "gs_intmax", num)], name="gs_rint")
    odd = g.node("And", [odd, small], name="gs_rflip")
    back = g.node("Sub", [span_c, extra], name="gs_rb")
    r = g.node("Where", [odd, back, extra], name="gs_rw")
    if low:
        r = g.node("Add", [r, fconst(g, low, "gs_low", num)], name="gs_rr")
    return r


def pad_coords(
    g: GraphBuilder,
    t: str,
    sizes: tuple[int, ...],
    padding_mode: str,
    align_corners: bool,
    num: Num,
    trail: int = 1,
    finite: bool = False,
    nan_to_last: bool = False,
) -> str:
    """torch's ``compute_coordinates``: border clips, reflection reflects then clips; NaN
    (and a reflected +-inf) becomes 0 as in torch's vectorised 2-D clip, or ``size - 1`` with
    ``nan_to_last`` (the 3-D kernel's scalar ``std::min(size - 1, std::max(NaN, 0))``, whose
    reflection is :func:`reflect_scalar`).
    ``finite``: t has no NaN or inf."""
    if padding_mode == "zeros":
        return t
    if padding_mode == "reflection":
        if nan_to_last:
            t = reflect_scalar(g, t, sizes, align_corners, num)
        else:
            t = reflect(g, t, sizes, align_corners, num, trail)
    if not finite:
        t = where_nan(g, t, [s - 1.0 for s in sizes] if nan_to_last else 0.0, num, "gs_pn")
    return clip(g, t, [0.0, 0.0], [s - 1.0 for s in sizes], "gs_pc", num, trail)
