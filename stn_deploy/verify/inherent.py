"""The inherent float32 error of a reference output: how much float32 itself is off on this
input, estimated from a second evaluation of the torch model in float64 (numpy only here).

The torch side computes every reference output twice: in float32 (``ref32``, what every runtime
is compared with) and in float64 (``ref64``: ``model.double()`` on a deep copy, the inputs
cast to float64). ``|ref64 - ref32|`` is then float32's own error on that input. On an
ill-conditioned input (noise of amplitude 8 driving an image-output STN far outside its training
range) it reaches 1e-4..1e-3, and every correct float32 runtime errs by about as much; on a
well-conditioned one it is around 1e-7 of the magnitude.

A runtime's element passes when ``|out - ref32|`` is within the precision's ``atol``/``rtol``
(:mod:`.compare`) **or** within ``K`` times the element's inherent error :func:`inherent_error`,
with ``K = 4``.

Why not ``|ref64 - ref32|`` of the element alone: that is one draw of float32's rounding, and on
an ill-conditioned input it depends on a direction. In an image-output STN on noise, the output
error of a pixel is about ``grad I . dp``: the image gradient there times the sampling position's
error ``dp``, which comes from theta's float32 error. torch and a runtime round theta differently,
so their ``dp`` point different ways, and wherever the gradient is nearly perpendicular to torch's
``dp`` the element's own estimate is near 0 while the runtime's error is not. Measured on the
224x224 STN of ``benchmarks/stn224.py`` (24 stress images, ORT CPU and OpenVINO): 3 and 17 of
1.2 M elements exceed 4x their own ``|ref64 - ref32|`` (and atol/rtol), while per image the
largest runtime error is 0.55x..1.52x the largest ``|ref64 - ref32|``. So the inherent error of an
element is taken at its **image (row)**: the largest ``|ref64 - ref32|`` over the element's row,
floored at ``4`` float32 ulps of ``|ref32|`` (``4 * spacing(|ref32|)``) for rows where float32
and float64 agree exactly (a constant output). ``K = 4`` leaves 2.6x headroom over the 1.52x
measured; a wrong file (a tampered weight, another sampling mode or padding, a transposed grid,
an fp16 sampler) errs by 1e-2 and more on some image, orders of magnitude beyond (see
``benchmarks/results/verify_cost.md``).

Reduced-precision files (fp16, int8) keep their own gates: their error is fp16/int8 rounding, far
above float32's.
"""

from __future__ import annotations

import numpy as np

#: an element passes within K times its inherent error
K = 4.0
#: float32 ulps of the value: the floor of the inherent error where float32 is exact
ULPS = 4


def inherent_error(ref32: np.ndarray, ref64: np.ndarray) -> np.ndarray:
    """Per element, float32's own error on this input: ``max(largest |ref64 - ref32| of the
    element's row, ULPS * spacing(|ref32|))``, float64, the shape of ``ref32``."""
    r32 = np.asarray(ref32)
    r64 = np.asarray(ref64, np.float64)
    if r32.dtype.kind not in "fc" or r32.shape != r64.shape:
        raise ValueError(f"inherent error of {r32.dtype} {r32.shape} vs {r64.shape}")
    d = np.abs(r64 - r32.astype(np.float64))
    d = np.where(np.isfinite(d), d, 0.0)
    if d.ndim >= 1 and d.shape[0] and d.size:
        top = d.reshape(d.shape[0], -1).max(axis=1).reshape((-1,) + (1,) * (d.ndim - 1))
        d = np.broadcast_to(top, d.shape)
    ulp = np.spacing(np.abs(r32.astype(np.float32))).astype(np.float64)
    return np.maximum(d, ULPS * ulp)


def inherent_outputs(
    ref32: dict[str, np.ndarray], ref64: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """:func:`inherent_error` of every output ``ref64`` has (floating outputs only)."""
    return {
        name: inherent_error(ref32[name], r64)
        for name, r64 in ref64.items()
        if name in ref32
        and np.asarray(ref32[name]).dtype.kind == "f"
        and np.shape(ref32[name]) == np.shape(r64)
    }
