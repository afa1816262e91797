"""One tolerance for float32 results compared across runtimes, CPUs or committed files.

Two computations of the same float32 model that differ only in summation order (another
runtime, another CPU's SIMD width or kernel, another torch kernel path such as
``ATEN_CPU_CAPABILITY=default``, or goldens committed from another machine) differ by a few
ulps *of the magnitudes they add up*, not of each output element: a log-probability of -27
carries the rounding of logits near 27, a value that cancels to ~0 carries that of its terms.
So the absolute tolerance scales with the magnitude of the expected array,

    |actual - expected| <= atol_scale * max(1, max|expected|) + rtol * |expected|

elementwise, where ``max|expected|`` is over the whole array (its finite entries). The defaults
(1e-5 and 1e-5, i.e. ~80 float32 ulps of the array's largest entry) are far below what a real
bug does to these models (a wrong tap, weight, padding or interpolation rule moves outputs by
1e-2 or more) and far above reordering noise: log-probabilities of magnitude 58 differ by at
most 4.6e-5 (a twentieth of the bound) between ORT, torch's AVX2 and DEFAULT kernels and the
committed goldens.

Images *sampled* at computed coordinates (an STN's rectified image) carry more: a float32
coordinate of up to ``S`` pixels is rounded to ~``S * 6e-8`` px, which moves the sample by that
times the image's slope (up to ~2 max|x| per pixel): ~1e-5 max|x| at S = 42. Compare those
with ``atol_scale=SAMPLED`` (measured 1.6e-5 at magnitude 2.6, a sixteenth of the bound).

Not for exactness claims: bit-exact samplers, same-process determinism, chunk independence and
round-trips are compared with ``np.array_equal`` / ``atol=0``.

Example::

    from tolerances import assert_close
    assert_close(ort_out, torch_out)                  # cross-runtime float32
    assert_close(ort_rect, torch_rect, atol_scale=SAMPLED)  # a rectified (resampled) image
"""

from __future__ import annotations

import numpy as np

#: relative part, per element
RTOL = 1e-5
#: absolute part, times max(1, max|expected|)
ATOL_SCALE = 1e-5
#: absolute part for images sampled at computed coordinates (see the module docstring)
SAMPLED = 1e-4


def tolerance(expected, *, atol_scale: float = ATOL_SCALE) -> float:
    """The absolute part of the tolerance for ``expected``: ``atol_scale * max(1, max|e|)``."""
    e = np.abs(np.asarray(_numpy(expected), dtype=np.float64))
    e = e[np.isfinite(e)]
    return atol_scale * max(1.0, float(e.max()) if e.size else 0.0)


def assert_close(
    actual,
    expected,
    *,
    rtol: float = RTOL,
    atol_scale: float = ATOL_SCALE,
    what: str = "",
) -> None:
    """Assert ``actual`` matches ``expected`` to float32 reordering noise (see the module).

    Accepts numpy arrays, torch tensors and scalars. Shapes must match exactly; non-finite
    values must be the same in both (NaN where NaN, the same infinities).
    """
    a = np.asarray(_numpy(actual), dtype=np.float64)
    e = np.asarray(_numpy(expected), dtype=np.float64)
    label = f"{what}: " if what else ""
    assert a.shape == e.shape, f"{label}shape {a.shape} != expected {e.shape}"
    fa, fe = np.isfinite(a), np.isfinite(e)
    assert np.array_equal(fa, fe), f"{label}non-finite entries differ"
    assert np.array_equal(a[~fa], e[~fe], equal_nan=True), f"{label}non-finite entries differ"
    if not fa.any():
        return
    atol = tolerance(e, atol_scale=atol_scale)
    err = np.zeros_like(a)
    err[fa] = np.abs(a[fa] - e[fa])  # non-finite entries matched above
    allowed = atol + rtol * np.abs(np.where(fe, e, 0.0))
    bad = err > allowed
    if bad.any():
        worst = np.unravel_index(int(np.argmax(np.where(bad, err - allowed, -np.inf))), a.shape)
        raise AssertionError(
            f"{label}{int(bad.sum())}/{a.size} entries differ by more than "
            f"{atol_scale:g} * max(1, max|expected|) + {rtol:g} * |expected| "
            f"(= {atol:.3g} + rtol part); worst at {tuple(int(i) for i in worst)}: "
            f"actual {float(a[worst])!r}, expected {float(e[worst])!r}, |diff| {err[worst]:.3g} > "
            f"{allowed[worst]:.3g}; max |diff| {err.max():.3g}"
        )


def _numpy(x):
    """torch tensors (detached, on the CPU) and anything array-like as numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x
